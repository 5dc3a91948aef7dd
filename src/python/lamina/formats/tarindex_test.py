"""Tests of random access to tar members: safe member paths, links, hostile and truncated archives."""
from __future__ import annotations

import os

import pytest

from lamina.errors import InvalidSource, UnsafeArchive
from lamina.formats.tarindex import TarIndex, safe_member_path
from lamina_testing.images import FileValue, write_tar


def _index(tmp_path, entries: list[tuple[str, FileValue]]) -> TarIndex:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "a.tar")
    write_tar(path, entries)
    return TarIndex(path)


@pytest.mark.parametrize(
    "name, expected",
    [("a/b", "a/b"), ("./a//b/", "a/b"), ("a/./b", "a/b"), ("..a/b..", "..a/b..")],
    ids=["plain", "dot-slash", "inner-dot", "dots-in-names"],
)
def test_safe_member_path_normalizes(name: str, expected: str) -> None:
    assert safe_member_path(name, "x.tar") == expected


@pytest.mark.parametrize(
    "name, message",
    [("/etc/passwd", "has an absolute path"), ("../x", "escapes the archive"), ("a/../../x", "escapes the archive"),
     ("a/..", "escapes the archive")],
    ids=["absolute", "dotdot", "nested-dotdot", "trailing-dotdot"],
)
def test_safe_member_path_refuses_escapes(name: str, message: str) -> None:
    with pytest.raises(UnsafeArchive, match=f"^x.tar: entry '{name}' {message}"):
        safe_member_path(name, "x.tar")


def test_reads_members_by_normalized_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    index = _index(tmp_path, [("./dir/", None), ("./dir/a.json", b'{"a": 1}'), ("b", b"bee")])
    assert index.names() == ["b", "dir/a.json"]  # directories are not members
    assert index.read("dir/a.json", "config") == b'{"a": 1}'
    assert index.read("./b", "layer") == b"bee"
    member = index.member("b", "layer")
    assert (member.size, index.head(member, 2)) == (3, b"be")


def test_links_inside_the_archive_resolve_to_their_target(tmp_path) -> None:  # type: ignore[no-untyped-def]
    index = _index(tmp_path, [
        ("blobs/real", b"content"),
        ("blobs/sym", "->real"),
        ("top", "->blobs/sym"),  # a chain
        ("hard", "=>blobs/real"),  # hard links name archive paths
        ("dangling", "->nowhere"),
    ])
    for name in ("blobs/sym", "top", "hard"):
        assert index.read(name, "file") == b"content", name
    assert index.get("dangling") is None


@pytest.mark.parametrize(
    "entry, message",
    [
        (("../evil", b"x"), r"entry '\.\./evil' escapes the archive with '\.\.'"),
        (("/abs", b"x"), r"entry '/abs' has an absolute path"),
        (("d/link", "->../../etc/passwd"), r"link 'd/link' points outside the archive \('\.\./\.\./etc/passwd'\)"),
        (("link", "->/etc/passwd"), r"link 'link' points to absolute path '/etc/passwd'"),
        (("hard", "=>../x"), r"link 'hard' points outside the archive"),
        (("link", "->.."), r"link 'link' points outside the archive"),
    ],
    ids=["dotdot", "absolute", "symlink-escapes", "symlink-absolute", "hardlink-escapes", "symlink-to-parent"],
)
def test_hostile_entries_refuse_the_whole_archive(tmp_path, entry, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsafeArchive, match=message):
        _index(tmp_path, [("manifest.json", b"[]"), entry])


def test_missing_member_and_oversized_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    index = _index(tmp_path, [("big", b"x" * 100)])
    with pytest.raises(InvalidSource, match=r"a\.tar: config 'small' is not in the archive"):
        index.read("small", "config")
    with pytest.raises(InvalidSource, match=r"config 'big' is 100 bytes, too large"):
        index.read("big", "config", limit=99)


def test_not_a_tar_and_truncated_tar_are_invalid_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(InvalidSource, match="junk.tar: not a readable tar archive"):
        TarIndex(str(junk))
    path = str(tmp_path / "t.tar")
    write_tar(path, [("a", b"a" * 5000), ("b", b"b" * 5000)])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    with pytest.raises(InvalidSource, match="t.tar: not a readable tar archive"):
        TarIndex(path)
