"""Tests of deterministic new layers: same files same bytes, sorted root-owned entries, refused destinations."""
from __future__ import annotations

import gzip
import os
import re
import tarfile

import pytest

from lamina.analyze.index import IndexEntry, LayerIndex
from lamina.analyze.stackfs import FileSystem, apply
from lamina.errors import SpecError
from lamina.image import Image
from lamina.model import OCI_LAYER_GZIP, Descriptor
from lamina.newlayer import build_files_layer, files_from_dir
from lamina.validate import validate
from lamina_testing.images import sha


def _tree(root, files: dict[str, bytes], mtime: int, order=sorted) -> None:  # type: ignore[no-untyped-def]
    for rel in order(files):
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(files[rel])
        os.chmod(path, 0o755 if rel.endswith(".sh") else 0o644)
        os.utime(path, (mtime, mtime))


FILES = {"bin/run.sh": b"#!/bin/sh\necho hi\n", "etc/app/app.conf": b"a=1\n", "etc/app/z.conf": b"z", "README": b"read me"}


def _members(path: str) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tf:
        return tf.getmembers()


def test_same_files_give_the_same_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _tree(tmp_path / "src", FILES, 1_600_000_000)
    files = files_from_dir(str(tmp_path / "src"), "/app")
    one = build_files_layer(files, str(tmp_path / "one.tgz"))
    two = build_files_layer(list(reversed(files)), str(tmp_path / "two.tgz"))
    assert (tmp_path / "one.tgz").read_bytes() == (tmp_path / "two.tgz").read_bytes()
    assert one.descriptor == two.descriptor and one.diff_id == two.diff_id


def test_mtimes_and_creation_order_on_disk_do_not_matter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _tree(tmp_path / "a", FILES, 1_000_000_000)
    _tree(tmp_path / "b", FILES, 1_700_000_000, order=lambda f: sorted(f, reverse=True))
    a = build_files_layer(files_from_dir(str(tmp_path / "a"), "/app"), str(tmp_path / "a.tgz"))
    b = build_files_layer(files_from_dir(str(tmp_path / "b"), "/app"), str(tmp_path / "b.tgz"))
    assert a.descriptor.digest == b.descriptor.digest
    assert a.diff_id == b.diff_id


