"""Tests of compose: digests and diff_ids kept, added layers' annotations and history, config overrides."""
from __future__ import annotations

import json

import pytest

import dataclasses

from lamina.compose import ConfigOverrides, compose
from lamina.errors import PlatformMismatch
from lamina.image import Image, Layer, Taken
from lamina.model import ANN_SELECTOR, ANN_SOURCE, ANN_SOURCE_DIGEST, EPOCH, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST, Platform
from lamina.select import describe
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, sha, write_docker_classic, write_oci_dir

BASE = FakeImage(
    [FakeLayer({"etc/os-release": b"ID=base\n"}, "ADD base /"), FakeLayer({"bin/sh": b"sh"}, "RUN install sh", "gzip")],
    empty_history=[(2, 'CMD ["/bin/sh"]')],
    config_extra={"config": {"Env": ["PATH=/bin", "LANG=C"], "Cmd": ["/bin/sh"], "Entrypoint": ["/init"],
                             "Labels": {"a": "1"}, "ExposedPorts": {"80/tcp": {}}}},
)
SOURCE = FakeImage(
    [FakeLayer({"opt/one": b"1"}, "", "gzip"), FakeLayer({"opt/two": b"2"}, "", "none"), FakeLayer({"opt/three": b"3"}, "", "zstd")],
    config_extra={"history": [{"created_by": "RUN one"}, {"created_by": "RUN two"}, {"comment": "no created_by"}]},
)


def _open(tmp_path, name: str, fake: FakeImage) -> Image:  # type: ignore[no-untyped-def]
    write_oci_dir(fake, str(tmp_path / name))
    return open_image("oci:" + str(tmp_path / name), name="//images:" + name)


@pytest.fixture
def base(tmp_path) -> Image:  # type: ignore[no-untyped-def]
    return _open(tmp_path, "base", BASE)


@pytest.fixture
def source(tmp_path) -> Image:  # type: ignore[no-untyped-def]
    return _open(tmp_path, "source", SOURCE)


def _added(image: Image, selector: str = ":", indices=None) -> list[Layer]:  # type: ignore[no-untyped-def]
    layers = image.layers if indices is None else [image.layers[i] for i in indices]
    return [dataclasses.replace(l, taken=Taken(selector, "", image.platform)) for l in layers]


def _taken(layer: Layer, source: str, selector: str, image: Image, below=None) -> Layer:  # type: ignore[no-untyped-def]
    return dataclasses.replace(layer, source=source, taken=Taken(selector, "", image.platform, below))


def _parts(composed: Image) -> tuple[dict, dict]:
    return json.loads(composed.config_bytes), json.loads(composed.manifest_bytes)


def test_diff_ids_and_digests_are_base_then_added_one_for_one(base: Image, source: Image) -> None:
    out = compose(base, _added(source, "1:", [2, 1]))
    config, manifest = _parts(out)
    expected = [base.layers[0], base.layers[1], source.layers[2], source.layers[1]]
    assert config["rootfs"] == {"type": "layers", "diff_ids": [l.diff_id for l in expected]}
    assert [(d["digest"], d["size"]) for d in manifest["layers"]] == [
        (l.descriptor.digest, l.descriptor.size) for l in expected
    ]
    assert [l.descriptor.digest for l in out.layers] == [l.descriptor.digest for l in expected]
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["digest"] == sha(out.config_bytes) == out.config_descriptor.digest
    assert out.manifest_descriptor.digest == sha(out.manifest_bytes)


def test_added_layers_are_annotated_with_where_they_came_from(base: Image, source: Image) -> None:
    _, manifest = _parts(compose(base, _added(source, "created_by=RUN one", [0])))
    assert [("annotations" in d) for d in manifest["layers"]] == [False, False, True]
    assert manifest["layers"][2]["annotations"] == {
        ANN_SOURCE: "//images:source",
        ANN_SOURCE_DIGEST: source.layers[0].descriptor.digest,
        ANN_SELECTOR: "created_by=RUN one",
    }


def test_history_gets_one_entry_per_added_layer(base: Image, source: Image) -> None:
    config, _ = _parts(compose(base, _added(source)))
    history = config["history"]
    assert history[:3] == BASE.config()["history"]  # the base's, ENV/CMD entries included
    added = history[3:]
    assert len(added) == 3 and not any(h.get("empty_layer") for h in added)
    assert [h["created_by"] for h in added] == ["RUN one", "RUN two", "lamina: layer " + source.layers[2].descriptor.digest]
    for h, layer in zip(added, source.layers):
        assert h["comment"] == f"lamina: layer {layer.descriptor.digest} from //images:source (:)"
        assert h["created"] == EPOCH
    assert config["created"] == EPOCH
    assert len([h for h in history if not h.get("empty_layer")]) == len(config["rootfs"]["diff_ids"])


