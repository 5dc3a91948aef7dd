"""Tests of multi-platform images: an index spec composed per platform into one OCI index, from
an index source and from per-platform sources; pushed with the index last; one platform picked
for destinations that hold one; the errors that name the platform."""
from __future__ import annotations

import json

import pytest

from lamina.cli import main
from lamina.errors import LaminaError, SpecError
from lamina.index import build_index, one_platform, parse_index_spec
from lamina.model import OCI_INDEX, Platform
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, write_oci_dir, write_oci_multi

AMD = FakeImage([FakeLayer({"bin/sh": b"amd64 sh"}, "ADD rootfs /"), FakeLayer({"opt/tool": b"amd64 tool"}, "RUN tool")])
ARM = FakeImage([FakeLayer({"bin/sh": b"arm64 sh"}, "ADD rootfs /"), FakeLayer({"opt/tool": b"arm64 tool"}, "RUN tool")],
                architecture="arm64")


def _sources(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    write_oci_multi(str(tmp_path / "multi"), [(AMD, None), (ARM, None)], nested=True)
    write_oci_dir(AMD, str(tmp_path / "amd"))
    write_oci_dir(ARM, str(tmp_path / "arm"))
    return {"multi": "oci:" + str(tmp_path / "multi"), "linux/amd64": "oci:" + str(tmp_path / "amd"),
            "linux/arm64": "oci:" + str(tmp_path / "arm")}


def _index_spec(sources: dict[str, str], per_platform: bool, selector: str = "-1", **extra) -> dict:  # type: ignore[no-untyped-def]
    def source(p: str) -> str:
        return sources[p] if per_platform else sources["multi"]

    return {"format": "oci", "tags": ["app:1"], "target": "//:app", **extra, "platforms": [
        {"platform": p, "base": "scratch", "target": "//:app",
         "layers": [{"source": source(p), "layer": selector, "target": "//:tool"}]}
        for p in ("linux/amd64", "linux/arm64")]}


def _source_diff_ids(image: FakeImage) -> list[str]:
    return image.config()["rootfs"]["diff_ids"]


@pytest.mark.parametrize("per_platform", [False, True], ids=["index-source", "per-platform-map"])
def test_each_platform_is_composed_from_its_own_layers_under_one_index(tmp_path, per_platform) -> None:  # type: ignore[no-untyped-def]
    sources = _sources(tmp_path)
    out = str(tmp_path / "out")
    index = build_index(parse_index_spec(_index_spec(sources, per_platform)), out, audit=str(tmp_path / "audit.json"))
    top = json.loads((tmp_path / "out" / "index.json").read_text())
    (entry,) = top["manifests"]
    assert entry["mediaType"] == OCI_INDEX and entry["annotations"]["org.opencontainers.image.ref.name"] == "app:1"
    blob = (tmp_path / "out" / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    doc = json.loads(blob)
    assert [m["platform"] for m in doc["manifests"]] == [{"architecture": "amd64", "os": "linux"},
                                                         {"architecture": "arm64", "os": "linux"}]
    assert blob == index.index_bytes
    for fake, platform in ((AMD, "linux/amd64"), (ARM, "linux/arm64")):
        image = open_image("oci:" + out, platform=Platform.parse(platform))
        assert image.platform == Platform.parse(platform)
        assert list(image.diff_ids) == _source_diff_ids(fake)[-1:]  # its own platform's tool layer
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["index"] == index.descriptor.digest
    assert [p["platform"] for p in audit["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert audit["platforms"][1]["layers"][0]["diff_id"] == _source_diff_ids(ARM)[-1]
    # deterministic
    again = build_index(parse_index_spec(_index_spec(sources, per_platform)), str(tmp_path / "again"))
    assert again.index_bytes == index.index_bytes


def test_an_oci_archive_holds_the_index_and_a_docker_archive_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sources = _sources(tmp_path)
    build_index(parse_index_spec(_index_spec(sources, True, format="oci-archive")), str(tmp_path / "out.tar"))
    amd = open_image("oci-archive:" + str(tmp_path / "out.tar"), platform=Platform.parse("linux/amd64"))
    assert list(amd.diff_ids) == _source_diff_ids(AMD)[-1:]
    with pytest.raises(SpecError, match="holds one platform; a multi-platform image is written as oci or oci-archive"):
        parse_index_spec(_index_spec(sources, True, format="docker-archive"))


def test_a_source_that_lacks_a_platform_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sources = _sources(tmp_path)
    sources["linux/arm64"] = sources["linux/amd64"]  # an amd64-only image given for arm64
    with pytest.raises(LaminaError, match="arm64"):
        build_index(parse_index_spec(_index_spec(sources, True)), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    write_oci_multi(str(tmp_path / "amd-only"), [(AMD, None)], nested=True)
    sources["multi"] = "oci:" + str(tmp_path / "amd-only")
    with pytest.raises(LaminaError, match="arm64"):
        build_index(parse_index_spec(_index_spec(sources, False)), str(tmp_path / "out"))


def test_a_selector_that_matches_on_one_platform_only_names_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    arm = FakeImage([ARM.layers[0], FakeLayer({"opt/tool": b"arm64 tool"}, "RUN other")], architecture="arm64")
    write_oci_multi(str(tmp_path / "multi"), [(AMD, None), (arm, None)], nested=True)
    sources = {"multi": "oci:" + str(tmp_path / "multi")}
    with pytest.raises(LaminaError, match="linux/arm64"):
        build_index(parse_index_spec(_index_spec(sources, False, selector="created_by=RUN tool")), str(tmp_path / "o"))


def test_spec_errors() -> None:
    with pytest.raises(SpecError, match="names its platform"):
        parse_index_spec({"platforms": [{"base": "scratch"}]})
    with pytest.raises(SpecError, match="given twice"):
        parse_index_spec({"platforms": [{"platform": "linux/arm64"}, {"platform": "linux/arm64/v8"}]})
    with pytest.raises(SpecError, match="non-empty list"):
        parse_index_spec({"platforms": []})
    data = {"platforms": [{"platform": "linux/amd64"}, {"platform": "linux/arm64"}], "tags": ["a:1"]}
    with pytest.raises(SpecError, match="holds one platform: pass --platform"):
        one_platform(data, None, "spec.json")
    with pytest.raises(SpecError, match="has no linux/s390x image; its platforms are linux/amd64, linux/arm64"):
        one_platform(data, "linux/s390x", "spec.json")
    picked = one_platform(data, "linux/arm64", "spec.json")
    assert str(picked.platform) == "linux/arm64" and picked.tags == ("a:1",)


def test_cli_compose_layers_and_push_of_an_index_spec(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from lamina.registry.client import RegistryClient
    from lamina.registry.push import push_index
    from lamina.registry.referrers_test import HOST, _Registry
    from lamina.registry.transport import RegistryOptions
    from lamina.index import composed_index

    sources = _sources(tmp_path)
    spec = tmp_path / "index.json"
    spec.write_text(json.dumps(_index_spec(sources, True)))
    assert main(["compose", str(spec), "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["platform"] for p in printed["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert main(["layers", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "2 platforms: linux/amd64, linux/arm64" in text and "platform linux/arm64" in text
    assert main(["layers", str(spec), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["index"] == printed["index"] and [p["platform"] for p in doc["platforms"]] == ["linux/amd64", "linux/arm64"]
    # pushed: each platform's manifest by digest, then the index under the tag, last
    registry = _Registry(referrers_api=False)
    clients = {HOST: RegistryClient(HOST, RegistryOptions(), registry)}  # type: ignore[arg-type]
    from lamina.registry.push import parse_targets

    with composed_index(parse_index_spec(json.loads(spec.read_text())), str(tmp_path)) as index:
        (result,) = push_index(index, parse_targets([f"{HOST}/team/app:1"]), RegistryOptions(), clients)
        manifests = [i.manifest_descriptor.digest for i in index.images]
    assert result.digest == printed["index"] and result.platforms == 2 and "(index of 2 platforms)" in result.summary()
    puts = [p.rsplit("/", 1)[-1] for m, p in registry.requests if m == "PUT" and "/manifests/" in p]
    assert puts == [*manifests, "1"]
    assert registry.manifests[registry.tags["1"]][0] == OCI_INDEX


def test_layers_of_a_multi_platform_source_lists_each_platform(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    sources = _sources(tmp_path)
    assert main(["layers", sources["multi"]]) == 0
    text = capsys.readouterr().out
    assert "index of 2 platforms: linux/amd64, linux/arm64" in text
    assert text.index("platform linux/amd64") < text.index("platform linux/arm64")
    assert main(["layers", sources["multi"], "--json", "--select=-1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["platform"] for d in doc["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert [[r["selected"] for r in d["layers"]] for d in doc["platforms"]] == [[False, True], [False, True]]
    assert main(["layers", sources["multi"], "--platform=linux/arm64"]) == 0
    assert "index of" not in capsys.readouterr().out  # one platform asked for: that one only
    assert main(["layers", sources["linux/amd64"]]) == 0
    assert "index of" not in capsys.readouterr().out  # a single-platform source


def test_a_docker_25_archive_of_several_platforms_gives_each_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`docker save` of a multi-platform image (containerd image store): an OCI index of both
    platforms, and a manifest.json naming one platform's image."""
    from lamina_testing.images import sha, tree, write_tar

    write_oci_multi(str(tmp_path / "multi"), [(AMD, None), (ARM, None)], nested=True)
    files = tree(str(tmp_path / "multi"))
    top = json.loads(files["index.json"])
    top["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "app:1"}
    files["index.json"] = json.dumps(top).encode()
    files["manifest.json"] = json.dumps([{
        "Config": "blobs/sha256/" + sha(AMD.config_bytes())[7:], "RepoTags": ["app:1"],
        "Layers": ["blobs/sha256/" + sha(l.blob)[7:] for l in AMD.layers]}]).encode()
    write_tar(str(tmp_path / "saved.tar"), sorted(files.items()))
    source = "docker-archive:" + str(tmp_path / "saved.tar")
    from lamina.sources import source_platforms

    assert source_platforms(source) == (Platform("linux", "amd64"), Platform("linux", "arm64"))
    for fake, platform in ((AMD, "linux/amd64"), (ARM, "linux/arm64")):
        image = open_image(source, platform=Platform.parse(platform))
        assert image.platform == Platform.parse(platform) and list(image.diff_ids) == _source_diff_ids(fake)
    index = build_index(parse_index_spec(_index_spec({"multi": source}, False)), str(tmp_path / "out"))
    assert [str(i.platform) for i in index.images] == ["linux/amd64", "linux/arm64"]


STATUS = "Package: {n}\nStatus: install ok installed\nArchitecture: {a}\nVersion: 1.0\n\n"


def _dpkg_image(arch: str) -> FakeImage:
    base = STATUS.format(n="base", a=arch)
    return FakeImage([
        FakeLayer({"bin/sh": f"{arch} sh".encode(), "var/lib/dpkg/status": base.encode()}, "ADD rootfs /"),
        FakeLayer({"opt/tool": f"{arch} tool".encode(),
                   "var/lib/dpkg/status": (base + STATUS.format(n="tool", a=arch)).encode()}, "RUN tool"),
    ], architecture=arch)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_push_of_an_index_spec_attaches_each_platforms_sbom_to_its_manifest(tmp_path, monkeypatch, capsys,
                                                                            compression) -> None:  # type: ignore[no-untyped-def]
    """`lamina push INDEX.json --sbom`: each platform's SBOM, of its manifest as pushed (its
    layers compressed or not), is a referrer of that manifest; the index goes up last."""
    import lamina.registry.push as push_module
    import lamina.registry.twins as twins
    from lamina.registry.client import RegistryClient
    from lamina.registry.referrers_test import HOST, _Registry

    for arch in ("amd64", "arm64"):
        write_oci_dir(_dpkg_image(arch), str(tmp_path / arch))
    spec = {"format": "oci", "tags": ["team/app:1"], "target": "//images:app", "platforms": [
        {"platform": f"linux/{a}", "base": "scratch", "target": "//images:app",
         "layers": [{"source": "oci:" + str(tmp_path / a), "layer": ":", "target": "//:tool"}]} for a in ("amd64", "arm64")]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    registry = _Registry(referrers_api=False)

    def client(host, options, transport=None):  # type: ignore[no-untyped-def]
        return RegistryClient(host, options, registry)

    monkeypatch.setattr(push_module, "RegistryClient", client)
    monkeypatch.setattr(twins, "RegistryClient", client)
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["push", str(tmp_path / "spec.json"), f"--to={HOST}/team/app:1", f"--to={HOST}/team/app:2", "--sbom",
                 f"--compression={compression}"]) == 0
    out = capsys.readouterr().out
    assert out.count("attached SBOM") == 2, out
    index = json.loads(registry.manifests[registry.tags["1"]][1])
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        listed = json.loads(registry.manifests[registry.tags[entry["digest"].replace(":", "-")]][1])
        (ref,) = listed["manifests"]
        artifact = json.loads(registry.manifests[ref["digest"]][1])
        assert artifact["subject"]["digest"] == entry["digest"]
        assert artifact["layers"][0]["annotations"]["org.opencontainers.image.title"] == f"app.linux-{arch}.cdx.json"
        assert "annotations" not in artifact  # the epoch `created` says nothing: left out
        sbom = json.loads(registry.blobs[artifact["layers"][0]["digest"]])
        manifest = json.loads(registry.manifests[entry["digest"]][1])
        assert sorted(c["name"] for c in sbom["components"] if c["type"] == "file") == \
            sorted(l["digest"] for l in manifest["layers"])  # the layers as pushed
        assert sbom["metadata"]["component"]["version"] == entry["digest"]
        assert sbom["metadata"]["component"]["name"] == "team/app:1"  # named by the image's tag
        libs = {c["name"]: {p["name"]: p["value"] for p in c["properties"]} for c in sbom["components"]
                if c["type"] == "library"}
        assert libs["tool"]["lamina:package:architecture"] == arch
    puts = [p.rsplit("/", 1)[-1] for m, p in registry.requests if m == "PUT" and "/manifests/" in p]
    assert puts[-2:] == ["1", "2"]  # the index's tags last
    assert len([p for p in puts if p == index["manifests"][0]["digest"]]) == 1  # each manifest put once


def test_an_index_spec_with_platform_pushes_and_loads_that_platform_only(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import lamina.registry.push as push_module
    from lamina.registry.client import RegistryClient
    from lamina.registry.referrers_test import HOST, _Registry

    sources = _sources(tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps(_index_spec(sources, True)))
    registry = _Registry(referrers_api=False)
    monkeypatch.setattr(push_module, "RegistryClient", lambda host, options, transport=None: RegistryClient(host, options, registry))
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["push", str(tmp_path / "spec.json"), f"--to={HOST}/team/app:1", "--platform=linux/arm64",
                 "--compression=none"]) == 0
    media_type, data = registry.manifests[registry.tags["1"]]
    assert media_type == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(registry.blobs[json.loads(data)["config"]["digest"]])
    assert config["architecture"] == "arm64"


def test_load_of_an_index_spec_takes_the_platform_asked_for_with_its_audit_and_sbom(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import lamina.daemon as daemon

    loaded: list = []

    class _Report:
        def summary(self) -> str:
            return "loaded"

    def load(engine, image, tags):  # type: ignore[no-untyped-def]
        assert (tmp_path / "audit.json").exists() is False  # written after the load, made before it
        loaded.append(image)
        return _Report()

    monkeypatch.setattr(daemon, "connect", lambda environ: object())
    monkeypatch.setattr(daemon, "load", load)
    for arch in ("amd64", "arm64"):
        write_oci_dir(_dpkg_image(arch), str(tmp_path / arch))
    spec = {"tags": ["app:1"], "platforms": [
        {"platform": f"linux/{a}", "base": "scratch", "layers": [{"source": "oci:" + str(tmp_path / a), "layer": ":"}]}
        for a in ("amd64", "arm64")]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["load", str(tmp_path / "spec.json"), "--platform=linux/arm64", "--audit", str(tmp_path / "audit.json"),
                 "--sbom", str(tmp_path / "app.cdx.json")]) == 0
    (image,) = loaded
    assert str(image.platform) == "linux/arm64"
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["manifest"] == image.manifest_descriptor.digest
    sbom = json.loads((tmp_path / "app.cdx.json").read_text())
    assert sbom["metadata"]["component"]["name"] == "app:1"
    assert main(["load", str(tmp_path / "spec.json")]) == 2  # two platforms, none asked for
    assert "pass --platform" in capsys.readouterr().err and len(loaded) == 1
