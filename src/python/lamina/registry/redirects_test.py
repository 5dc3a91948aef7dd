"""Tests of the redirect policy: where a registry request may be sent next."""
from __future__ import annotations

import pytest

from lamina.registry.errors import RegistryError
from lamina.registry.redirects import MAX_REDIRECTS, follow, origin

BLOB = "https://registry.example/v2/a/blobs/sha256:1"


@pytest.mark.parametrize("current, location, expected", [
    (BLOB, "https://storage.example/b?sig=1", "https://storage.example/b?sig=1"),
    (BLOB, "/storage/b", "https://registry.example/storage/b"),
    (BLOB, "  https://cdn.example/x  ", "https://cdn.example/x"),
    ("http://127.0.0.1:5000/v2/a", "https://127.0.0.1:5001/b", "https://127.0.0.1:5001/b"),  # upgrades are fine
    ("http://127.0.0.1:5000/v2/a", "http://storage.example/b", "http://storage.example/b"),
    (BLOB, "HTTPS://Storage.example/b", "https://Storage.example/b"),
], ids=["other host", "relative", "spaces", "upgrade", "plain to plain", "upper-case scheme"])
def test_followed(current: str, location: str, expected: str) -> None:
    assert follow(current, location, "registry.example", "pull", 1) == expected


@pytest.mark.parametrize("location, message", [
    ("http://storage.example/b?X-Amz-Signature=secret",
     "pull: registry.example redirected from https to plain http (http://storage.example); "
     "lamina never downgrades a redirect"),
    ("ftp://files.example/blob", "pull: registry.example redirected to a ftp URL (ftp://files.example); "
                                 "lamina follows only http and https redirects"),
    ("file:///etc/passwd", "pull: registry.example redirected to a file URL (file://); "
                           "lamina follows only http and https redirects"),
    ("javascript:alert(1)", "pull: registry.example redirected to a javascript URL (javascript://); "
                            "lamina follows only http and https redirects"),
    ("http:nohost", "pull: registry.example redirected to http://, which names no host"),
    ("http://[x/", "pull: registry.example redirected to 'http://[x/', which is not a URL"),
    ("https://h:port/", "pull: registry.example redirected to 'https://h:port/', which is not a URL"),
    ("https://a b/", "pull: registry.example redirected to 'https://a b/', which is not a URL"),
    ("https://\x00/", "pull: registry.example redirected to 'https://\\x00/', which is not a URL"),
    ("ftp://a\x85b/", "pull: registry.example redirected to 'ftp://a\\x85b/', which is not a URL"),  # one line
], ids=["downgrade", "ftp", "file", "javascript", "no host", "bad ipv6", "bad port", "space", "nul", "nel"])
def test_refused_with_one_line_naming_registry_and_target(location: str, message: str) -> None:
    with pytest.raises(RegistryError) as info:
        follow(BLOB, location, "registry.example", "pull", 1)
    assert str(info.value) == message and "secret" not in str(info.value)


def test_redirects_are_bounded() -> None:
    assert follow(BLOB, "/again", "registry.example", "pull", MAX_REDIRECTS)
    with pytest.raises(RegistryError, match=f"redirected more than {MAX_REDIRECTS} times in a row "
                                            r"\(the last to https://cdn.example\); lamina stops there"):
        follow(BLOB, "https://cdn.example/x", "registry.example", "pull", MAX_REDIRECTS + 1)


def test_origin_fills_in_default_ports_and_ignores_case() -> None:
    assert origin("https://Registry.Example/v2/") == origin("https://registry.example:443/x")
    assert origin("http://registry.example/") != origin("https://registry.example/")
    assert origin("https://[::1]:5000/v2/") == ("https", "::1", 5000)
    assert origin("https://user:pw@registry.example/") == ("https", "registry.example", 443)
