"""Tests of the HTTP transport: when plain HTTP is used, registry error codes, upload URLs, bounded reads."""
from __future__ import annotations

import io

from lamina.registry.client import _Window, _with_query
from lamina.registry.transport import RegistryOptions, Transport, error_codes


def test_plain_http_only_for_loopback_and_listed_hosts() -> None:
    options = RegistryOptions(insecure=("build.internal:5000", "plain.example"))
    for host in ("127.0.0.1:5000", "localhost", "[::1]:5000", "build.internal:5000", "plain.example:8080"):
        assert Transport(host, options).plain_allowed, host
    for host in ("build.internal:6000", "ghcr.io", "10.1.2.3:5000"):
        transport = Transport(host, options)
        assert not transport.plain_allowed and transport.base == f"https://{host}"  # decided without a probe


def test_a_loopback_host_that_does_not_speak_tls_gets_http() -> None:
    import socket

    with socket.socket() as listener:  # accepts, then closes: no TLS handshake completes
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        t = Transport(f"127.0.0.1:{port}", RegistryOptions(connect_timeout=2, read_timeout=2))
        import threading

        def close_one() -> None:
            conn, _ = listener.accept()
            conn.close()

        threading.Thread(target=close_one, daemon=True).start()
        assert t.scheme == "http"
        assert t.url("/v2/a/blobs/uploads/x?_state=1") == f"http://127.0.0.1:{port}/v2/a/blobs/uploads/x?_state=1"
        assert t.url("http://127.0.0.1:1/elsewhere") == "http://127.0.0.1:1/elsewhere"


def test_error_codes_from_registry_json() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"1"}}]}'
    assert error_codes(body) == "MANIFEST_UNKNOWN: manifest unknown"
    assert error_codes(b"<html>") == ""


def test_digest_is_appended_to_an_upload_url_keeping_its_state() -> None:
    assert _with_query("http://h/v2/a/blobs/uploads/u?_state=abc", digest="sha256:1") == (
        "http://h/v2/a/blobs/uploads/u?_state=abc&digest=sha256%3A1")


def test_window_reads_at_most_n_bytes_in_pieces() -> None:
    stream = io.BytesIO(b"x" * 10 + b"y" * 10)
    window = _Window(stream, 12)  # type: ignore[arg-type]
    assert window.read(5) == b"xxxxx" and window.read() == b"xxxxxyy" and window.read() == b""
    assert stream.read() == b"y" * 8
