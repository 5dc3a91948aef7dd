"""Tests of extract: a bundle holds the selected layers and describes the whole source; failures leave nothing."""
from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest

from lamina.errors import InvalidSource
from lamina.extract import SELECTION_FILE, Selection, extract, read_selection
from lamina.image import Image
from lamina.model import Platform
from lamina.select import parse_selector, select
from lamina.sources import open_image
from lamina.validate import validate
from lamina_testing import hostile
from lamina_testing.images import FakeImage, FakeLayer, leftovers, sha, tree, write_docker_classic, write_oci_dir
from lamina_testing.kernel import count_kernel_copies

FAKE = FakeImage([
    FakeLayer({"etc/os-release": b"ID=fake\n"}, "ADD rootfs /"),
    FakeLayer({"usr/bin/tool": b"tool" * 100}, "RUN make tool", "gzip"),
    FakeLayer({"app/x": b"x"}, "COPY x /app", "zstd"),
])


@pytest.fixture
def source(tmp_path) -> Image:  # type: ignore[no-untyped-def]
    write_docker_classic({"app:1": FAKE}, str(tmp_path / "saved.tar"))
    return open_image("docker-archive:" + str(tmp_path / "saved.tar"), name="//third_party:app")


def _extract(image: Image, selector: str, out: str) -> Selection:
    sel = parse_selector(selector)
    return extract(image, select(image, sel), out, str(sel))


def test_bundle_holds_only_the_selected_layers(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "bundle")
    selection = _extract(source, "1:", out)
    assert selection == Selection("//third_party:app", "1:", (1, 2))
    blobs = set(os.listdir(os.path.join(out, "blobs", "sha256")))
    manifest_hex = json.load(open(os.path.join(out, "index.json")))["manifests"][0]["digest"][7:]
    assert blobs == {source.layers[1].descriptor.hex, source.layers[2].descriptor.hex,
                     source.config_descriptor.hex, manifest_hex}
    assert leftovers(str(tmp_path)) == []


def test_bundle_reads_as_an_oci_layout_describing_the_whole_source(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "bundle")
    _extract(source, "-1", out)
    bundle = open_image("oci:" + out)
    assert bundle.config_bytes == source.config_bytes
    assert bundle.diff_ids == source.diff_ids
    assert [l.descriptor.digest for l in bundle.layers] == [l.descriptor.digest for l in source.layers]
    assert [l.opener is not None for l in bundle.layers] == [False, False, True]
    with bundle.layers[2].open_blob() as f:
        assert f.read() == FAKE.layers[2].blob


