"""Tests of building from a spec: bundles, selectors, the files layer, the audit trail, nothing left on failure."""
from __future__ import annotations

import json
import os
import re
import tarfile

import pytest

from lamina.build import build
from lamina.errors import DigestMismatch, InvalidSource, SpecError
from lamina.extract import extract
from lamina.model import ANN_SELECTOR, ANN_SOURCE
from lamina.select import parse_selector, select
from lamina.sources import open_image
from lamina.spec import parse_spec
from lamina.validate import validate
from lamina_testing import hostile
from lamina_testing.images import FakeImage, FakeLayer, leftovers, write_docker_classic, write_docker_oci, write_oci_dir

BASE = FakeImage([FakeLayer({"etc/os-release": b"ID=base\n"}, "ADD base /"), FakeLayer({"bin/sh": b"sh"}, "RUN sh", "gzip")])
TOOLS = FakeImage([FakeLayer({"usr/": None}, "ADD tools /"), FakeLayer({"usr/bin/jq": b"jq" * 99}, "RUN apk add jq", "gzip"),
                   FakeLayer({"usr/bin/yq": b"yq"}, "RUN apk add yq", "zstd")])


def _bundle(tmp_path, name: str, source: str, selector: str, recorded: str) -> str:  # type: ignore[no-untyped-def]
    image = open_image(source, name=recorded)
    out = str(tmp_path / "bundles" / name)
    extract(image, select(image, parse_selector(selector)), out, selector)
    return out