def test_history_records_which_layers_below_an_added_layer_it_was_built_on(base: Image, source: Image) -> None:
    on_base = [_taken(l, "s", ":", source, tuple(base.diff_ids) + tuple(source.diff_ids[:i]))
               for i, l in enumerate(source.layers)]
    foreign = _taken(source.layers[0], "f", "0", source, ("sha256:" + "0" * 64,))
    unknown = _taken(source.layers[0], "u", "0", source)
    skipping = _taken(source.layers[0], "k", "0", source, (base.diff_ids[0], source.diff_ids[0], source.diff_ids[2]))
    config, _ = _parts(compose(base, [*on_base, foreign, unknown, skipping]))
    comments = [h["comment"].split("; ", 1)[-1] if "; " in h["comment"] else "" for h in config["history"][3:]]
    n = len(base.layers)
    assert n == 2
    assert comments == ["built on layers 0-1", "built on layers 0-2", "built on layers 0-3",
                        "built on no layer here", "", "built on layers 0,2,4-6"]  # 5, 6: source's layer 0 again


def test_docker_media_types_become_oci_ones(tmp_path, base: Image) -> None:  # type: ignore[no-untyped-def]
    write_docker_classic({"s:1": SOURCE}, str(tmp_path / "s.tar"))
    docker = open_image(str(tmp_path / "s.tar"))
    _, manifest = _parts(compose(base, _added(docker)))
    assert [d["mediaType"] for d in manifest["layers"][2:4]] == [OCI_LAYER_GZIP, OCI_LAYER]
    assert [d["digest"] for d in manifest["layers"][2:]] == [sha(l.blob) for l in SOURCE.layers]


def test_a_foreign_layer_stays_nondistributable_and_keeps_its_urls(base: Image) -> None:
    urls = ("https://example.invalid/layer.tar.gz",)
    foreign = dataclasses.replace(base.layers[1], descriptor=dataclasses.replace(
        base.layers[1].descriptor, media_type="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", urls=urls))
    as_base = dataclasses.replace(base, layers=(base.layers[0], foreign))
    for composed in (compose(as_base, []), compose(base, [dataclasses.replace(foreign, taken=Taken(":", "", base.platform))])):
        _, manifest = _parts(composed)
        top = manifest["layers"][-1]
        assert top["mediaType"] == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        assert top["urls"] == list(urls) and top["digest"] == foreign.descriptor.digest


@pytest.mark.parametrize("history", [[], [{"created_by": "one entry for two layers"}]], ids=["none", "short"])
def test_a_base_whose_history_does_not_match_its_layers_gets_one_entry_per_layer(tmp_path, source: Image,  # type: ignore[no-untyped-def]
                                                                                 history: list) -> None:
    from lamina.formats.write import write
    from lamina.select import parse_selector, select

    bare = _open(tmp_path, "bare", dataclasses.replace(BASE, empty_history=[], config_extra={"history": history}))
    composed = compose(bare, _added(source, indices=[0]))
    config, _ = _parts(composed)
    entries = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(entries) == 3
    assert [h["created_by"] for h in entries[:2]] == [f"lamina: layer {l.descriptor.digest} of the base" for l in bare.layers]
    assert [h["created_by"] for h in config["history"] if h.get("empty_layer")] == [h["created_by"] for h in history]
    write(composed, "oci", str(tmp_path / "out"))
    again = open_image("oci:" + str(tmp_path / "out"))
    assert [l.index for l in select(again, parse_selector("created_by=RUN one"))] == [2]  # was: no history at all
    assert again.layers[0].created_by == composed.layers[0].created_by == entries[0]["created_by"]


def _config(base: Image, **overrides) -> dict:  # type: ignore[no-untyped-def]
    return _parts(compose(base, [], overrides=ConfigOverrides(**overrides)))[0]["config"]


def test_no_overrides_keep_the_base_config(base: Image) -> None:
    assert _config(base) == BASE.config()["config"]


def test_env_overrides_replace_in_place_and_append(base: Image) -> None:
    env = _config(base, env=(("LANG", "C.UTF-8"), ("NEW", "a=b")))["Env"]
    assert env == ["PATH=/bin", "LANG=C.UTF-8", "NEW=a=b"]


@pytest.mark.parametrize(
    "overrides, entrypoint, cmd",
    [
        ({"entrypoint": ("/app",)}, ["/app"], None),
        ({"entrypoint": ("/app",), "cmd": ("--x",)}, ["/app"], ["--x"]),
        ({"cmd": ("ls",)}, ["/init"], ["ls"]),
        ({"entrypoint": ()}, [], None),
    ],
    ids=["entrypoint-resets-cmd", "both", "cmd-keeps-entrypoint", "empty-entrypoint"],
)
def test_entrypoint_and_cmd(base: Image, overrides: dict, entrypoint, cmd) -> None:  # type: ignore[no-untyped-def]
    c = _config(base, **overrides)
    assert c.get("Entrypoint") == entrypoint
    assert c.get("Cmd") == cmd


