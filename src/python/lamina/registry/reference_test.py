"""Tests of registry references: parsing, their forms and errors, push targets and loopback hosts."""
from __future__ import annotations

import pytest

from lamina.registry.errors import BadReference
from lamina.registry.reference import Reference, is_loopback, parse_reference, split_host

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, expected",
    [
        ("docker://127.0.0.1:5000/team/app:1", Reference("127.0.0.1:5000", "team/app", "1")),
        ("127.0.0.1:5000/app@" + D, Reference("127.0.0.1:5000", "app", None, D)),
        ("ghcr.io/o/r:v1.2@" + D, Reference("ghcr.io", "o/r", "v1.2", D)),
        ("localhost/app", Reference("localhost", "app")),
        ("[::1]:5000/app:x", Reference("[::1]:5000", "app", "x")),
        ("busybox", Reference("docker.io", "library/busybox")),
        ("docker.io/busybox:1", Reference("docker.io", "library/busybox", "1")),
        ("team/app:2", Reference("docker.io", "team/app", "2")),
        ("registry.example:443/a/b/c", Reference("registry.example:443", "a/b/c")),
    ],
    ids=["url-tag", "digest", "tag-and-digest", "localhost", "ipv6", "hub-short", "hub-explicit", "hub-org",
         "deep-path"],
)
def test_parse_reference(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_reference_forms() -> None:
    ref = parse_reference("docker://127.0.0.1:5000/team/app:1")
    assert str(ref) == "127.0.0.1:5000/team/app:1"
    assert ref.url == "docker://127.0.0.1:5000/team/app:1"
    assert ref.target == "1" and not ref.pinned
    pinned = ref.with_digest(D)
    assert pinned.url == f"docker://127.0.0.1:5000/team/app@{D}" and pinned.target == D
    assert parse_reference("busybox").api_host == "registry-1.docker.io"
    assert parse_reference("busybox").target == "latest"
    assert parse_reference("[::1]:5000/a").hostname == "::1"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is not an image reference"),
        ("127.0.0.1:5000/App:1", "repository 'App' is not valid"),
        ("127.0.0.1:5000/app@sha256:abc", "digest 'sha256:abc' is not sha256:<64 lowercase hex digits>"),
        ("127.0.0.1:5000/app:" + "x" * 129, "is not valid"),
        ("127.0.0.1:5000/app:-bad", "tag '-bad' is not valid"),
        ("bad_host.example/app", "'bad_host.example' is not a registry host"),
        ("127.0.0.1:5000/", "repository '' is not valid"),
    ],
    ids=["empty", "uppercase", "short-digest", "long-tag", "dash-tag", "bad-host", "no-repo"],
)
def test_bad_references_say_why(text: str, message: str) -> None:
    with pytest.raises(BadReference, match=message):
        parse_reference(text)


def test_push_target_needs_a_tag() -> None:
    with pytest.raises(BadReference, match=r"name the tag to push, e.g. 127.0.0.1:5000/app:latest"):
        parse_reference("127.0.0.1:5000/app", require_tag=True)


@pytest.mark.parametrize(
    "host, loopback",
    [("localhost", True), ("localhost:5000", True), ("127.0.0.1", True), ("127.8.9.10:80", True),
     ("[::1]:5000", True), ("::1", True), ("10.0.0.1:5000", False), ("ghcr.io", False), ("localhost.example", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_split_host() -> None:
    assert split_host("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("Ghcr.IO") == ("ghcr.io", None)
    assert split_host("::1") == ("::1", None)


@pytest.mark.parametrize("text", [
    "registry.example/team\n@sha256:" + "a" * 64,  # a newline before the end: re.match's $ allowed it
    "registry.example/team:v1\n",
    "registry.example\n/team:v1",
    "registry.example/team@sha256:" + "a" * 64 + "\n",
])
def test_a_reference_with_a_trailing_newline_in_any_part_is_refused(text: str) -> None:  # found by lamina_fuzz
    with pytest.raises(BadReference):
        parse_reference(text)
