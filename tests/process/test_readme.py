"""Every code block of README.rst and of the pages under docs/ runs, so the docs cannot rot.

Blocks are found by reStructuredText's own markers (a paragraph ending in ``::``,
or ``.. code-block::``) and each is run the way a reader would use it:

- ``python`` blocks as a program, with the names they take from the reader's code
  (``app``, ``db``, ...) defined first and a helper thread that requests a page once
  the server answers, then sends SIGTERM: the block must serve and stop cleanly;
- shell blocks line by line: a server command is started, requested and stopped with
  SIGTERM (exit status 0); ``pip install`` lines are checked against what is
  installed rather than run; a block that backgrounds a server runs as a bash script;
- ``text`` blocks (the lifecycle diagram) are checked against the state names.

Ports 8080, 8081 and 9090 in a block become free ports. The test command itself
(``python -m pytest``) is the run this test is part of, and is not run again; nor is
the site's build (``sphinx-build``), which ``tests/unit/test_docs_site.py`` runs.
Text a page takes in with ``.. include::`` is run where it is written.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from gracehttp.state import State
from tests.helpers import get, wait_until

ROOT = Path(__file__).resolve().parents[2]
# The examples' walkthroughs are part of the site (docs/deployment.rst includes them).
PAGES = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst")), *sorted((ROOT / "examples").glob("*/README.rst"))]

PRELUDE = '''
import os, signal, threading, time, urllib.request

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from the README\\n"]

app = other_app = legacy_wsgi_app = hello

class db:
    @staticmethod
    def close():
        print("db closed", flush=True)

def refresh_cache(stop):
    stop.wait()
    print("refresh_cache stopped", flush=True)

def _request_then_stop():
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%(port)d%(path)s", timeout=2) as r:
                print("GOT", r.status, r.read().decode().strip(), flush=True)
                break
        except OSError:
            time.sleep(0.05)  # not up yet: poll until the deadline
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=_request_then_stop, daemon=True).start()
'''

MYPROJECT = {
    "myproject/__init__.py": "",
    "myproject/wsgi.py": "from examples.hello import app as application\n",
    "myproject/app.py": "from examples.hello import app\n\n\ndef create_app(debug=True):\n    return app\n",
}


@dataclass
class Block:
    page: str
    line: int
    lang: str | None
    text: str


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().split("\n")
    found = []
    i = 0
    while i < len(lines):
        directive = re.match(r"\.\. code-block::\s*(\S+)", lines[i])
        if directive or (lines[i].rstrip().endswith("::") and not lines[i].lstrip().startswith("..")):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            body = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith(" ")):
                body.append(lines[j])
                j += 1
            found.append(Block(str(page.relative_to(ROOT)), i + 1, directive.group(1) if directive else None,
                               textwrap.dedent("\n".join(body)).strip() + "\n"))
            i = j
        else:
            i += 1
    return found


BLOCKS = [block for page in PAGES for block in blocks(page)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_ports(text: str) -> tuple[str, int]:
    main = free_port()
    ports = {"8080": main, "8081": free_port(), "9090": free_port()}
    return re.sub(r"(?<=:)(8080|8081|9090)\b", lambda m: str(ports[m.group(1)]), text), main


def project(tmp_path: Path) -> dict[str, str]:
    for name, text in MYPROJECT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}


def installed(command: str) -> None:
    """`pip install -e . flask` and the like: what it would install is importable."""
    for word in command.split()[2:]:
        if word == "-e":
            continue
        module = {".": "gracehttp", "'.[test]'": "pytest"}.get(word, word)
        assert importlib.util.find_spec(module) is not None, f"{word} is not installed"


def serve_and_stop(command: str, port: int, env: dict[str, str]) -> None:
    """Start a server command, get / from it, SIGTERM it: exit status 0."""
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT,
                            env={**env, "GRACEHTTP_ADDR": f"127.0.0.1:{port}"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    try:
        assert wait_until(lambda: _answers(port), 30), "".join(out)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, "".join(out)


def _answers(port: int) -> bool:
    try:
        return get(port, "/", timeout=2).status == 200
    except OSError:
        return False


def test_every_block_is_found_and_of_a_kind_this_test_runs() -> None:
    kinds = [kind(b) for b in BLOCKS]
    assert len(BLOCKS) >= 9
    assert {"README.rst", "docs/cli.rst", "docs/lifecycle.rst", "docs/routes.rst"} <= {b.page for b in BLOCKS}
    assert "unknown" not in kinds, [(b.page, b.line, b.text[:60]) for b in BLOCKS if kind(b) == "unknown"]


def kind(block: Block) -> str:
    if block.lang == "text":
        return "diagram"
    if block.lang in ("nginx", "yaml", "ini"):
        return "excerpt"
    if block.lang == "python" or block.text.startswith("from gracehttp import"):
        return "python"
    first = block.text.split()[0]
    if first == "sphinx-build":
        return "site"
    if first in ("pip", "gracehttp", "python"):
        return "script" if "&\n" in block.text else "shell"
    return "unknown"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    text, port = with_ports(block.text)
    env = project(tmp_path)
    what = kind(block)
    if what == "diagram":
        assert all(state.name in text for state in State)
    elif what == "excerpt":
        # A configuration excerpt quotes its example: every line of it (but its own comments)
        # is in a file beside the page, there as it is or as a commented-out alternative.
        files = [p for p in (ROOT / block.page).parent.iterdir() if p.is_file() and p.name != "README.rst"]
        lines = {line.strip().removeprefix("# ").strip() for p in files for line in p.read_text().splitlines()}
        missing = [line for line in block.text.splitlines()
                   if line.strip() and not line.strip().startswith("#") and line.strip() not in lines]
        assert not missing, missing
    elif what == "site":
        # Built with warnings as errors by tests/unit/test_docs_site.py: the same flags.
        assert text.split()[:5] == ["sphinx-build", "-W", "-b", "html", "docs"], text
    elif what == "python":
        path = "/hello/ada" if "Router" in text else "/"
        script = tmp_path / "block.py"
        script.write_text(PRELUDE % {"port": port, "path": path} + text)
        run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "GOT 200" in run.stdout, run.stdout + run.stderr
        if "Router" in text:
            assert "GOT 200 hello ada" in run.stdout
        if "db.close" in text:
            assert "db closed" in run.stdout
        if "refresh_cache" in text:
            assert "refresh_cache stopped" in run.stdout
    elif what == "script":
        script = "\n".join("true" if line.startswith("pip install") else line for line in text.splitlines())
        for line in text.splitlines():
            if line.startswith("pip install"):
                installed(line)
        run = subprocess.run(["bash", "-euc", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout == "okhello from Flask\n"  # /readyz's "ok", then the page
        assert "readiness is now 503; draining" in run.stderr
        assert "drained=True" in run.stderr
    else:
        for line in text.splitlines():
            for command in (c.strip() for c in line.split("&&")):
                if command.startswith("pip install"):
                    installed(command)
                elif command == "python -m pytest":
                    continue  # the run this test is part of
                else:
                    serve_and_stop(command, port, env)
