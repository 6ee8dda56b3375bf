"""One request's exchange with the app: ``wsgi.input``, the environ, the call, the
response, and what the connection must do after it.

Upper layer, below `connection`: imports the framer, WSGI, response, spool and
site modules. It knows nothing of connection states: `Exchange.run` reports an
`Outcome`, and `gracehttp.connection` turns that into the next state.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Any

from gracehttp import requestid
from gracehttp.errors import ProtocolError
from gracehttp.http.framing import BodyFramer
from gracehttp.http.parser import RequestHead
from gracehttp.outlet import Outlet, Send, SendFile, SendFinal
from gracehttp.proxy import FORWARDED_KEYS, apply_forwarded
from gracehttp.response import Responder, run_app
from gracehttp.site import Site
from gracehttp.spool import BodySpool
from gracehttp.watchdog import Running
from gracehttp.wsgi import Body, build_environ

#: An unread request body with up to this much still to come is read and dropped
#: to keep the connection; a larger one closes it (receiving it could take long).
DISCARD_LIMIT = 65536
#: The framer of every request without a body: done from the start, never fed (a done
#: framer is only read), so one serves all threads.
NO_BODY = BodyFramer(None)
#: The ``wsgi.input`` of every request without a body: it reads nothing and keeps nothing
#: (its buffer stays empty and it never receives), so one serves all requests.
NO_BODY_INPUT = Body(NO_BODY, bytes)


class Outcome(enum.IntEnum):
    #: The response promised keep-alive: go on with the next request.
    NEXT = 0
    #: The response said Connection: close.
    CLOSE = 1
    #: The request body was left unread: close once the client has stopped sending.
    UNREAD = 2
    #: The response broke after its head went out (the client went away, the app
    #: failed mid-body): close at once.
    ABANDON = 3
    #: The app failed before any output: answer 500.
    FAILED = 4
    #: A protocol error before any output (a bad body the app read): answer its status.
    REFUSED = 5


# The members as module names: on Python 3.11 reading one through the class (`NEXT`)
# goes through the enum metaclass's ``__getattr__``, a few hundred times the cost of a global.
NEXT, CLOSE, UNREAD, ABANDON, FAILED, REFUSED = Outcome


class Exchange(Outlet):
    """Runs the app for the requests of one connection, through the connection's I/O: it
    is the `Outlet` its responders send through."""

    __slots__ = ("_env", "_environ", "_forwarded", "_head", "_proxies", "_recv", "_responder", "_site", "error",
                 "request_id")

    def __init__(self, site: Site, env: dict[str, Any], recv: Callable[[], bytes], send: Send,
                 send_final: SendFinal, send_file: SendFile) -> None:
        Outlet.__init__(self, send, send_final, send_file, site.server_header, site)
        self._site = site
        # Trust is decided once per connection; a Unix socket's peer (no address) is local.
        proxies, peer = site.proxies, env["REMOTE_ADDR"]
        #: The trusted proxies when this connection's peer is one of them, else None.
        self._proxies = proxies if proxies is not None and (not peer or proxies.trusts(peer)) else None
        self._env = env
        #: The last request's head and its environ (`_environ_of`), which every request
        #: with that head gets a copy of.
        self._head: RequestHead | None = None
        self._environ: dict[str, Any] = {}
        #: That environ has X-Forwarded-* keys to apply (the peer being a trusted proxy).
        self._forwarded = False
        self._recv = recv
        #: The response side of the request under way (of the last one between requests).
        self._responder: Responder | None = None
        #: With REFUSED: the error to answer.
        self.error: ProtocolError | None = None
        #: The last request's id (request_id on), for the server's own 500.
        self.request_id: str | None = None

    def run(self, head: RequestHead, rest: bytes, spool: BodySpool | None,
            close: bool = False) -> tuple[Outcome, bytes]:
        """One request whose body is in `rest` (what followed the head) or `spool`;
        returns the outcome and the bytes the client sent past this request. `close`:
        answer with Connection: close whatever the request asks."""
        site = self._site
        keep_alive = head.keep_alive and site.keep_alive and not site.closing and not close
        limits = site.limits
        if spool is None and not head.content_length and not head.chunked:
            framer = NO_BODY  # most requests: nothing to frame; what follows is all in `rest`
            body = NO_BODY_INPUT
        elif spool is None:  # the whole body arrived with the head, in `rest`
            framer = BodyFramer(head, limits.max_body_bytes, limits.max_header_bytes)
            body = Body(framer, self._recv, framer.feed(rest))
            rest = framer.leftover
        else:  # collected parked: all of it, or the first `max_spool_bytes` (the rest streams)
            framer = spool.framer
            body = Body(framer, self._recv, stored=spool.read)
        environ = self._environ.copy() if head is self._head else self._environ_of(head, keep_alive)
        environ["wsgi.input"] = body
        if self._forwarded and self._proxies is not None:
            apply_forwarded(environ, self._proxies, site.forwarded_host)
        rid = token = None
        if site.request_id:
            rid = self.request_id = requestid.assign(environ, self._proxies is not None)
            token = requestid.current.set(rid)
        # A body still arriving when the response starts may never be read: say
        # Connection: close in the head rather than surprise the client with a close.
        closing = None if framer.done else (lambda: not body.finished)
        inflight = site.inflight
        inflight.request_started()
        # Counted just before the response's last bytes go out, so that a scrape made once
        # the client has its answer includes it (the access log waits for the response).
        started = time.perf_counter()
        responder = self._responder
        if responder is None:
            responder = self._responder = Responder(self, head, keep_alive, closing, site.metrics, started, rid)
        else:
            responder.reset(head, keep_alive, closing, site.metrics, started, rid)
        active = site.active
        if active is not None:
            active[threading.get_ident()] = Running(head.method, head.target.decode("latin-1")[:200],
                                                    environ["REMOTE_ADDR"], time.monotonic(), rid)
        try:
            run_app(site.app, environ, responder)
        except ProtocolError as exc:
            self._account(environ, responder, responder.code if responder.headers_sent else exc.status, 0, started)
            if responder.headers_sent:
                return ABANDON, b""
            self.error = exc
            return REFUSED, b""
        except OSError:
            self._account(environ, responder, responder.code or 499, responder.sent, started)
            return ABANDON, b""  # the client went away or stopped reading (write_timeout)
        except BaseException:  # SystemExit or KeyboardInterrupt from an app too: never kill the thread
            site.logger.exception("error in WSGI app %s %s%s", head.method, head.target.decode("latin-1")[:200],
                                  f" (request id {rid})" if rid else "")
            status = responder.code if responder.headers_sent else 500
            self._account(environ, responder, status, responder.sent, started)
            return (ABANDON if responder.headers_sent else FAILED), b""
        else:
            if responder.meter is not None or site.access_log is not None:  # else counted as it was sent
                self._account(environ, responder, responder.code, responder.sent, started)
            if responder.overran:
                site.logger.warning("WSGI app sent more than its Content-Length (%s) for %s %s: cut there, "
                                    "connection closed", responder.length, head.method,
                                    head.target.decode("latin-1")[:200])
        finally:
            inflight.request_finished()
            if closing is not None:
                responder.forget_body()
            if active is not None:
                active.pop(threading.get_ident(), None)
            if token is not None:
                requestid.current.reset(token)
        if not framer.done:
            if not responder.keep_alive:
                return UNREAD, b""  # the rest is dropped by the lingering close, parked
            try:
                if not body.discard(DISCARD_LIMIT):
                    return UNREAD, b""
            except (ProtocolError, OSError):
                return UNREAD, b""
        return (NEXT if responder.keep_alive else CLOSE), rest if spool is None else body.leftover()

    def close(self) -> None:
        """The connection closed: its responder, which refers back to this exchange (its
        outlet), goes now, so that nothing keeps the connection for the gc to find."""
        self._responder = None

    def _environ_of(self, head: RequestHead, keep: bool) -> dict[str, Any]:
        """The environ for `head`, a head other than the last request's. While the connection
        stays open (`keep`) it is kept, and this is a copy: a keep-alive client sends the
        same head again and again (parsed once, `gracehttp.http.parser.parse_head`), and
        each of its requests then costs one dict copy instead of building the environ from
        the connection's and the head's keys."""
        environ = build_environ(self._env, head, NO_BODY_INPUT)
        self._forwarded = self._proxies is not None and not environ.keys().isdisjoint(FORWARDED_KEYS)
        if not keep or not head.kept:
            # The connection's last request (Connection: close), or a head the parser did not
            # keep (a long one), which no later request will be: nothing to keep it for.
            self._head = None
            return environ
        self._head, self._environ = head, environ
        return environ.copy()

    def _account(self, environ: dict[str, Any], responder: Responder, status: int, length: int,
                 started: float) -> None:
        """Metrics (unless counted at the response's last send, `Responder.meter`) and the
        access log for one answered request."""
        if responder.meter is not None:
            responder.count(status)
        access_log = self._site.access_log
        if access_log is not None:
            access_log(environ, status, length, time.perf_counter() - started, responder.headers)