def test_selection_file_records_source_selector_and_layers(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "bundle")
    _extract(source, "created_by=make", out)
    data = json.load(open(os.path.join(out, SELECTION_FILE)))
    assert data == {
        "source": "//third_party:app",
        "selector": "created_by=make",
        "platform": "linux/amd64",
        "layers": [{
            "index": 1,
            "descriptor": {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": sha(FAKE.layers[1].blob), "size": len(FAKE.layers[1].blob)},
            "diff_id": sha(FAKE.layers[1].tar),
            "created_by": "RUN make tool",
        }],
    }
    assert read_selection(out) == Selection("//third_party:app", "created_by=make", (1,))
    assert read_selection(str(tmp_path)) is None


def test_extracting_everything_gives_a_complete_image(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "bundle")
    _extract(source, ":", out)
    assert validate(open_image(out)).layers == 3


def test_extract_is_deterministic_and_replaces_old_output(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _extract(source, ":", a)
    _extract(source, ":", b)
    assert tree(a) == tree(b)
    _extract(source, "0", a)  # over an existing bundle
    assert read_selection(a) == Selection("//third_party:app", "0", (0,))
    assert len(os.listdir(os.path.join(a, "blobs", "sha256"))) == 3
    assert leftovers(str(tmp_path)) == []


def test_malformed_selection_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / SELECTION_FILE).write_text('{"source": "x", "layers": [{}]}')
    with pytest.raises(InvalidSource, match="malformed selection file"):
        read_selection(str(tmp_path))
    (tmp_path / SELECTION_FILE).write_text("{")
    with pytest.raises(InvalidSource, match="malformed JSON"):
        read_selection(str(tmp_path))


@pytest.mark.parametrize("index", [False, True], ids=["copy", "copy-and-index"])
@pytest.mark.parametrize("case", hostile.CASES, ids=[c.id for c in hostile.CASES])
def test_hostile_source_fails_extract_and_leaves_nothing(tmp_path, case: hostile.Case, index: bool) -> None:  # type: ignore[no-untyped-def]
    src = case.build(str(tmp_path))
    out = tmp_path / "out" / "bundle"
    with pytest.raises(case.error) as e:
        image = open_image(src, platform=Platform.parse(case.platform) if case.platform else None)
        extract(image, image.layers, str(out), ":", index=index)
    assert re.search(case.message, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)
    assert not os.path.lexists(out)
    assert not (tmp_path / "out").exists() or leftovers(str(tmp_path / "out")) == []


def test_an_uncompressed_layer_is_copied_by_the_kernel_and_checked(tmp_path, source: Image,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    copies = count_kernel_copies(monkeypatch)
    _extract(source, ":", str(tmp_path / "bundle"))
    assert copies == [len(FAKE.layers[0].blob)]  # the gzip and zstd layers are checked as they stream
    blob = tmp_path / "bundle" / "blobs" / "sha256" / sha(FAKE.layers[0].blob).split(":")[1]
    assert blob.read_bytes() == FAKE.layers[0].blob

    # The same layer with one byte changed in the archive: the copy is refused, nothing is left.
    archive = tmp_path / "saved.tar"
    data = bytearray(archive.read_bytes())
    at = bytes(data).index(b"ID=fake")
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    flipped = open_image("docker-archive:" + str(archive))
    with pytest.raises(Exception, match="blob content is sha256:"):
        _extract(flipped, "0", str(tmp_path / "flipped"))
    assert not (tmp_path / "flipped").exists() and leftovers(str(tmp_path)) == []


def test_index_is_made_in_the_copying_pass_and_equals_a_scan_of_the_bundle(tmp_path, source: Image,  # type: ignore[no-untyped-def]
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.analyze.index import dumps, read_index
    from lamina.analyze.scan import scan_source
    from lamina.extract import INDEX_FILE

    opened: list = []
    layers = []
    for layer in source.layers:  # count how often each blob is opened: once, for copy and index alike
        def counting(layer=layer):  # type: ignore[no-untyped-def]
            opened.append(layer.index)
            return layer.opener()
        layers.append(dataclasses.replace(layer, opener=counting))
    counted = dataclasses.replace(source, layers=tuple(layers))
    selection = extract(counted, counted.layers[1:], str(tmp_path / "indexed"), "1:", index=True)
    assert sorted(opened) == [1, 2]
    plain = tmp_path / "plain"
    _extract(source, "1:", str(plain))
    indexed = read_index(str(tmp_path / "indexed" / INDEX_FILE))
    assert dumps(indexed) == dumps(scan_source(str(plain)).layers)  # what `lamina scan BUNDLE` writes
    assert [l.index for l in indexed] == list(selection.indices) == [1, 2]
    assert {p: d for p, d in tree(str(tmp_path / "indexed")).items() if p != INDEX_FILE} == tree(str(plain))


def test_an_indexed_extraction_says_whether_its_layers_hold_a_package_database(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    # what the Pants plugin reads to leave out the package database merge of a stack that has none
    with_os_release = extract(source, source.layers[:1], str(tmp_path / "a"), "0", index=True)
    without = extract(source, source.layers[1:], str(tmp_path / "b"), "1:", index=True)
    unindexed = extract(source, source.layers[:1], str(tmp_path / "c"), "0")
    assert (with_os_release.package_databases, without.package_databases, unindexed.package_databases) == (True, False, None)
    # not part of the bundle: the same bytes as before
    assert json.load(open(tmp_path / "a" / SELECTION_FILE)) == json.load(open(tmp_path / "c" / SELECTION_FILE))


@pytest.mark.parametrize("lie", ["digest", "diff_id"])
def test_an_indexed_copy_that_does_not_verify_leaves_nothing(tmp_path, lie: str) -> None:  # type: ignore[no-untyped-def]
    from lamina_testing.images import write_oci_dir

    diff_ids = {"rootfs": {"type": "layers", "diff_ids": [sha(l.tar) for l in FAKE.layers[:2]] + [sha(b"lie")]}}
    fake = FakeImage(FAKE.layers, config_extra=diff_ids if lie == "diff_id" else {})
    write_oci_dir(fake, str(tmp_path / "src"))
    if lie == "digest":
        from lamina_testing.images import blob_file, flip_byte, oci_manifest

        flip_byte(blob_file(str(tmp_path / "src"), oci_manifest(str(tmp_path / "src"))["layers"][2]["digest"]), 20)
    image = open_image("oci:" + str(tmp_path / "src"))
    message = "uncompressed content is .*, the config says " + sha(b"lie") if lie == "diff_id" else ""
    with pytest.raises(Exception, match=message or "blob content is sha256:|corrupt zstd|not a readable tar"):
        extract(image, image.layers[2:], str(tmp_path / "out" / "b"), "-1", index=True)
    assert not (tmp_path / "out" / "b").exists() and leftovers(str(tmp_path / "out")) == []
    assert os.path.isfile(str(image.layers[2].path))  # the source's blob, hard-linked to be checked, stays


def test_a_blob_that_is_a_file_is_linked_into_the_bundle_and_read_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lamina.extract import INDEX_FILE
    from lamina_testing.images import write_oci_dir

    write_oci_dir(FAKE, str(tmp_path / "src"))
    image = open_image("oci:" + str(tmp_path / "src"))
    extract(image, image.layers, str(tmp_path / "b"), ":", index=True)
    for layer in image.layers:
        stored = tmp_path / "b" / "blobs" / "sha256" / layer.descriptor.hex
        assert os.stat(stored).st_ino == os.stat(str(layer.path)).st_ino
    assert (tmp_path / "b" / INDEX_FILE).is_file()


def test_the_test_pause_hook_stops_extract_with_the_bytes_unpublished(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import lamina.cli

    write_oci_dir(FakeImage([FakeLayer({"a": b"a" * 5000})]), str(tmp_path / "img"))
    marker = tmp_path / "paused"
    monkeypatch.setenv("LAMINA_TEST_PAUSE_AT", f"copy:{marker}")

    class Paused(Exception):
        pass

    def stop(seconds: float) -> None:
        partial = marker.read_text()
        assert partial.endswith(".tmp") and os.path.getsize(partial) > 0  # the bytes are there, unpublished
        raise Paused()

    monkeypatch.setattr(lamina.cli.time, "sleep", stop)
    with pytest.raises(Paused):
        lamina.cli.main(["extract", "oci:" + str(tmp_path / "img"), "--layer", "0", "--out", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()
    monkeypatch.delenv("LAMINA_TEST_PAUSE_AT")
    assert lamina.cli.main(["extract", "oci:" + str(tmp_path / "img"), "--layer", "0", "--out", str(tmp_path / "b")]) == 0


def test_a_bundle_keeps_where_the_engine_says_its_source_image_is_kept(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    from lamina.build import _open
    from lamina.image import with_copies
    from lamina.spec import LayerSpec

    copies = ("docker://127.0.0.1:5000/src/a@sha256:" + "1" * 64,)
    image = with_copies(source, copies)
    out = str(tmp_path / "bundle")
    extract(image, select(image, parse_selector("-1")), out, "-1")
    assert read_selection(out).copies == copies
    # composing from the bundle gives its layers the same copies, for a push to mount from
    _, layers, _ = _open(LayerSpec(out, None, None), None)
    assert [l.copies for l in layers] == [copies]
    # a bundle without them reads as before; a malformed list is one clear error
    plain = str(tmp_path / "plain")
    extract(source, select(source, parse_selector("-1")), plain, "-1")
    assert read_selection(plain).copies == ()
    with open(os.path.join(out, SELECTION_FILE)) as f:
        data = json.load(f)
    data["registry_copies"] = "docker://x"
    with open(os.path.join(out, SELECTION_FILE), "w") as f:
        json.dump(data, f)
    with pytest.raises(InvalidSource, match="registry_copies"):
        read_selection(out)


def test_a_shallow_bundle_holds_no_layer_bytes_and_reads_them_from_the_registry_only_when_asked(tmp_path, source: Image) -> None:  # type: ignore[no-untyped-def]
    from lamina.build import _open
    from lamina.spec import LayerSpec

    out = str(tmp_path / "bundle")
    ref = "docker://127.0.0.1:1/src/a@sha256:" + "3" * 64  # nothing listens there: it must not be asked
    extract(source, select(source, parse_selector("-1")), out, "-1", fetch_from=ref)
    assert read_selection(out).fetch_from == ref
    assert not [n for n in tree(out) if n.startswith("blobs/") and n.endswith(source.layers[-1].descriptor.hex)]
    _, layers, _ = _open(LayerSpec(out, None, None, verified=True), None)
    # bytes read from the registry are checked as they are read: never vouched for by the bundle
    assert [(l.has_bytes, l.verified_by) for l in layers] == [(True, "")]
    with pytest.raises(InvalidSource, match="shallow"):
        extract(source, select(source, parse_selector("-1")), str(tmp_path / "x"), "-1", index=True, fetch_from=ref)
