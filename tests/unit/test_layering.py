"""Imports go downward (STYLE.md principle 2): a module never imports from a layer above it."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[2] / "gracehttp"

LAYERS = {
    0: {"errors", "addresses", "state", "inflight", "http.parser", "http.chunked", "http.framing", "http.writer",
        "http.heads", "busypoll", "closer", "pool",
        "callbacks", "http", "leadership", "systemd", "inherit", "connstate", "watchdog", "requestid", "balance",
        "exposition", "procstats", "outlet"},
    1: {"config", "spool", "wsgi", "response", "health", "routing", "metrics", "accesslog", "debug", "admin",
        "flushbell", "proxy", "workermetrics", "totals"},
    2: {"listeners", "connection", "acceptor", "engine", "shutdown", "signals", "supervisor", "server", "upgrade",
        "worker", "sites", "site", "transport", "outgoing", "parking", "exchange"},
    3: {"__init__", "__main__", "cli", "group", "reloader", "foreign_flags"},
}
LAYER_OF = {mod: layer for layer, mods in LAYERS.items() for mod in mods}
# Within the upper layer, this order holds: a module imports only those before it.
UPPER_ORDER = ["listeners", "upgrade", "signals", "site", "transport", "outgoing", "exchange", "connection",
               "parking", "acceptor", "engine", "sites", "shutdown", "worker", "supervisor", "server"]


def _modules() -> list[tuple[str, pathlib.Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out.append((name, path))
    return out


@pytest.mark.parametrize(("name", "path"), _modules())
def test_imports_go_downward(name: str, path: pathlib.Path) -> None:
    assert name in LAYER_OF, f"{name} is not placed in a layer"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gracehttp."):
            target = node.module[len("gracehttp."):]
            assert target in LAYER_OF, target
            assert LAYER_OF[target] <= LAYER_OF[name], f"{name} imports {target} from a layer above"
            if target in UPPER_ORDER and name in UPPER_ORDER:
                assert UPPER_ORDER.index(target) < UPPER_ORDER.index(name), f"{name} imports {target}"


@pytest.mark.parametrize(("name", "path"), _modules())
def test_modules_state_their_job_and_stay_small(name: str, path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{name} has no module docstring"
    assert len(path.read_text().splitlines()) <= 420, f"{name} is past ~400 lines: split it"
