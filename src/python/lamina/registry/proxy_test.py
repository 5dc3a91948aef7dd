"""Tests of proxy settings from the environment: which variable wins, NO_PROXY matching, proxy URLs."""
from __future__ import annotations

import pytest

from lamina.registry.errors import RegistryError
from lamina.registry.proxy import ProxyConfig, ProxyURL, bypassed, parse_proxy_url


@pytest.mark.parametrize("no_proxy, host, port, expected", [
    ("*", "anything.example", 443, True),
    (" * ", "10.1.2.3", 80, True),
    ("example.com", "example.com", 443, True),
    ("example.com", "registry.example.com", 443, True),
    ("example.com", "notexample.com", 443, False),
    (".example.com", "registry.example.com", 443, True),
    (".example.com", "example.com", 443, False),
    ("*.example.com", "a.b.example.com", 443, True),
    ("Example.COM.", "REGISTRY.example.com", 443, True),
    ("registry:5000", "registry", 5000, True),
    ("registry:5000", "registry", 443, False),
    ("registry:443", "registry", 443, True),
    ("127.0.0.1", "127.0.0.1", 5000, True),
    ("127.0.0.1:5000", "127.0.0.1", 5001, False),
    ("10.0.0.0/8", "10.20.30.40", 443, True),
    ("10.0.0.0/8", "11.0.0.1", 443, False),
    ("10.0.0.0/8", "ten.example", 443, False),
    ("::1", "::1", 5000, True),
    ("[::1]:5000", "::1", 5000, True),
    ("fd00::/8", "fd12::1", 443, True),
    ("fd00::/8", "10.0.0.1", 443, False),
    ("localhost", "127.0.0.1", 5000, False),  # names are not resolved: list the address too
    ("", "127.0.0.1", 5000, False),  # loopback is proxied unless NO_PROXY says otherwise
    ("a.example, ,b.example", "b.example", 443, True),
    ("1.2.3.4", "1.2.3.4.example", 443, False),
], ids=lambda v: repr(v))
def test_no_proxy_matching(no_proxy: str, host: str, port: int, expected: bool) -> None:
    assert bypassed(no_proxy, host, port) is expected


def test_upper_case_variables_win_as_in_go_and_empty_ones_do_not_count() -> None:
    config = ProxyConfig.from_environ({"HTTPS_PROXY": "http://upper:3128", "https_proxy": "http://lower:3128",
                                       "HTTP_PROXY": "", "http_proxy": "lower-http:8080",
                                       "no_proxy": "internal.example"})
    assert config.proxy_for("https://ghcr.io/v2/") == ProxyURL("http://upper:3128", None, "HTTPS_PROXY")
    assert config.proxy_for("http://plain.example:5000/v2/") == ProxyURL("http://lower-http:8080", None, "http_proxy")
    assert config.proxy_for("https://registry.internal.example/v2/") is None
    assert config.proxy_for("https://registry.internal.example:443/v2/") is None


def test_the_scheme_picks_the_variable_and_nothing_else_is_proxied() -> None:
    config = ProxyConfig.from_environ({"HTTP_PROXY": "http://p:1"})
    assert config.proxy_for("https://ghcr.io/v2/") is None  # https does not fall back to HTTP_PROXY
    assert config.proxy_for("http://registry.internal:5000/v2/") == ProxyURL("http://p:1", None, "HTTP_PROXY")
    assert ProxyConfig().proxy_for("https://ghcr.io/") is None


def test_proxy_urls_credentials_and_defaults() -> None:
    assert parse_proxy_url("proxy.corp:3128", "HTTPS_PROXY") == ProxyURL("http://proxy.corp:3128", None, "HTTPS_PROXY")
    assert parse_proxy_url("http://proxy.corp", "V").url == "http://proxy.corp:80"
    assert parse_proxy_url("https://proxy.corp", "V").url == "https://proxy.corp:443"
    assert parse_proxy_url("http://[fd00::1]:3128/", "V").url == "http://[fd00::1]:3128"
    with_auth = parse_proxy_url("http://corp%5Cme:p%40ss%3Aw@proxy:3128", "V")
    assert with_auth == ProxyURL("http://proxy:3128", "corp\\me:p@ss:w", "V")
    assert parse_proxy_url("http://token@proxy:3128", "V").basic_auth == "token:"


@pytest.mark.parametrize("raw, message", [
    ("socks5://user:secret@proxy:1080", "HTTPS_PROXY names a socks5: proxy (socks5://user:***@proxy:1080); "
                                        "lamina speaks to http and https proxies only"),
    ("http://proxy:port", "HTTPS_PROXY is not a proxy URL: 'http://proxy:port'; "
                          "write it as http://[USER:PASSWORD@]HOST:PORT"),
    ("http://:3128", "HTTPS_PROXY has no proxy host: 'http://:3128'; write it as http://HOST:PORT"),
], ids=["socks", "bad port", "no host"])
def test_unusable_proxy_urls_are_one_line_errors_without_the_password(raw: str, message: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_proxy_url(raw, "HTTPS_PROXY")
    assert str(info.value) == message and "secret" not in str(info.value)


def test_a_loopback_registry_is_never_proxied() -> None:  # as Go and Docker: the proxy must not see local traffic
    config = ProxyConfig.from_environ({"HTTPS_PROXY": "http://corp:3128", "HTTP_PROXY": "http://corp:3128"})
    for url in ("http://127.0.0.1:5000/v2/", "https://localhost:5000/v2/", "http://[::1]:5000/v2/", "http://127.1.2.3/v2/"):
        assert config.proxy_for(url) is None, url
    assert config.proxy_for("https://registry.example.com/v2/") is not None
