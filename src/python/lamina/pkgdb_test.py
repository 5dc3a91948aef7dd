"""Tests of the package database merge: dpkg and apk databases of layers from different images,
merged into one deterministic layer; conflicts by name and version; nothing added when not needed."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile

import pytest

from lamina import pkgdb
from lamina.analyze.check import check
from lamina.analyze.index import read_index
from lamina.analyze.report import Policy
from lamina.analyze.scan import scan_image
from lamina.build import audit_trail, build, composed
from lamina.cli import main
from lamina.errors import InvalidSource
from lamina.sources import open_image
from lamina.spec import parse_spec
from lamina_testing.images import FakeImage, FakeLayer, write_oci_dir


def dpkg(name: str, version: str, arch: str = "amd64", status: str = "install ok installed", extra: str = "",
         multi_arch: str = "") -> str:
    ma = f"Multi-Arch: {multi_arch}\n" if multi_arch else ""
    return (f"Package: {name}\nStatus: {status}\nPriority: optional\nArchitecture: {arch}\n{ma}Version: {version}\n"
            f"Description: {name}\n the {name} package{extra}\n")


def db(*stanzas: str) -> bytes:
    return "".join(s + "\n" for s in stanzas).encode()


BASE_PKGS = (dpkg("base-files", "12.4"), dpkg("libc6", "2.36-9"))
BASE_LAYER = FakeLayer({"var/": None, "var/lib/": None, "var/lib/dpkg/": None,
                        "var/lib/dpkg/status": db(*BASE_PKGS), "bin/sh": b"sh"}, "ADD base /", "gzip")


def _image(*layers: FakeLayer) -> FakeImage:
    return FakeImage([BASE_LAYER, *layers])


CURL = _image(FakeLayer({"var/lib/dpkg/status": db(BASE_PKGS[0], dpkg("curl", "7.88"), BASE_PKGS[1]),
                         "var/lib/dpkg/info/curl.list": b"/usr/bin/curl\n", "usr/bin/curl": b"curl"},
                        "RUN apt-get install curl", "gzip"))
GCC = _image(FakeLayer({"var/lib/dpkg/status": db(*BASE_PKGS, dpkg("gcc-12", "12.2"), dpkg("cpp-12", "12.2")),
                        "var/lib/dpkg/info/gcc-12.list": b"/usr/bin/gcc-12\n", "usr/bin/gcc-12": b"gcc"},
                       "RUN apt-get install gcc", "gzip"))


@pytest.fixture
def sources(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for name, fake in (("base", FakeImage([BASE_LAYER])), ("curl", CURL), ("gcc", GCC)):
        write_oci_dir(fake, str(tmp_path / name))
        out[name] = "oci:" + str(tmp_path / name)
    return out


def write_and_open(tmp_path, fake: FakeImage):  # type: ignore[no-untyped-def]
    write_oci_dir(fake, str(tmp_path / "img"))
    return open_image("oci:" + str(tmp_path / "img"))


def _spec(sources: dict[str, str], *names: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"base": sources["base"], "format": "oci", "tags": ["app:1"],
            "layers": [{"source": sources[n], "layer": "-1", "target": f"//:{n}"} for n in names], **extra}


def _file(image_dir: str, layer_digest: str, path: str) -> bytes:
    blob = os.path.join(image_dir, "blobs", "sha256", layer_digest.split(":", 1)[1])
    with tarfile.open(blob, "r:*") as tf:
        f = tf.extractfile(path)
        assert f is not None
        return f.read()


def test_layers_of_two_images_get_one_merge_layer_on_top(tmp_path, sources) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "out")
    notes: list[str] = []
    image = build(parse_spec(_spec(sources, "curl", "gcc")), out, notes=notes)
    curl, gcc = open_image(sources["curl"]), open_image(sources["gcc"])
    # the source layers keep their digests; only the merge layer is new
    assert [l.descriptor.digest for l in image.layers[:3]] == [
        curl.layers[0].descriptor.digest, curl.layers[1].descriptor.digest, gcc.layers[1].descriptor.digest]
    assert len(image.layers) == 4 and pkgdb.is_merge_layer(image.layers[3])
    status = _file(out, image.layers[3].descriptor.digest, "var/lib/dpkg/status").decode()
    names = [line.split(": ")[1] for line in status.splitlines() if line.startswith("Package: ")]
    assert names == ["base-files", "cpp-12", "curl", "gcc-12", "libc6"]  # each once, sorted as dpkg writes
    assert dpkg("curl", "7.88") + "\n" in status and dpkg("gcc-12", "12.2") + "\n" in status
    assert status.endswith("package\n\n")
    assert any("merged /var/lib/dpkg/status (dpkg, 5 packages)" in n for n in notes), notes
    # deterministic: the same inputs give the same layer, entries root-owned at mtime 0
    again = build(parse_spec(_spec(sources, "curl", "gcc")), str(tmp_path / "again"))
    assert again.manifest_descriptor == image.manifest_descriptor
    blob = os.path.join(out, "blobs", "sha256", image.layers[3].descriptor.hex)
    with tarfile.open(blob, "r:gz") as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/status"]
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}
    # the audit trail names it, and what it merged from which layers
    row = audit_trail(image, target="//:app")["layers"][3]
    assert row["selector"] == "merge-package-databases" and row["target"] == "//:app"
    assert curl.layers[1].descriptor.digest in row["merged"] and gcc.layers[1].descriptor.digest in row["merged"]


def test_the_composed_image_checks_clean_of_the_merged_database(tmp_path, sources) -> None:  # type: ignore[no-untyped-def]
    with composed(parse_spec(_spec(sources, "curl", "gcc")), str(tmp_path)) as image:
        report = check(scan_image(image), Policy("error", check_dependencies=False))
    (finding,) = [f for f in report.findings if "var/lib/dpkg/status" in f.paths]
    assert finding.severity == "info" and "merged:" in finding.message, finding.message
    assert not report.errors


@pytest.mark.parametrize("names,extra", [(("curl",), {}), (("curl", "gcc"), {"merge_package_databases": False})],
                         ids=["one-database-change", "merge-off"])
def test_no_merge_layer_when_not_needed_or_turned_off(tmp_path, sources, names, extra) -> None:  # type: ignore[no-untyped-def]
    image = build(parse_spec(_spec(sources, *names, **extra)), str(tmp_path / "out"))
    assert len(image.layers) == 1 + len(names)
    assert not any(pkgdb.is_merge_layer(l) for l in image.layers)


def test_layers_of_one_image_need_no_merge(tmp_path, sources) -> None:  # type: ignore[no-untyped-def]
    spec = {"base": sources["curl"], "format": "oci", "layers": [{"source": sources["gcc"], "layer": "0"}]}
    # the gcc image's base layer is the curl image's: nothing is hidden
    assert len(build(parse_spec(spec), str(tmp_path / "out")).layers) == 3


def _stack(*layers: tuple) -> list[pkgdb.StackLayer]:
    """Layers of (name, status, diff_ids below it[, the X of the info/X.list files it writes])."""
    out = []
    for i, (name, content, below, *lists) in enumerate(layers):
        dbs = pkgdb.LayerDatabases(((pkgdb.DPKG_STATUS, content),), lists=frozenset(*lists))
        out.append(pkgdb.StackLayer(i, name, name, f"d{i}", f"diff{i}", below, dbs))
    return out


def test_two_images_that_changed_one_package_differently_are_a_conflict_by_name_and_version() -> None:
    found = pkgdb.plan(_stack(("base", db(*BASE_PKGS), frozenset()),
                              ("b", db(BASE_PKGS[0], dpkg("curl", "7.88"), dpkg("libc6", "2.36-9+deb12u4")),
                               frozenset({"diff0"})),
                              ("c", db(BASE_PKGS[0], dpkg("gcc-12", "12.2"), dpkg("libc6", "2.37")),
                               frozenset({"diff0"}))))
    (conflict,) = found.conflicts
    assert conflict.package == "libc6:amd64"
    assert "version 2.36-9+deb12u4 in b" in conflict.message and "version 2.37 in c" in conflict.message
    assert "2.36-9 in" not in conflict.message  # the base's copy does not vote
    assert "takes c's" in conflict.message
    merged = found.merged[0].content.decode()
    assert "Version: 2.37\n" in merged and "gcc-12" in merged and "curl" in merged  # the highest copy's stanza


SSL = dpkg("libssl3", "3.0.1")
SSL_NEW = dpkg("libssl3", "3.0.9")


def test_an_upgrade_in_one_image_wins_over_the_copies_that_did_not_touch_the_package() -> None:
    # b (curl) upgraded libssl3; c (gcc), highest, still lists the base's 3.0.1 but holds none of its files
    found = pkgdb.plan(_stack(("base", db(*BASE_PKGS, SSL), frozenset()),
                              ("b", db(*BASE_PKGS, dpkg("curl", "7.88"), SSL_NEW), frozenset({"diff0"})),
                              ("c", db(*BASE_PKGS, dpkg("gcc-12", "12.2"), SSL), frozenset({"diff0"}))))
    assert not found.conflicts and not found.differing
    merged = found.merged[0].content.decode()
    assert SSL_NEW + "\n" in merged and "3.0.1" not in merged and "curl" in merged and "gcc-12" in merged
    assert merged.count("Package: ") == 5


def test_a_change_lower_in_an_images_own_layers_counts_unless_a_layer_built_on_it_changed_it_again() -> None:
    # b1 upgraded libssl3, b2 (built on b1) installed curl; c (on the base) did not touch libssl3
    stack = _stack(("base", db(*BASE_PKGS, SSL), frozenset()),
                   ("b1", db(*BASE_PKGS, SSL_NEW), frozenset({"diff0"})),
                   ("b2", db(*BASE_PKGS, dpkg("curl", "7.88"), SSL_NEW), frozenset({"diff0", "diff1"})),
                   ("c", db(*BASE_PKGS, dpkg("gcc-12", "12.2"), SSL), frozenset({"diff0"})))
    found = pkgdb.plan(stack)
    assert not found.conflicts
    merged = found.merged[0].content.decode()
    assert SSL_NEW + "\n" in merged and "3.0.1" not in merged and "curl" in merged and "gcc-12" in merged
    assert [s.name for s in found.merged[0].sources] == ["b2", "c"]
    # b2 put the base's version back over b1's upgrade: b2's say is the one, and it agrees with c
    stack[2] = dataclasses.replace(stack[2], databases=pkgdb.LayerDatabases(
        ((pkgdb.DPKG_STATUS, db(*BASE_PKGS, dpkg("curl", "7.88"), SSL)),)))
    found = pkgdb.plan(stack)
    assert not found.conflicts and b"3.0.9" not in found.merged[0].content


def test_without_the_copy_it_superseded_a_layer_changed_what_its_file_lists_say_it_installed() -> None:
    # neither copy's base is in the stack: b writes info/libssl3:amd64.list, so its libssl3 is its own
    found = pkgdb.plan(_stack(("b", db(dpkg("curl", "7.88"), SSL_NEW), frozenset(), {"curl", "libssl3:amd64"}),
                              ("c", db(dpkg("gcc-12", "12.2"), SSL), frozenset(), {"gcc-12"})))
    assert not found.conflicts
    assert SSL_NEW.encode() in found.merged[0].content and b"3.0.1" not in found.merged[0].content
    both = pkgdb.plan(_stack(("b", db(SSL_NEW), frozenset(), {"libssl3"}),
                             ("c", db(dpkg("gcc-12", "12.2"), SSL), frozenset(), {"libssl3"})))
    (conflict,) = both.conflicts
    assert "version 3.0.9 in b" in conflict.message and "version 3.0.1 in c" in conflict.message
    # no evidence either way: every copy says, as when nothing is known
    neither = pkgdb.plan(_stack(("b", db(dpkg("curl", "7.88"), SSL_NEW), frozenset()), ("c", db(SSL, dpkg("zlib", "1")), frozenset())))
    assert len(neither.conflicts) == 1 and b"3.0.1" in neither.merged[0].content


def test_the_upgrade_in_one_image_is_taken_through_a_build(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = FakeLayer({"var/": None, "var/lib/": None, "var/lib/dpkg/": None,
                      "var/lib/dpkg/status": db(*BASE_PKGS, SSL)}, "ADD base /", "gzip")
    images = {
        "base": FakeImage([base]),
        "curl": FakeImage([base, FakeLayer({"var/lib/dpkg/status": db(*BASE_PKGS, dpkg("curl", "7.88"), SSL_NEW),
                                            "var/lib/dpkg/info/libssl3:amd64.list": b"/usr/lib/libssl.so.3\n",
                                            "usr/lib/libssl.so.3": b"3.0.9"}, "RUN apt-get install curl")]),
        "gcc": FakeImage([base, FakeLayer({"var/lib/dpkg/status": db(*BASE_PKGS, dpkg("gcc-12", "12.2"), SSL)},
                                          "RUN apt-get install gcc")]),
    }
    sources = {}
    for name, fake in images.items():
        write_oci_dir(fake, str(tmp_path / name))
        sources[name] = "oci:" + str(tmp_path / name)
    notes: list[str] = []
    image = build(parse_spec(_spec(sources, "curl", "gcc")), str(tmp_path / "out"), notes=notes)
    assert not [n for n in notes if n.startswith("conflict:")], notes
    status = _file(str(tmp_path / "out"), image.layers[3].descriptor.digest, "var/lib/dpkg/status").decode()
    assert SSL_NEW + "\n" in status and "3.0.1" not in status
    dbs, _ = pkgdb.read_layer(open_image(sources["curl"]).layers[1])
    assert dbs.lists == {"libssl3:amd64"} and dbs.installed(pkgdb.parse_dpkg(SSL_NEW.encode(), "x")[0])


def test_an_upgrade_over_the_layer_built_on_is_no_conflict() -> None:
    found = pkgdb.plan(_stack(("base", db(*BASE_PKGS), frozenset()),
                              ("b", db(BASE_PKGS[0], dpkg("libc6", "2.37")), frozenset({"diff0"})),
                              ("c", db(dpkg("zlib", "1.2")), frozenset())))
    assert not found.conflicts
    merged = found.merged[0].content.decode()
    assert "Version: 2.37" in merged and "Version: 2.36-9" not in merged and "zlib" in merged


def test_a_package_an_image_removed_stays_removed_unless_another_kept_it() -> None:
    removed = pkgdb.plan(_stack(("base", db(*BASE_PKGS), frozenset()),
                                ("b", db(BASE_PKGS[1]), frozenset({"diff0"})),  # purged base-files
                                ("c", db(dpkg("zlib", "1.2")), frozenset())))
    assert not removed.conflicts and b"base-files" not in removed.merged[0].content
    untouched = pkgdb.plan(_stack(("base", db(*BASE_PKGS), frozenset()),
                                  ("b", db(BASE_PKGS[1]), frozenset({"diff0"})),
                                  ("c", db(*BASE_PKGS, dpkg("zlib", "1.2")), frozenset({"diff0"}))))
    # c lists base-files as it found it on the base: b's removal stands
    assert not untouched.conflicts and b"base-files" not in untouched.merged[0].content
    kept = pkgdb.plan(_stack(("base", db(*BASE_PKGS), frozenset()),
                             ("b", db(BASE_PKGS[1]), frozenset({"diff0"})),
                             ("c", db(dpkg("base-files", "12.5"), BASE_PKGS[1], dpkg("zlib", "1.2")),
                              frozenset({"diff0"}))))
    (conflict,) = kept.conflicts
    assert conflict.package == "base-files:amd64"
    assert "removed in b" in conflict.message and "version 12.5 in c" in conflict.message


def test_a_package_is_installed_once_unless_multi_arch_same() -> None:
    # two architectures of one package: dpkg would refuse the database ("multiple non-coinstallable
    # package instances present"); the highest copy's is taken and it is a conflict
    found = pkgdb.plan(_stack(("b", db(dpkg("curl", "7.88"), dpkg("foo", "1.0", arch="amd64")), frozenset()),
                              ("c", db(dpkg("foo", "1.0", arch="all"), dpkg("zlib", "1")), frozenset())))
    (conflict,) = found.conflicts
    assert conflict.package == "foo" and "Architecture amd64 in b" in conflict.message
    assert "Architecture all in c" in conflict.message and "takes c's" in conflict.message
    merged = found.merged[0].content.decode()
    assert merged.count("Package: foo\n") == 1 and "Architecture: all" in merged
    # one side Multi-Arch: same is not enough
    half = pkgdb.plan(_stack(("b", db(dpkg("curl", "7.88"), dpkg("foo", "1.0", multi_arch="same")), frozenset()),
                             ("c", db(dpkg("foo", "1.0", arch="i386"), dpkg("zlib", "1")), frozenset())))
    assert len(half.conflicts) == 1 and half.merged[0].content.count(b"Package: foo\n") == 1
    # Multi-Arch: same packages are installed once per architecture, sorted by name then architecture
    same = pkgdb.plan(_stack(("b", db(dpkg("libc6", "2.36", arch="i386", multi_arch="same")), frozenset()),
                             ("c", db(dpkg("libc6", "2.36", multi_arch="same"), dpkg("zlib", "1")), frozenset())))
    assert not same.conflicts
    merged = same.merged[0].content.decode()
    assert merged.index("Architecture: amd64") < merged.index("Architecture: i386") < merged.index("zlib")
    # an image that changed a package's architecture over its base replaced it: no conflict
    moved = pkgdb.plan(_stack(("base", db(dpkg("foo", "1.0")), frozenset()),
                              ("b", db(dpkg("curl", "7.88"), dpkg("foo", "1.1", arch="all")), frozenset({"diff0"})),
                              ("c", db(dpkg("foo", "1.0"), dpkg("zlib", "1")), frozenset({"diff0"}))))
    assert not moved.conflicts
    merged = moved.merged[0].content.decode()
    assert merged.count("Package: foo\n") == 1 and "Version: 1.1" in merged


def test_same_version_other_fields_differ_is_noted_not_a_conflict() -> None:
    found = pkgdb.plan(_stack(("b", db(dpkg("curl", "7.88")), frozenset()),
                              ("c", db(dpkg("curl", "7.88", extra="\n more"), dpkg("zlib", "1")), frozenset())))
    assert not found.conflicts and found.differing == ("curl:amd64",)
    found = pkgdb.plan(_stack(("b", db(dpkg("curl", "7.88")), frozenset()),
                              ("c", db(dpkg("curl", "7.88", status="deinstall ok config-files")), frozenset())))
    assert len(found.conflicts) == 1 and "Status deinstall ok config-files" in found.conflicts[0].message


def test_apk_installed_databases_merge_the_same_way(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def apk(name: str, version: str) -> str:
        return f"C:Q1{name}=\nP:{name}\nV:{version}\nA:x86_64\nS:100\nT:{name}\nF:usr/bin\nR:{name}\n"

    base_db = (apk("musl", "1.2.4-r2"), apk("busybox", "1.36.1-r5"))
    base = FakeLayer({"lib/": None, "lib/apk/": None, "lib/apk/db/": None, "etc/": None, "etc/apk/": None,
                      "lib/apk/db/installed": db(*base_db), "etc/apk/world": b"busybox\nmusl\n"}, "ADD alpine /", "gzip")
    images = {
        "base": FakeImage([base]),
        "jq": FakeImage([base, FakeLayer({"lib/apk/db/installed": db(*base_db, apk("jq", "1.7-r0")),
                                          "etc/apk/world": b"busybox\njq\nmusl\n"}, "RUN apk add jq")]),
        "yq": FakeImage([base, FakeLayer({"lib/apk/db/installed": db(*base_db, apk("yq", "4.35-r0")),
                                          "etc/apk/world": b"busybox\nmusl\nyq\n"}, "RUN apk add yq")]),
        "old": FakeImage([base, FakeLayer({"lib/apk/db/installed": db(apk("musl", "1.2.3-r0"), base_db[1])}, "RUN x")]),
        "new": FakeImage([base, FakeLayer({"lib/apk/db/installed": db(apk("musl", "1.2.5-r0"), base_db[1])}, "RUN y")]),
    }
    sources = {}
    for name, fake in images.items():
        write_oci_dir(fake, str(tmp_path / name))
        sources[name] = "oci:" + str(tmp_path / name)
    image = build(parse_spec(_spec(sources, "jq", "yq")), str(tmp_path / "out"))
    assert len(image.layers) == 4
    installed = _file(str(tmp_path / "out"), image.layers[3].descriptor.digest, "lib/apk/db/installed").decode()
    assert [l[2:] for l in installed.splitlines() if l.startswith("P:")] == ["busybox", "jq", "musl", "yq"]
    # and the packages asked for, so that a later `apk add` keeps every layer's
    world = _file(str(tmp_path / "out"), image.layers[3].descriptor.digest, "etc/apk/world")
    assert world == b"busybox\njq\nmusl\nyq\n"
    notes: list[str] = []
    image = build(parse_spec(_spec(sources, "old", "yq")), str(tmp_path / "out2"), notes=notes)
    assert not [n for n in notes if n.startswith("conflict:")]  # only "old" changed musl: its version is taken
    installed = _file(str(tmp_path / "out2"), image.layers[3].descriptor.digest, "lib/apk/db/installed").decode()
    assert "V:1.2.3-r0" in installed and "V:1.2.4-r2" not in installed
    build(parse_spec(_spec(sources, "old", "new")), str(tmp_path / "out3"), notes=notes)
    (conflict,) = [n for n in notes if n.startswith("conflict:")]
    assert "package musl (apk" in conflict and "version 1.2.3-r0" in conflict and "version 1.2.5-r0" in conflict


def test_apk_world_merges_three_ways_without_conflicts() -> None:
    def layer(i: int, name: str, world: bytes, below: frozenset) -> pkgdb.StackLayer:
        return pkgdb.StackLayer(i, name, name, f"d{i}", f"diff{i}", below,
                                pkgdb.LayerDatabases(((pkgdb.APK_WORLD, world),)))

    # b dropped busybox and asked for curl; c asked for jq (and lists busybox as it found it)
    found = pkgdb.plan([layer(0, "base", b"busybox\nmusl\n", frozenset()),
                        layer(1, "b", b"curl\nmusl\n", frozenset({"diff0"})),
                        layer(2, "c", b"busybox jq\nmusl", frozenset({"diff0"}))])
    (merged,) = found.merged
    assert merged.path == "etc/apk/world" and merged.content == b"curl\njq\nmusl\n" and merged.packages == 3
    assert not found.conflicts
    # nothing known below: the union
    found = pkgdb.plan([layer(0, "b", b"curl\n", frozenset()), layer(1, "c", b"jq\n", frozenset())])
    assert found.merged[0].content == b"curl\njq\n"


@pytest.mark.parametrize("deletion", [{"var/lib/dpkg/.wh.status": b""}, {"var/lib/dpkg/.wh..wh..opq": b""},
                                      {"var/lib/.wh.dpkg": b""}, {"var/lib/dpkg/status": None}],
                         ids=["whiteout", "opaque", "parent-whiteout", "directory"])
def test_a_deleted_database_does_not_bring_the_copies_below_back(tmp_path, deletion) -> None:  # type: ignore[no-untyped-def]
    (deleting,) = write_and_open(tmp_path, FakeImage([FakeLayer(deletion, "RUN rm -rf /var/lib/dpkg")])).layers
    dbs, _ = pkgdb.read_layer(deleting)
    assert dbs.deleted == {pkgdb.DPKG_STATUS} and not dbs.copies
    assert pkgdb.databases_in_index(list(deletion))
    stack = _stack(("base", db(*BASE_PKGS), frozenset()), ("b", db(*BASE_PKGS, dpkg("curl", "7.88")), frozenset()))
    stack.append(pkgdb.StackLayer(2, "c", "c", "d2", "diff2", frozenset(), dbs))
    found = pkgdb.plan(stack)
    assert not found.merged and not found.conflicts
    (note,) = [n for n in found.notes if "deleted" in n]
    assert "deleted by c" in note and "(base, b)" in note and "the stack shows none" in note
    # copies above the deletion are merged, without those below
    above = _stack(("d", db(dpkg("gcc-12", "12.2")), frozenset()), ("e", db(dpkg("jq", "1.7")), frozenset()))
    stack += [dataclasses.replace(l, position=3 + i, diff_id=f"diff{3 + i}") for i, l in enumerate(above)]
    found = pkgdb.plan(stack)
    (merged,) = found.merged
    assert merged.content == db(dpkg("gcc-12", "12.2"), dpkg("jq", "1.7"))
    assert [s.name for s in merged.sources] == ["d", "e"]


def test_rpm_databases_are_reported_not_merged() -> None:
    rpm = pkgdb.LayerDatabases(rpm=True)
    stack = [pkgdb.StackLayer(0, "a", "[a]", "d0", "diff0", frozenset(), rpm),
             pkgdb.StackLayer(1, "b", "[b]", "d1", "diff1", frozenset(), rpm)]
    found = pkgdb.plan(stack)
    assert not found.merged and len(found.notes) == 1 and "cannot merge" in found.notes[0]


def test_a_database_larger_than_the_cap_is_an_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(pkgdb, "MAX_DATABASE", 10)
    with pytest.raises(InvalidSource, match="larger than .*merge_package_databases=False"):
        pkgdb._read_capped(io.BytesIO(b"x" * 11), pkgdb.DPKG_STATUS, "layer 1")


def test_a_status_file_that_is_not_one_is_an_error() -> None:
    with pytest.raises(InvalidSource, match="without a Package field"):
        pkgdb.parse_dpkg(b"Hello: world\n", "layer 1")


def test_the_cli_makes_the_layer_once_for_compose_and_check(tmp_path, sources, capsys) -> None:  # type: ignore[no-untyped-def]
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(_spec(sources, "curl", "gcc")))
    for name in ("base", "curl", "gcc"):
        assert main(["scan", sources[name], "--layer", "-1", "--out", str(tmp_path / f"{name}.json")]) == 0
    indexes = [f"--index={tmp_path / n}.json" for n in ("base", "curl", "gcc")]
    merge_dir = str(tmp_path / "merge")
    assert main(["package-db-layer", str(spec_path), "--out", merge_dir, *indexes]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["read"] == 3 and summary["layer"] and summary["conflicts"] == 0
    inline = build(parse_spec(_spec(sources, "curl", "gcc")), str(tmp_path / "inline"))
    given = build(parse_spec(_spec(sources, "curl", "gcc", package_db_layer=merge_dir)), str(tmp_path / "given"))
    assert given.manifest_descriptor == inline.manifest_descriptor
    assert read_index(os.path.join(merge_dir, "index.json"))[0].on_top
    assert main(["check", *indexes, f"--package-db={merge_dir}", "--on-conflict=error",
                 "--no-check-dependencies"]) == 0
    assert "info: /var/lib/dpkg/status differs" in capsys.readouterr().out


@pytest.mark.parametrize("on_conflict,severity", [("error", "error"), ("warn", "warning"), ("ignore", None)],
                         ids=["error", "warn", "ignore"])
def test_the_check_grades_package_conflicts_by_on_conflict(on_conflict, severity) -> None:  # type: ignore[no-untyped-def]
    found = pkgdb.plan(_stack(("b", db(dpkg("libc6", "2.36")), frozenset()),
                              ("c", db(dpkg("libc6", "2.37"), dpkg("zlib", "1")), frozenset())))
    report = check([], Policy(on_conflict, check_dependencies=False), merge_report=found.report())
    if severity is None:
        assert not report.findings
        return
    (finding,) = report.findings
    assert finding.severity == severity and "package libc6:amd64 (dpkg" in finding.message
    assert "version 2.36 in b" in finding.message and "version 2.37 in c" in finding.message
    if severity == "error":
        assert "package libc6:amd64" in report.error_summary()