def test_entries_are_sorted_owned_by_root_at_epoch_with_parent_dirs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _tree(tmp_path / "src", FILES, 1_600_000_000)
    build_files_layer(files_from_dir(str(tmp_path / "src"), "/app"), str(tmp_path / "l.tgz"))
    members = _members(str(tmp_path / "l.tgz"))
    names = [m.name for m in members]
    assert names == ["app", "app/README", "app/bin", "app/bin/run.sh", "app/etc", "app/etc/app",
                     "app/etc/app/app.conf", "app/etc/app/z.conf"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
    kinds = {m.name: (m.isdir(), m.mode) for m in members}
    assert kinds["app/etc"] == (True, 0o755)
    assert kinds["app/bin/run.sh"] == (False, 0o755)  # executable stays executable
    assert kinds["app/README"] == (False, 0o644)
    with tarfile.open(str(tmp_path / "l.tgz"), "r:gz") as tf:
        assert tf.extractfile("app/etc/app/app.conf").read() == b"a=1\n"  # type: ignore[union-attr]


def test_descriptor_and_diff_id_describe_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(b"data")
    out = str(tmp_path / "l.tgz")
    layer = build_files_layer([("/srv/f", str(tmp_path / "f"))], out)
    blob = (tmp_path / "l.tgz").read_bytes()
    assert layer.descriptor == Descriptor(OCI_LAYER_GZIP, sha(blob), len(blob))
    assert layer.diff_id == sha(gzip.decompress(blob))
    assert blob[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert layer.path == out and layer.created_by == "lamina: files"
    image = Image("files", b"{}", layer.descriptor, (layer,))
    assert validate(image).bytes == len(blob)


@pytest.mark.parametrize(
    "files, message",
    [
        ([("/", "f")], "file destination '/' is not a path inside the image"),
        ([("/x", "missing")], "file 'missing' for '/x' does not exist"),
        ([("/x", "f"), ("x", "g")], "two files want the same image path /x"),
        ([("/x", "f"), ("/x/y", "g")], "/x is both a file and a directory"),
    ],
    ids=["root", "missing-source", "same-dest", "file-and-dir"],
)
def test_bad_file_lists_are_spec_errors(tmp_path, monkeypatch, files, message: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_bytes(b"f")
    (tmp_path / "g").write_bytes(b"g")
    with pytest.raises(SpecError, match=message):
        build_files_layer(files, str(tmp_path / "l.tgz"))


def test_destinations_cannot_climb_out_of_the_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(b"f")
    build_files_layer([("/../../etc/passwd", str(tmp_path / "f"))], str(tmp_path / "l.tgz"))
    assert [m.name for m in _members(str(tmp_path / "l.tgz"))] == ["etc", "etc/passwd"]


def test_same_file_named_twice_is_one_entry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(b"f")
    f = str(tmp_path / "f")
    build_files_layer([("/a/f", f), ("a/./f", f)], str(tmp_path / "l.tgz"))
    assert [m.name for m in _members(str(tmp_path / "l.tgz"))] == ["a", "a/f"]


def test_files_from_dir_places_files_under_dest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _tree(tmp_path / "src", FILES, 0)
    pairs = sorted(files_from_dir(str(tmp_path / "src"), "/opt/x"))
    assert pairs == sorted((f"/opt/x/{rel}", os.path.join(str(tmp_path / "src"), rel)) for rel in FILES)


def _below(*entries: IndexEntry) -> FileSystem:
    digest = "sha256:" + "0" * 64
    return apply([LayerIndex("base", 0, digest, digest, "", 0, "", "linux/amd64", (), (), entries)]).fs


USR_MERGED = _below(
    IndexEntry("usr", "dir", 0o755, 0, 0), IndexEntry("usr/bin", "dir", 0o755, 0, 0),
    IndexEntry("usr/bin/sh", "symlink", 0o777, 0, 0, linkname="dash"), IndexEntry("bin", "symlink", 0o777, 0, 0, linkname="usr/bin"),
    IndexEntry("tmp", "dir", 0o1777, 0, 0), IndexEntry("home", "dir", 0o755, 0, 0),
    IndexEntry("home/app", "dir", 0o750, 1000, 1000), IndexEntry("etc", "dir", 0o755, 0, 0),
    IndexEntry("etc/hosts", "file", 0o644, 0, 0))


def test_on_layers_below_files_follow_their_symlinks_and_keep_their_directories(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(b"f")
    f = str(tmp_path / "f")
    files = [("/bin/tool", f), ("/tmp/scratch", f), ("/home/app/app.conf", f), ("/opt/new/thing", f)]
    build_files_layer(files, str(tmp_path / "l.tgz"), USR_MERGED)
    # parents that exist below are written as they are there (overlay2 shows the upper layer's
    # directory), new ones root 0755; /bin stays a symlink
    assert [(m.name, m.type, m.mode, m.uid) for m in _members(str(tmp_path / "l.tgz"))] == [
        ("home", tarfile.DIRTYPE, 0o755, 0), ("home/app", tarfile.DIRTYPE, 0o750, 1000),
        ("home/app/app.conf", tarfile.REGTYPE, 0o644, 0),
        ("opt", tarfile.DIRTYPE, 0o755, 0), ("opt/new", tarfile.DIRTYPE, 0o755, 0),
        ("opt/new/thing", tarfile.REGTYPE, 0o644, 0),
        ("tmp", tarfile.DIRTYPE, 0o1777, 0), ("tmp/scratch", tarfile.REGTYPE, 0o644, 0),
        ("usr", tarfile.DIRTYPE, 0o755, 0), ("usr/bin", tarfile.DIRTYPE, 0o755, 0),
        ("usr/bin/tool", tarfile.REGTYPE, 0o644, 0),
    ]
    # without the layers below, the layer is as before: every parent directory written
    build_files_layer(files, str(tmp_path / "plain.tgz"))
    assert "bin" in [m.name for m in _members(str(tmp_path / "plain.tgz"))]


@pytest.mark.parametrize("dest, message", [
    ("/etc", "file destination '/etc': /etc is a directory in the layers below"),
    ("/etc/hosts/x", "/etc/hosts is a file in the layers below, not a directory"),
], ids=["onto-a-directory", "under-a-file"])
def test_destinations_the_layers_below_cannot_take_are_refused(tmp_path, dest: str, message: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(b"f")
    with pytest.raises(SpecError, match=re.escape(message)):
        build_files_layer([(dest, str(tmp_path / "f"))], str(tmp_path / "l.tgz"), USR_MERGED)


def test_two_destinations_landing_on_one_path_through_a_symlink_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(SpecError, match=re.escape("two files want the same image path /usr/bin/x (as '/bin/x' and "
                                                  "'/usr/bin/x')")):
        build_files_layer([("/bin/x", str(tmp_path / "a")), ("/usr/bin/x", str(tmp_path / "b"))],
                          str(tmp_path / "l.tgz"), USR_MERGED)


def test_a_files_layer_description_nested_too_deeply_is_a_spec_error(tmp_path) -> None:  # found by lamina_fuzz
    from lamina.newlayer import FILES_LAYER_META, read_files_layer_dir

    (tmp_path / FILES_LAYER_META).write_bytes(b"[" * 5000 + b"]" * 5000)
    with pytest.raises(SpecError, match="cannot read files-layer.json"):
        read_files_layer_dir(str(tmp_path))
