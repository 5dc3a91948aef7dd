"""Tests of the HTTP transport: when plain HTTP is used, registry error codes, upload URLs, bounded reads."""
from __future__ import annotations

import io

from lamina.blobs import Window as _Window
from lamina.registry.client import _with_query
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


def test_a_registry_token_from_the_docker_config_is_sent_as_the_bearer_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import http.server
    import json
    import threading

    seen: list = []

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == "Bearer s3cret"
            self.send_response(200 if ok else 401)
            if not ok:
                self.send_header("WWW-Authenticate", 'Bearer realm="http://127.0.0.1:1/token",service="r"')
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"auths": {host: {"registrytoken": "s3cret"}}}))
        t = Transport(host, RegistryOptions(docker_config=str(config), connect_timeout=2, read_timeout=5))
        t._probed, t._scheme = True, "http"  # a plain loopback server: skip the TLS probe
        assert t.request("GET", "/v2/", scopes=("repository:a:pull",), what="test").status == 200
        # the first request is anonymous; the challenge is answered with the registry token, never
        # by asking the (unreachable) token endpoint
        assert seen == [None, "Bearer s3cret"]
        config.write_text(json.dumps({"auths": {host: {"registrytoken": "wrong"}}}))
        t = Transport(host, RegistryOptions(docker_config=str(config), connect_timeout=2, read_timeout=5))
        t._probed, t._scheme = True, "http"
        import pytest

        from lamina.registry.errors import AuthError

        with pytest.raises(AuthError, match="refused the credentials of a registry token"):
            t.request("GET", "/v2/", scopes=("repository:a:pull",), what="test")
    finally:
        server.shutdown()


def test_error_codes_of_json_nested_too_deeply_are_none() -> None:  # found by lamina_fuzz (RecursionError)
    assert error_codes(b"[" * 5000 + b"]" * 5000) == ""


def test_error_codes_are_one_line_whatever_the_registry_wrote() -> None:  # found by lamina_fuzz
    assert error_codes(b'{"errors":[{"code":"x\\ny","message":"busy\\r\\nnow\\u2028"}]}') == "x y: busy now"


def test_a_redirect_to_something_that_is_no_url_is_a_registry_error() -> None:  # found by lamina_fuzz (ValueError)
    import pytest
    from urllib3 import HTTPHeaderDict

    from lamina.registry.errors import RegistryError

    class _Pool:
        def request(self, method: str, url: str, **_: object) -> object:
            class _Resp:
                status, headers = 307, HTTPHeaderDict({"Location": "http://[x/"})

                def drain_conn(self) -> None:
                    pass
            return _Resp()

    transport = Transport("registry.test", RegistryOptions(), pool=_Pool())  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="redirected to 'http://\\[x/', which is not a URL"):
        transport.request("GET", "/v2/", scopes=(), what="probe")


def test_a_token_endpoint_whose_name_holds_a_line_break_is_named_on_one_line() -> None:  # found by lamina_fuzz
    import pytest
    from urllib3 import HTTPHeaderDict

    from lamina.registry.errors import RegistryError

    class _Resp:
        def __init__(self, status: int, headers: dict) -> None:
            self.status, self.headers, self._body = status, HTTPHeaderDict(headers), [b""]

        def read(self, *_: object, **__: object) -> bytes:
            return self._body.pop() if self._body else b""

        def drain_conn(self) -> None:
            pass

        def release_conn(self) -> None:
            pass

    class _Pool:
        def request(self, method: str, url: str, **_: object) -> object:
            if "/token" in url:
                return _Resp(404, {})
            # U+0085 (NEL) is a line break to str.splitlines
            return _Resp(401, {"WWW-Authenticate": 'Bearer realm="https://auth.fu\x85x/token",service="r"'})

    transport = Transport("registry.test", RegistryOptions(), pool=_Pool())  # type: ignore[arg-type]
    with pytest.raises(RegistryError) as raised:
        transport.request("GET", "/v2/", scopes=(), what="probe")
    assert "answered HTTP 404" in str(raised.value) and len(str(raised.value).splitlines()) == 1, str(raised.value)
