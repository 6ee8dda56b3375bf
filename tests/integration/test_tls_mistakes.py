"""TLS files: every usual mistake is a ConfigError naming the file and what is wrong with
it (so the command line prints one line and exits 2, --check included); a PEM holding
both the certificate and its key works on its own."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from gracehttp import Config
from gracehttp.errors import ConfigError
from tests.helpers import hello_app, running


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test key")
    path = str(tmp_path_factory.mktemp("tls2") / "other.key")
    subprocess.run(["openssl", "genrsa", "-out", path, "2048"], check=True, capture_output=True)
    return path


def mistake(**fields: object) -> str:
    with pytest.raises(ConfigError) as info:
        Config(app=hello_app, **fields)  # type: ignore[arg-type]
    return str(info.value)


def test_a_key_that_is_not_the_certificates(cert: tuple[str, str], other_key: str) -> None:
    crt, _ = cert
    assert mistake(certfile=crt, keyfile=other_key) == \
        f"keyfile: {other_key!r} is not the key of the certificate in {crt!r}"


def test_swapped_files(cert: tuple[str, str]) -> None:
    crt, key = cert
    assert mistake(certfile=key, keyfile=crt) == \
        f"certfile: {key!r} holds no PEM certificate (is it the key? certfile and keyfile swapped?)"


def test_a_missing_file_and_a_key_without_its_certificate(cert: tuple[str, str], tmp_path: Path) -> None:
    crt, key = cert
    assert mistake(certfile=crt, keyfile=str(tmp_path / "nope.key")) == \
        f"keyfile: {str(tmp_path / 'nope.key')!r} is not a readable file"
    assert mistake(keyfile=key) == "certfile: keyfile is given without its certfile"


def test_a_certificate_alone_names_the_missing_key(cert: tuple[str, str]) -> None:
    crt, _ = cert
    assert mistake(certfile=crt) == \
        f"keyfile: {crt!r} holds no private key: give keyfile, or put the key in the same PEM file"


def test_a_combined_pem_serves_tls(cert: tuple[str, str], tmp_path: Path) -> None:
    crt, key = cert
    both = tmp_path / "both.pem"
    both.write_text(Path(crt).read_text() + Path(key).read_text())
    with running(certfile=str(both)) as server:
        ctx = ssl.create_default_context(cafile=crt)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert data.endswith(b"hello")


def test_an_encrypted_key_is_named_and_never_prompts_for_a_pass_phrase(cert: tuple[str, str],
                                                                       tmp_path: Path) -> None:
    crt, key = cert
    locked = str(tmp_path / "locked.key")
    subprocess.run(["openssl", "pkey", "-in", key, "-aes256", "-passout", "pass:secret", "-out", locked],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert mistake(certfile=crt, keyfile=locked).startswith(
        f"keyfile: {locked!r} holds an encrypted private key: give it unencrypted")


def test_a_combined_pem_with_another_key_blames_certfile(cert: tuple[str, str], other_key: str,
                                                         tmp_path: Path) -> None:
    crt, _ = cert
    both = tmp_path / "mixed.pem"
    both.write_text(Path(crt).read_text() + Path(other_key).read_text())
    assert mistake(certfile=str(both)) == f"certfile: the key in {str(both)!r} is not the key of its certificate"


def test_certfile_and_ssl_context_together_are_refused(cert: tuple[str, str]) -> None:
    crt, key = cert
    assert mistake(certfile=crt, keyfile=key, ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)) == \
        "certfile: give certfile/keyfile or ssl_context, not both"

