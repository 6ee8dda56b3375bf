"""Fixtures shared by the in-process server tests."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest


@pytest.fixture(scope="session")
def cert(tmp_path_factory: Any) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 made by the openssl command: (cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, crt = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key
