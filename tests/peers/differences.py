"""Where gracehttp answers waitress's functional tests differently from waitress, and why.

Every test of waitress's ``tests/test_functional.py`` passes against gracehttp except
those listed in `DIFFERENCES`, each of which must fail showing the listed behaviour
(its failure message matches `Difference.shows`): a test that starts passing, or
fails another way, fails `test_waitress_suite`, so this list cannot go stale.
Tests run over TCP and over a Unix socket; a listed test is listed for both.

A test stops at its first failed assertion, so one difference can hide another in
the same test. The conformance section of docs/http.rst also lists those hidden ones, found
by running the suite against a build with the first two differences below turned off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    title: str  # its row in the conformance section of docs/http.rst: "<title> (N tests)"
    waitress: str  # what waitress's test expects
    gracehttp: str  # what gracehttp does instead
    why: str  # the clause that allows gracehttp's behaviour
    shows: str  # a regular expression the test's failure message matches


NO_HOST = Difference(
    title="HTTP/1.1 without Host",
    waitress="an HTTP/1.1 request without Host is served",
    gracehttp="400 Bad Request",
    why="RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host",
    # The tests that parse the answer as their echo app's JSON fail on the 400's body instead.
    shows=(r"400'? != (?:b')?(?:100|200|413|500)\b|needs exactly one Host"
           r"|not enough values to unpack \(expected 2, got 1\)"),
)
STATUS_LINE = Difference(
    title="HTTP/1.0 requests get an HTTP/1.1 status line",
    waitress="an HTTP/1.0 request is answered with an HTTP/1.0 status line",
    gracehttp="an HTTP/1.1 status line (the response is framed for HTTP/1.0: close-delimited unless keep-alive)",
    why="RFC 9110 section 2.5: a server SHOULD send the highest version it conforms to "
        "whose major version is not above the request's",
    shows=r"b'HTTP/1\.1' != b'HTTP/1\.0'",
)
KEEP_ALIVE_CASE = Difference(
    title="keep-alive in lower case",
    waitress="Connection: Keep-Alive",
    gracehttp="Connection: keep-alive",
    why="RFC 9110 section 7.6.1: connection options are case-insensitive",
    shows=r"'keep-alive' != 'Keep-Alive'",
)
OVERRUN_CLOSES = Difference(
    title="a body past its Content-Length closes",
    waitress="an app that sends more than its Content-Length is cut at the length, the connection kept",
    gracehttp="cut at the length, and the connection closed: an app that miscounts its body is not "
              "trusted to frame the next response",
    why="RFC 9110 section 8.6: the app's Content-Length is wrong, how to recover is the server's choice; "
        "closing can never desynchronise the stream",
    # How the close shows depends on timing: a reset of the next send, a broken pipe, or
    # no answer to the next request (its empty status line does not split in three).
    shows=(r"ConnectionResetError|BrokenPipeError|ConnectionClosed"
           r"|not enough values to unpack \(expected 3, got 0\)"),
)

#: waitress test ("Mixin::test", for TCP and Unix alike) -> the difference it shows first.
DIFFERENCES: dict[str, Difference] = {
    "BadContentLengthTests::test_long_body": OVERRUN_CLOSES,
    "EchoTests::test_bad_host_header": STATUS_LINE,
    "EchoTests::test_broken_chunked_encoding_invalid_extension": NO_HOST,
    "EchoTests::test_broken_chunked_encoding_invalid_hex": NO_HOST,
    "EchoTests::test_broken_chunked_encoding_missing_chunk_end": NO_HOST,
    "EchoTests::test_chunking_request_with_content": NO_HOST,
    "EchoTests::test_chunking_request_without_content": NO_HOST,
    "EchoTests::test_date_and_server": STATUS_LINE,
    "EchoTests::test_keepalive_http10_explicit": KEEP_ALIVE_CASE,
    "EchoTests::test_keepalive_http11_connclose": NO_HOST,
    "EchoTests::test_keepalive_http11_explicit": NO_HOST,
    "EchoTests::test_keepalive_http_11": NO_HOST,
    "EchoTests::test_large_body": STATUS_LINE,
    "EchoTests::test_multiple_requests_with_body": STATUS_LINE,
    "EchoTests::test_multiple_requests_without_body": STATUS_LINE,
    "EchoTests::test_proxy_headers": STATUS_LINE,
    "EchoTests::test_send_empty_body": STATUS_LINE,
    "EchoTests::test_send_with_body": STATUS_LINE,
    "EchoTests::test_without_crlf": STATUS_LINE,
    "ExpectContinueTests::test_expect_continue": NO_HOST,
    "FileWrapperTests::test_filelike_http10": STATUS_LINE,
    "FileWrapperTests::test_filelike_http11": NO_HOST,
    "FileWrapperTests::test_filelike_longcl_http11": NO_HOST,
    "FileWrapperTests::test_filelike_nocl_http10": STATUS_LINE,
    "FileWrapperTests::test_filelike_nocl_http11": NO_HOST,
    "FileWrapperTests::test_filelike_shortcl_http11": NO_HOST,
    "FileWrapperTests::test_notfilelike_http10": STATUS_LINE,
    "FileWrapperTests::test_notfilelike_http11": NO_HOST,
    "FileWrapperTests::test_notfilelike_iobase_http11": NO_HOST,
    "FileWrapperTests::test_notfilelike_longcl_http11": NO_HOST,
    "FileWrapperTests::test_notfilelike_nocl_http10": STATUS_LINE,
    "FileWrapperTests::test_notfilelike_nocl_http11": NO_HOST,
    "FileWrapperTests::test_notfilelike_shortcl_http11": NO_HOST,
    "InternalServerErrorTests::test_after_start_response_http10": STATUS_LINE,
    "InternalServerErrorTests::test_after_start_response_http11": NO_HOST,
    "InternalServerErrorTests::test_after_start_response_http11_close": NO_HOST,
    "InternalServerErrorTests::test_after_write_cb": NO_HOST,
    "InternalServerErrorTests::test_before_start_response_http_10": STATUS_LINE,
    "InternalServerErrorTests::test_before_start_response_http_11": NO_HOST,
    "InternalServerErrorTests::test_before_start_response_http_11_close": NO_HOST,
    "InternalServerErrorTests::test_in_generator": NO_HOST,
    "InternalServerErrorTestsWithTraceback::test_expose_tracebacks_http_10": STATUS_LINE,
    "InternalServerErrorTestsWithTraceback::test_expose_tracebacks_http_11": NO_HOST,
    "NoContentLengthTests::test_http10_generator": STATUS_LINE,
    "NoContentLengthTests::test_http10_list": STATUS_LINE,
    "NoContentLengthTests::test_http10_listlentwo": STATUS_LINE,
    "NoContentLengthTests::test_http11_generator": NO_HOST,
    "NoContentLengthTests::test_http11_list": NO_HOST,
    "NoContentLengthTests::test_http11_listlentwo": NO_HOST,
    "TooLargeTests::test_request_body_too_large_chunked_encoding": NO_HOST,
    "TooLargeTests::test_request_body_too_large_with_no_cl_http10": STATUS_LINE,
    "TooLargeTests::test_request_body_too_large_with_no_cl_http10_keepalive": STATUS_LINE,
    "TooLargeTests::test_request_body_too_large_with_no_cl_http11": NO_HOST,
    "TooLargeTests::test_request_body_too_large_with_no_cl_http11_connclose": NO_HOST,
    "TooLargeTests::test_request_body_too_large_with_wrong_cl_http10": STATUS_LINE,
    "TooLargeTests::test_request_body_too_large_with_wrong_cl_http10_keepalive": STATUS_LINE,
    "TooLargeTests::test_request_body_too_large_with_wrong_cl_http11": NO_HOST,
    "TooLargeTests::test_request_body_too_large_with_wrong_cl_http11_connclose": NO_HOST,
    "TooLargeTests::test_request_headers_too_large_http11": STATUS_LINE,
    "WriteCallbackTests::test_equal_body": STATUS_LINE,
    "WriteCallbackTests::test_long_body": OVERRUN_CLOSES,
    "WriteCallbackTests::test_short_body": STATUS_LINE,
}