@pytest.fixture
def bundles(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    write_oci_dir(BASE, str(tmp_path / "base"))
    write_docker_classic({"tools:1": TOOLS}, str(tmp_path / "tools.tar"))
    return {
        "base": _bundle(tmp_path, "base", "oci:" + str(tmp_path / "base"), ":", "//images:base"),
        "jq": _bundle(tmp_path, "jq", str(tmp_path / "tools.tar"), "created_by=jq", "//images:tools"),
        "yq": _bundle(tmp_path, "yq", str(tmp_path / "tools.tar"), "-1", "//images:tools"),
    }


def test_compose_from_bundles(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    spec = parse_spec({"base": {"source": bundles["base"], "verified": True},
                       "layers": [{"source": bundles["yq"], "verified": True}, {"source": "oci:" + bundles["jq"], "verified": True}],
                       "format": "oci", "tags": ["app:1"]})
    out = str(tmp_path / "out")
    composed = build(spec, out)
    image = open_image("oci:" + out)
    tools = open_image(str(tmp_path / "tools.tar"))
    base = open_image(bundles["base"])
    assert image.diff_ids == base.diff_ids + (tools.layers[2].diff_id, tools.layers[1].diff_id)
    assert [l.descriptor.digest for l in image.layers[2:]] == [tools.layers[2].descriptor.digest, tools.layers[1].descriptor.digest]
    annotations = [dict(l.descriptor.annotations) for l in image.layers]
    assert annotations[:2] == [{}, {}]
    assert [(a[ANN_SOURCE], a[ANN_SELECTOR]) for a in annotations[2:]] == [("//images:tools", "-1"), ("//images:tools", "created_by=jq")]
    assert [l.verified_by for l in composed.layers] == ["lamina extract"] * 4  # every blob came verified from a bundle ...
    jq_blob = os.path.join("blobs", "sha256", tools.layers[1].descriptor.hex)
    assert os.stat(os.path.join(out, jq_blob)).st_ino == os.stat(os.path.join(bundles["jq"], jq_blob)).st_ino  # ... so is linked
    assert validate(image).layers == 4
    assert leftovers(str(tmp_path)) == []


def test_bundles_are_verified_unless_the_spec_vouches_for_them(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    # A bundle's lamina-selection.json says which layers it holds, not that anyone checked them.
    plain = build(parse_spec({"base": bundles["base"], "layers": [bundles["yq"]], "format": "oci"}), str(tmp_path / "plain"))
    assert [l.verified_by for l in plain.layers] == [""] * 3
    with pytest.raises(SpecError, match="vouches for a bundle `lamina extract` wrote, and this is not one"):
        build(parse_spec({"base": {"source": "oci:" + str(tmp_path / "base"), "verified": True}, "format": "oci"}),
              str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")


def test_layer_selectors_on_plain_sources_and_names(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    write_docker_oci(TOOLS, "tools:2", str(tmp_path / "tools25.tar"))
    spec = parse_spec({"base": "oci:" + str(tmp_path / "base"),
                       "layers": [{"source": str(tmp_path / "tools25.tar"), "layer": "1:", "name": "tools25"}],
                       "config": {"workdir": "/srv"}, "format": "docker-archive"})
    out = str(tmp_path / "nested" / "dir" / "out.tar")
    composed = build(spec, out)
    assert [l.verified_by for l in composed.layers] == [""] * 4
    image = open_image("oci-archive:" + out)  # the docker reader sees no annotations: manifest.json has none
    assert [dict(l.descriptor.annotations).get(ANN_SOURCE) for l in image.layers] == [None, None, "tools25", "tools25"]
    assert image.config["config"]["WorkingDir"] == "/srv"
    assert validate(image).layers == 4


def test_files_become_one_new_top_layer(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_bytes(b"<html>")
    (tmp_path / "conf").write_bytes(b"c=1")
    spec = parse_spec({"base": bundles["base"], "files": [{"src": str(tmp_path / "conf"), "dest": "/etc/app.conf"}],
                       "file_dirs": [{"src": str(tmp_path / "site"), "dest": "/srv/www"}], "format": "oci-archive"})
    out = str(tmp_path / "out.tar")
    build(spec, out)
    image = open_image(out)
    assert len(image.layers) == 3
    assert image.layers[2].created_by == "lamina: files"
    with image.layers[2].open_uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tf:
        names = [m.name for m in tf]
    assert names == ["etc", "etc/app.conf", "srv", "srv/www", "srv/www/index.html"]
    assert validate(image).layers == 3
    assert leftovers(str(tmp_path)) == []


def test_a_files_layer_made_once_composes_the_same_image(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    from lamina.analyze.below import from_layers
    from lamina.newlayer import FILES_LAYER_BLOB, write_files_layer_dir

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_bytes(b"<html>")
    (tmp_path / "conf").write_bytes(b"c=1")
    files = {"files": [{"src": str(tmp_path / "conf"), "dest": "/etc/app.conf"}],
             "file_dirs": [{"src": str(tmp_path / "site"), "dest": "/srv/www"}]}
    direct = build(parse_spec({"base": bundles["base"], **files, "format": "oci"}), str(tmp_path / "direct"))
    below = from_layers(open_image(bundles["base"]).layers)  # as `lamina files-layer --below` reads the scans
    write_files_layer_dir([("/etc/app.conf", str(tmp_path / "conf")), ("/srv/www/index.html", str(tmp_path / "site" / "index.html"))],
                          str(tmp_path / "fl"), below)
    audit = str(tmp_path / "pre.layers.json")
    pre = build(parse_spec({"base": bundles["base"], "files_layer": str(tmp_path / "fl"), "format": "oci"}),
                str(tmp_path / "pre"), audit=audit)
    assert pre.manifest_descriptor.digest == direct.manifest_descriptor.digest  # byte-identical image
    with open(audit) as f:
        assert json.load(f)["layers"][-1]["selector"] == "files"
    assert validate(open_image("oci:" + str(tmp_path / "pre"))).layers == 3

    # re-making the layer in the same directory leaves the image composed from it intact (no in-place rewrite)
    before = (tmp_path / "pre" / "blobs" / "sha256" / pre.layers[-1].descriptor.digest[7:]).read_bytes()
    write_files_layer_dir([("/etc/other.conf", str(tmp_path / "conf"))], str(tmp_path / "fl"))
    assert (tmp_path / "pre" / "blobs" / "sha256" / pre.layers[-1].descriptor.digest[7:]).read_bytes() == before
    assert validate(open_image("oci:" + str(tmp_path / "pre"))).layers == 3


@pytest.mark.parametrize("fmt", ["oci", "oci-archive", "docker-archive"])
@pytest.mark.parametrize("lie", ["blob", "diff_id"])
def test_a_files_layer_that_does_not_match_its_description_fails_compose(tmp_path, bundles: dict[str, str],  # type: ignore[no-untyped-def]
                                                                         fmt: str, lie: str) -> None:
    from lamina.newlayer import FILES_LAYER_BLOB, FILES_LAYER_META, write_files_layer_dir

    (tmp_path / "conf").write_bytes(b"c=1" * 1000)
    layer = write_files_layer_dir([("/etc/app.conf", str(tmp_path / "conf"))], str(tmp_path / "fl"))
    if lie == "blob":  # same size, other bytes: the digest check catches it
        blob = tmp_path / "fl" / FILES_LAYER_BLOB
        data = bytearray(blob.read_bytes())
        data[-9] ^= 0xFF
        blob.write_bytes(bytes(data))
        message = "blob content is sha256:"
    else:  # the right blob, described with another diff_id: the config would lie
        meta = json.loads((tmp_path / "fl" / FILES_LAYER_META).read_text())
        meta["diff_id"] = "sha256:" + "0" * 64
        (tmp_path / "fl" / FILES_LAYER_META).write_text(json.dumps(meta))
        message = "sha256:" + layer.diff_id[7:]
    out = tmp_path / "dest" / "out"
    with pytest.raises(DigestMismatch, match=f"files_layer {tmp_path}/fl: layer sha256:.*{message}"):
        build(parse_spec({"base": bundles["base"], "files_layer": str(tmp_path / "fl"), "format": fmt}), str(out))
    assert not out.exists() and leftovers(str(tmp_path / "dest")) == []


def test_files_layer_spec_errors(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "conf").write_bytes(b"c=1")
    with pytest.raises(SpecError, match="give it, or files/file_dirs, not both"):
        parse_spec({"base": bundles["base"], "files_layer": str(tmp_path),
                    "files": [{"src": str(tmp_path / "conf"), "dest": "/c"}]})
    with pytest.raises(SpecError, match="has no files-layer.json: make it with `lamina files-layer`"):
        build(parse_spec({"base": bundles["base"], "files_layer": str(tmp_path / "empty")}), str(tmp_path / "o.tar"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "files-layer.json").write_text('{"digest": "md5:x"}')
    with pytest.raises(SpecError, match="is not a description `lamina files-layer` writes"):
        build(parse_spec({"base": bundles["base"], "files_layer": str(tmp_path / "bad")}), str(tmp_path / "o.tar"))


@pytest.mark.parametrize("key", ["digest", "diff_id"])
@pytest.mark.parametrize("fmt", ["oci", "oci-archive"])
def test_a_files_layer_description_naming_a_path_not_a_digest_is_refused(tmp_path, bundles: dict[str, str],  # type: ignore[no-untyped-def]
                                                                         key: str, fmt: str) -> None:
    from lamina.newlayer import FILES_LAYER_META, write_files_layer_dir

    (tmp_path / "conf").write_bytes(b"c=1")
    write_files_layer_dir([("/etc/app.conf", str(tmp_path / "conf"))], str(tmp_path / "fl"))
    meta = json.loads((tmp_path / "fl" / FILES_LAYER_META).read_text())
    meta[key] = "sha256:../../../../escaped"
    (tmp_path / "fl" / FILES_LAYER_META).write_text(json.dumps(meta))
    out = tmp_path / "dest" / "out"
    with pytest.raises(InvalidSource, match=re.escape(f"files_layer '{tmp_path}/fl': files-layer.json {key}: "
                                                      "'sha256:../../../../escaped' is not a sha256 digest")):
        build(parse_spec({"base": bundles["base"], "files_layer": str(tmp_path / "fl"), "format": fmt}), str(out))
    assert not out.exists() and leftovers(str(tmp_path / "dest")) == []
    assert [p for p in tmp_path.rglob("*escaped*")] == []


def test_audit_trail_records_where_every_layer_came_from(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "conf").write_bytes(b"c=1")
    spec = parse_spec({"base": {"source": bundles["base"], "target": "//images:base"}, "target": "//images:app",
                       "layers": [{"source": bundles["yq"], "target": "//images:yq"},
                                  {"source": str(tmp_path / "tools.tar"), "layer": "created_by=jq", "name": "//images:tools",
                                   "target": "//images:jq"}],
                       "files": [{"src": str(tmp_path / "conf"), "dest": "/etc/app.conf"}], "format": "oci"})
    out, audit = str(tmp_path / "out"), str(tmp_path / "out.layers.json")
    composed = build(spec, out, audit=audit)
    with open(audit) as f:
        trail = json.load(f)
    image = open_image("oci:" + out)
    assert (trail["manifest"], trail["config"]) == (composed.manifest_descriptor.digest, composed.config_descriptor.digest)
    rows = trail["layers"]
    assert [(r["index"], r["digest"], r["diff_id"], r["size"]) for r in rows] == [
        (i, l.descriptor.digest, l.diff_id, l.descriptor.size) for i, l in enumerate(image.layers)]
    assert [(r["source"], r["source_index"], r["selector"], r["target"]) for r in rows] == [
        ("//images:base", 0, "base", "//images:base"),  # the bundle's recorded source
        ("//images:base", 1, "base", "//images:base"),
        ("//images:tools", 2, "-1", "//images:yq"),
        ("//images:tools", 1, "created_by=jq", "//images:jq"),
        ("files", None, "files", "//images:app"),
    ]
    assert [r["created_by"] for r in rows[2:]] == ["RUN apk add yq", "RUN apk add jq", "lamina: files"]


def test_audit_trail_is_not_written_when_the_build_fails(tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    spec = parse_spec({"base": bundles["base"], "layers": [{"source": bundles["yq"], "layer": "0"}], "format": "oci-archive"})
    with pytest.raises(InvalidSource):
        build(spec, str(tmp_path / "out.tar"), audit=str(tmp_path / "out.layers.json"))
    assert not (tmp_path / "out.layers.json").exists() and not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ({"base": "BUNDLE:yq"}, SpecError, "a base must be a whole image, not some of its layers"),
        ({"base": "BUNDLE:base", "layers": ["SRC:base"]}, SpecError, r"name the layers to take with \"layer\""),
        ({"base": "BUNDLE:base", "layers": [{"source": "BUNDLE:yq", "layer": "0"}], "format": "oci-archive"},
         InvalidSource, "has no bytes in its source"),
        ({"base": "BUNDLE:base", "file_dirs": [{"src": "SRC:nope"}]}, SpecError, "is not a directory"),
    ],
    ids=["partial-base", "plain-source-without-layer", "layer-not-in-bundle", "file-dir-missing"],
)
def test_build_errors_leave_nothing(tmp_path, bundles: dict[str, str], spec: dict, error: type, message: str) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(spec)
    for name, path in bundles.items():
        text = text.replace(f"BUNDLE:{name}", path)
    text = text.replace("SRC:", str(tmp_path) + "/")
    out = tmp_path / "dest" / "out.tar"
    with pytest.raises(error, match=message):
        build(parse_spec(json.loads(text)), str(out))
    assert not out.exists()
    assert not (tmp_path / "dest").exists() or leftovers(str(tmp_path / "dest")) == []


@pytest.mark.parametrize("as_base", [True, False], ids=["base", "layer"])
@pytest.mark.parametrize("case", hostile.CASES, ids=[c.id for c in hostile.CASES])
def test_hostile_source_fails_compose_and_leaves_nothing(tmp_path, case: hostile.Case, as_base: bool) -> None:  # type: ignore[no-untyped-def]
    src = case.build(str(tmp_path))
    platform = case.platform or "linux/amd64"
    data = ({"base": {"source": src, "layer": ":"}, "platform": platform} if as_base
            else {"platform": platform, "layers": [{"source": src, "layer": ":"}]})
    out = tmp_path / "dest" / "out.tar"
    with pytest.raises(case.error) as e:
        build(parse_spec(data), str(out))
    assert re.search(case.message, str(e.value)), str(e.value)
    assert not out.exists()
    assert not (tmp_path / "dest").exists() or leftovers(str(tmp_path / "dest")) == []


def test_files_go_through_the_symlinks_of_a_usr_merged_base_as_copy_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lamina_testing.images import FakeImage, FakeLayer

    base = FakeImage([FakeLayer({"usr/": None, "usr/bin/": None, "usr/bin/sh": b"sh", "bin": "->usr/bin"})])
    write_oci_dir(base, str(tmp_path / "base"))
    (tmp_path / "tool").write_bytes(b"tool")
    spec = parse_spec({"base": "oci:" + str(tmp_path / "base"), "files": [{"src": str(tmp_path / "tool"), "dest": "/bin/tool"}],
                       "format": "oci"})
    build(spec, str(tmp_path / "out"))
    with open_image("oci:" + str(tmp_path / "out")).layers[-1].open_uncompressed() as f, \
            tarfile.open(fileobj=f, mode="r|") as tf:
        assert [m.name for m in tf] == ["usr", "usr/bin", "usr/bin/tool"]  # no bin/ entry to replace the symlink with


def test_an_oci_layout_can_leave_its_bundled_layer_blobs_for_the_caller_to_place(
        tmp_path, bundles: dict[str, str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # What the Pants plugin does: the compose writes only what is new (config, manifest, index),
    # lists the bundles' blobs, and Pants merges those files from the digests it already holds.
    monkeypatch.chdir(tmp_path)
    rel = {k: os.path.relpath(v, tmp_path) for k, v in bundles.items()}
    spec = {"base": {"source": rel["base"], "verified": True},
            "layers": [{"source": rel["yq"], "verified": True}, {"source": rel["jq"]}], "format": "oci"}
    whole = build(parse_spec(spec), "whole")
    build(parse_spec(spec), "part", placed="placed.json")
    placed = json.loads(open("placed.json").read())["blobs"]
    vouched = [l for l in whole.layers if l.verified_by]
    assert [b["digest"] for b in placed] == [l.descriptor.digest for l in vouched]  # jq's bundle is not vouched for
    assert all(b["path"].startswith(("bundles/base/blobs/sha256/", "bundles/yq/blobs/sha256/")) for b in placed)
    for b in placed:
        assert not os.path.exists(os.path.join("part", "blobs", "sha256", b["digest"].split(":")[1]))
        os.link(b["path"], os.path.join("part", "blobs", "sha256", b["digest"].split(":")[1]))
    tree = lambda root: sorted((os.path.relpath(os.path.join(d, f), root), open(os.path.join(d, f), "rb").read())  # noqa: E731
                               for d, _, fs in os.walk(root) for f in fs)
    assert tree("part") == tree("whole")  # once placed, byte for byte the layout composed whole
    assert validate(open_image("oci:part")).layers == 4


def test_placed_blobs_are_refused_for_an_archive_and_an_absolute_bundle_is_written_as_before(
        tmp_path, bundles: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    spec = parse_spec({"base": {"source": bundles["base"], "verified": True}, "format": "oci-archive"})
    with pytest.raises(SpecError, match="only an oci layout can leave its layer blobs"):
        build(spec, str(tmp_path / "x.tar"), placed=str(tmp_path / "placed.json"))
    assert not os.path.exists(tmp_path / "x.tar") and not os.path.exists(tmp_path / "placed.json")
    spec = parse_spec({"base": {"source": bundles["base"], "verified": True}, "format": "oci"})
    build(spec, str(tmp_path / "abs"), placed=str(tmp_path / "placed.json"))
    assert json.loads((tmp_path / "placed.json").read_text()) == {"blobs": []}
    assert validate(open_image("oci:" + str(tmp_path / "abs"))).layers == 2
