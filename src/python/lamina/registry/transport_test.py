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
    # refused as no URL, or asked and answered 404: either way one line
    assert len(str(raised.value).splitlines()) == 1, str(raised.value)
    assert "auth.fu" in str(raised.value) and ("answered HTTP 404" in str(raised.value) or "not an http(s) URL" in str(raised.value))


class _RecordingPool:
    """Answers from a script keyed by URL, recording (method, url, Authorization) of each request."""

    def __init__(self, answers: dict) -> None:  # type: ignore[type-arg]
        self.answers = answers
        self.seen: list = []  # type: ignore[type-arg]

    def request(self, method: str, url: str, headers: object = None, **_: object) -> object:
        from urllib3 import HTTPHeaderDict

        self.seen.append((method, url, dict(headers or {}).get("Authorization")))  # type: ignore[call-overload]
        status, hdrs = self.answers[url]

        class _Resp:
            def __init__(self) -> None:
                self.status, self.headers, self._body = status, HTTPHeaderDict(hdrs), io.BytesIO(b"ok")

            def read(self, amt: int = -1, decode_content: bool = True) -> bytes:
                return self._body.read(amt)

            def drain_conn(self) -> None:
                pass

            release_conn = close = drain_conn
        return _Resp()


def _authenticated(pool: _RecordingPool, host: str) -> Transport:
    t = Transport(host, RegistryOptions(), pool=pool)  # type: ignore[arg-type]
    t._basic = "Basic dTpw"
    return t


def test_credentials_go_only_to_the_registrys_own_scheme_host_and_port() -> None:
    blob = "https://registry.test/v2/a/blobs/sha256:1"
    chain = ["https://registry.test:443/same", "https://registry.test:8443/port", "https://cdn.test/host",
             "https://REGISTRY.test/case"]
    answers = {blob: (307, {"Location": chain[0]})}
    for here, there in zip(chain, chain[1:]):
        answers[here] = (302, {"Location": there})
    answers[chain[-1]] = (200, {})
    pool = _RecordingPool(answers)
    assert _authenticated(pool, "registry.test").request("GET", blob, scopes=(), what="t").status == 200
    assert [(url, auth) for _, url, auth in pool.seen] == [
        (blob, "Basic dTpw"), (chain[0], "Basic dTpw"), (chain[1], None), (chain[2], None), (chain[3], "Basic dTpw")]


def test_a_plain_registry_redirecting_to_https_on_its_own_host_sends_no_credentials_there() -> None:
    pool = _RecordingPool({"http://127.0.0.1:5000/v2/b": (307, {"Location": "https://127.0.0.1:5000/b"}),
                           "https://127.0.0.1:5000/b": (200, {})})
    t = _authenticated(pool, "127.0.0.1:5000")
    t._probed, t._scheme = True, "http"
    t.request("GET", "/v2/b", scopes=(), what="t")
    assert [auth for _, _, auth in pool.seen] == ["Basic dTpw", None]


def test_redirects_of_uploads_are_not_followed() -> None:
    pool = _RecordingPool({"https://registry.test/v2/a/blobs/uploads/": (307, {"Location": "https://elsewhere/"})})
    reply = _authenticated(pool, "registry.test").request("POST", "/v2/a/blobs/uploads/", scopes=(), what="t")
    assert reply.status == 307 and len(pool.seen) == 1


def test_requests_are_routed_through_the_proxy_the_environment_names() -> None:
    import urllib3

    options = RegistryOptions.from_environ({"HTTPS_PROXY": "http://u:p@proxy.corp:3128", "HTTP_PROXY": "proxy.corp:80",
                                            "NO_PROXY": ".internal.example", "LAMINA_CERTS_D": ""})
    t = Transport("registry.example", options)
    pool, proxy = t._route("https://registry.example/v2/")
    assert isinstance(pool, urllib3.ProxyManager) and proxy is not None and proxy.url == "http://proxy.corp:3128"
    assert pool.proxy_headers == {"proxy-authorization": "Basic dTpw"}
    assert t._route("https://cdn.example/blob")[0] is pool  # one pool per proxy
    plain_pool, plain = t._route("http://registry.example/v2/")
    assert plain is not None and plain.url == "http://proxy.corp:80" and plain_pool is not pool
    direct, none = t._route("https://r.internal.example/v2/")
    assert none is None and not isinstance(direct, urllib3.ProxyManager)


def test_a_forwarding_proxy_asking_for_credentials_is_a_one_line_error() -> None:
    import pytest

    from lamina.registry.errors import AuthError

    t = Transport("registry.example:5000", RegistryOptions.from_environ(
        {"HTTP_PROXY": "http://proxy.corp:3128", "LAMINA_CERTS_D": ""}, insecure=("registry.example:5000",)))
    t._probed, t._scheme = True, "http"
    pool = _RecordingPool({"http://registry.example:5000/v2/": (407, {"Proxy-Authenticate": "Basic"})})
    t._pools[t._route("http://registry.example:5000/v2/")[1]] = pool  # type: ignore[assignment]
    with pytest.raises(AuthError) as info:
        t.request("GET", "/v2/", scopes=(), what="probe")
    assert str(info.value) == ("probe: proxy http://proxy.corp:3128 (HTTP_PROXY) refused to forward to "
                               "registry.example:5000 without valid proxy credentials (HTTP 407); put them in "
                               "HTTP_PROXY as http://USER:PASSWORD@HOST:PORT (percent-encoded)")


def test_options_from_the_environment_keep_explicit_overrides() -> None:
    options = RegistryOptions.from_environ({"HOME": "/h", "https_proxy": "p:1"}, certs_d=("/mine",))
    assert options.certs_d == ("/mine",) and options.proxies.https_proxy == "p:1"
    assert RegistryOptions().proxies.proxy_for("https://x/") is None and RegistryOptions().certs_d == ()


def test_a_token_endpoint_that_is_no_http_url_is_one_auth_error() -> None:  # found by lamina_fuzz (ValueError)
    import pytest
    from urllib3 import HTTPHeaderDict

    from lamina.registry.errors import AuthError

    for realm in ("https://[x/token", "ftp://auth.example/token", "https:///token"):
        asked: list = []

        class _Resp:
            status, headers = 401, HTTPHeaderDict({"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'})

            def read(self, *_: object, **__: object) -> bytes:
                return b""

            def drain_conn(self) -> None:
                pass

            def release_conn(self) -> None:
                pass

        class _Pool:
            def request(self, method: str, url: str, **_: object) -> object:
                asked.append(url)
                return _Resp()

        transport = Transport("registry.test", RegistryOptions(), pool=_Pool())  # type: ignore[arg-type]
        with pytest.raises(AuthError, match="not an http\\(s\\) URL") as raised:
            transport.request("GET", "/v2/", scopes=(), what="probe")
        assert len(str(raised.value).splitlines()) == 1
        assert all(u.startswith("https://registry.test/") for u in asked), asked  # the endpoint was never asked