def test_scalar_and_map_overrides(base: Image) -> None:
    c = _config(base, workdir="/srv", user="1000:1000", labels=(("b", "2"), ("a", "x")),
                exposed_ports=("8080", "53/udp"), volumes=("/data",), stop_signal="SIGINT")
    assert (c["WorkingDir"], c["User"], c["StopSignal"]) == ("/srv", "1000:1000", "SIGINT")
    assert c["Labels"] == {"a": "x", "b": "2"}
    assert c["ExposedPorts"] == {"80/tcp": {}, "8080/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/data": {}}
    assert c["Env"] == ["PATH=/bin", "LANG=C"]


def test_overrides_on_a_config_with_null_parts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake = FakeImage([FakeLayer({"a": b"a"})], config_extra={"config": None})
    image = _open(tmp_path, "null", fake)
    c = _config(image, env=(("A", "1"),), labels=(("l", "v"),), entrypoint=("/x",))
    assert c == {"Env": ["A=1"], "Labels": {"l": "v"}, "Entrypoint": ["/x"]}
    odd = _open(tmp_path, "odd", FakeImage([FakeLayer({"a": b"a"})], config_extra={"config": {"Labels": "x", "Env": "A=0"}}))
    assert _config(odd, labels=(("l", "v"),), env=(("A", "1"),)) == {"Labels": {"l": "v"}, "Env": ["A=1"]}


def test_scratch_base_needs_a_platform(source: Image) -> None:
    with pytest.raises(PlatformMismatch, match="a scratch base needs an explicit platform"):
        compose(None, _added(source))


def test_scratch_base_takes_the_given_platform(source: Image) -> None:
    config, manifest = _parts(compose(None, _added(source, "-1", [2]), platform=Platform.parse("linux/amd64")))
    assert (config["os"], config["architecture"], "variant" in config) == ("linux", "amd64", False)
    assert config["rootfs"]["diff_ids"] == [source.layers[2].diff_id]
    assert len(manifest["layers"]) == 1
    arm = _parts(compose(None, [], platform=Platform.parse("linux/arm/v7")))[0]
    assert (arm["architecture"], arm["variant"]) == ("arm", "v7")


def test_layer_for_another_platform_is_refused_naming_both(tmp_path, base: Image) -> None:  # type: ignore[no-untyped-def]
    arm = _open(tmp_path, "arm", FakeImage(SOURCE.layers, architecture="arm64"))
    with pytest.raises(PlatformMismatch) as e:
        compose(base, _added(arm, "-1", [2]))
    assert str(e.value).startswith(f"layer {describe(arm.layers[2])} from //images:arm is for linux/arm64, "
                                   "but the image is for linux/amd64")
    config, _ = _parts(compose(base, _added(arm, "-1", [2]), allow_platform_mismatch=True))
    assert config["architecture"] == "amd64"
    assert config["rootfs"]["diff_ids"][-1] == arm.layers[2].diff_id


def test_requested_platform_must_match_the_base(base: Image) -> None:
    with pytest.raises(PlatformMismatch, match="base //images:base is linux/amd64, but the image is for linux/arm64"):
        compose(base, [], platform=Platform.parse("linux/arm64"))
    assert _parts(compose(base, [], platform=Platform.parse("linux/amd64")))[0]["architecture"] == "amd64"


def test_arm64_v8_layers_fit_an_arm64_base(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = _open(tmp_path, "armbase", FakeImage(BASE.layers, architecture="arm64"))
    v8 = _open(tmp_path, "v8", FakeImage(SOURCE.layers, architecture="arm64", variant="v8"))
    assert len(compose(base, _added(v8)).layers) == 5


def test_compose_is_deterministic_and_keeps_tags(base: Image, source: Image) -> None:
    a = compose(base, _added(source), tags=["app:1", "app:latest"])
    b = compose(base, _added(source), tags=["app:1", "app:latest"])
    assert (a.config_bytes, a.manifest_bytes, a.tags) == (b.config_bytes, b.manifest_bytes, ("app:1", "app:latest"))
    assert [l.verified_by for l in a.layers] == [""] * 5  # nobody checked them yet: writers will
    vouched = dataclasses.replace(base, layers=tuple(dataclasses.replace(l, verified_by="x") for l in base.layers))
    assert [l.verified_by for l in compose(vouched, _added(source)).layers] == ["x", "x", "", "", ""]


def test_composed_layers_keep_their_openers_and_sources_and_compose_reads_no_bytes(base: Image, source: Image) -> None:
    def refuse():  # type: ignore[no-untyped-def]
        raise AssertionError("compose opened a blob")

    lazy = dataclasses.replace(source, layers=tuple(dataclasses.replace(l, opener=refuse) for l in source.layers))
    out = compose(base, _added(lazy), tags=["app:1"])
    assert [l.opener for l in out.layers[2:]] == [refuse] * 3
    assert [l.source for l in out.layers] == ["//images:base"] * 2 + ["//images:source"] * 3
    assert [l.descriptor.digest for l in out.layers[2:]] == [l.descriptor.digest for l in source.layers]
