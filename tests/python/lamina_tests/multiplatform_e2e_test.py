"""End to end: a two-platform `composed_image` (linux/amd64 and linux/arm64, each with Debian's
real busybox-static binary of that architecture) from a multi-platform OCI index source and from
per-platform archives: `pants package` writes one OCI index whose manifests carry their own
platform's layers; skopeo copies it to a registry and back byte for byte; `pants publish`
pushes it; the engine pulls and runs the amd64 image; the arm64 image's busybox is an aarch64
ELF; errors name the platform; changing the arm64 source re-runs only arm64 extractions."""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re
import subprocess
import tarfile
import urllib.request
import uuid
from pathlib import Path

import pytest

from lamina_testing.images import FakeLayer, write_docker_oci
from lamina_tests.support.multiarch import elf_machine, write_platform_sources
from lamina_tests.support.sample_repo import SampleRepo, completed_processes
from lamina_tests.support.services import docker, require_docker, start_registry

PREFIX = f"lamina-multi-{uuid.uuid4().hex[:8]}"
ARCHES = ("amd64", "arm64")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("multi")
    repo = SampleRepo(tmp / "repo")
    try:
        sources = write_platform_sources(repo.root / "images")
    except RuntimeError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the multi-platform tests: {e}")
        pytest.skip(f"needs Debian's busybox-static for amd64 and arm64: {e}")
    registry = start_registry(tmp / "registry")
    both = '["linux/amd64", "linux/arm64"]'
    archives = '{"linux/amd64": "amd64.tar", "linux/arm64": "arm64.tar"}'
    repo.write("images/BUILD", f"""
docker_layer(name="rootfs", image="oci:index:1", layer=0)
docker_layer(name="tool", image="oci:index:1", layer=-1)
docker_layer(name="rootfs_map", image={archives}, layer=0)
docker_layer(name="tool_map", image={archives}, layer=-1)
composed_image(name="app", base="scratch", layers=[":rootfs", ":tool"], platforms={both},
               cmd=["/bin/sh", "-c", "cat /opt/tool/arch.txt"], repository="{PREFIX}/app", image_tags=["1"],
               registries=["{registry.host}"])
composed_image(name="app_map", base="scratch", layers=[":rootfs_map", ":tool_map"], platforms={both},
               cmd=["/bin/sh", "-c", "cat /opt/tool/arch.txt"], repository="{PREFIX}/app-map", image_tags=["1"])
""")
    yield repo, registry, sources
    registry.stop()


def _index(layout: Path) -> tuple[bytes, dict]:
    top = json.loads((layout / "index.json").read_text())
    (entry,) = top["manifests"]
    assert entry["mediaType"] == OCI_INDEX, top
    data = (layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    return data, json.loads(data)


def _blob(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())


@pytest.mark.parametrize("name", ["app", "app_map"])
def test_package_writes_one_index_each_manifest_with_its_own_platforms_layers(setup, name: str) -> None:  # type: ignore[no-untyped-def]
    repo, registry, sources = setup
    repo.pants("package", f"images:{name}")
    layout = repo.root / "dist" / "images" / f"{name}.oci"
    raw = _skopeo("inspect", "--raw", f"oci:{layout}:{PREFIX}/{name.replace('_', '-')}:1")
    data, index = _index(layout)
    assert raw == data
    assert [m["platform"] for m in index["manifests"]] == [{"architecture": a, "os": "linux"} for a in ARCHES]
    for arch, entry in zip(ARCHES, index["manifests"]):
        manifest = _blob(layout, entry["digest"])
        config = _blob(layout, manifest["config"]["digest"])
        assert config["architecture"] == arch
        assert tuple(config["rootfs"]["diff_ids"]) == sources.diff_ids[arch]  # its own platform's layers
    audit = json.loads((repo.root / "dist" / "images" / f"{name}.layers.json").read_text())
    assert [p["platform"] for p in audit["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert (repo.root / "dist" / "images" / f"{name}.linux-arm64.cdx.json").is_file()
    # skopeo copies the whole index to the registry and back, byte for byte
    ref = f"docker://{registry.host}/{PREFIX}/copy-{name.replace('_', '-')}:1"
    _skopeo("copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
            f"oci:{layout}:{PREFIX}/{name.replace('_', '-')}:1", ref)
    assert _skopeo("inspect", "--raw", "--tls-verify=false", ref) == data
    back = repo.root / f"back-{name}"
    _skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", ref, f"oci:{back}:x")
    for entry in index["manifests"]:
        assert (back / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes() == \
            (layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    assert sorted(p.name for p in (back / "blobs" / "sha256").iterdir()) == \
        sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())


def test_publish_pushes_the_index_the_engine_runs_amd64_and_arm64_is_aarch64(setup) -> None:  # type: ignore[no-untyped-def]
    require_docker()
    repo, registry, sources = setup
    result = repo.pants("publish", "images:app")
    output = result.stdout + result.stderr
    assert "(index of 2 platforms)" in output, output
    pushed = f"{registry.host}/{PREFIX}/app:1"
    index = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed}"))
    assert index["mediaType"] == OCI_INDEX
    assert [m["platform"]["architecture"] for m in index["manifests"]] == list(ARCHES)
    try:
        docker("pull", pushed)
        assert docker("run", "--rm", "--network", "none", pushed).stdout.strip() == "amd64"
    finally:
        docker("image", "rm", "-f", pushed, check=False)
    # the arm64 image's busybox, from the pushed blobs
    arm = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    manifest = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{PREFIX}/app@{arm['digest']}"))
    with urllib.request.urlopen(f"{registry.url}/v2/{PREFIX}/app/blobs/{manifest['layers'][0]['digest']}", timeout=60) as r:
        layer = r.read()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        member = tar.extractfile("bin/busybox")
        assert member is not None
        binary = repo.root / "arm64-busybox"
        binary.write_bytes(member.read())
    assert elf_machine(binary) == "aarch64"
    # pants run: this machine's platform, loaded into the engine and run
    try:
        ran = repo.pants("run", "images:app")
        assert ran.stdout.strip().splitlines()[-1] == "amd64", ran.stdout + ran.stderr
    finally:
        docker("image", "rm", "-f", f"{PREFIX}/app:1", check=False)
    # publish with one platform picked would replace the index under its tags: refused
    refused = repo.pants("--lamina-platform=linux/amd64", "publish", "images:app", check=False)
    assert refused.returncode != 0 and "replacing it" in refused.stderr, refused.stderr
    assert json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed}")) == index
    # pants layers lists each platform's layers, and each platform's check
    conflicts = repo.pants("layers", "--layers-conflicts", "images:app").stdout
    assert "linux/amd64:" in conflicts and "linux/arm64:" in conflicts, conflicts
    listing = repo.pants("layers", "images:app").stdout
    assert "2 platforms: linux/amd64, linux/arm64" in listing and "platform linux/arm64" in listing, listing
    # a docker_layer's multi-platform source, and its per-platform map: each platform's layers
    for target in ("tool", "tool_map"):
        listing = repo.pants("layers", f"images:{target}").stdout
        assert listing.index("linux/amd64") < listing.index("linux/arm64"), listing
        marked = [line for line in listing.splitlines() if re.match(r"\s*\d+\* ", line)]
        assert len(marked) == 2, listing  # layer=-1 marked on each platform


def test_a_selector_or_a_source_that_fails_on_one_platform_names_it(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, sources = setup
    amd_tool = sources.digests["amd64"][-1]
    repo.write("bad/BUILD", f"""
docker_layer(name="amd_only", image="oci:../images/index:1", layer="{amd_tool[:19]}")
composed_image(name="selector", base="scratch", layers=[":amd_only"], platforms=["linux/amd64", "linux/arm64"])
docker_layer(name="tool", image="oci:../images/index:1", layer=-1)
composed_image(name="lacking", base="scratch", layers=[":tool"], platforms=["linux/amd64", "linux/s390x"])
docker_layer(name="map_tool", image={{"linux/amd64": "../images/amd64.tar"}}, layer=-1)
composed_image(name="map_lacking", base="scratch", layers=[":map_tool"], platforms=["linux/amd64", "linux/arm64"])
composed_image(name="archive", base="scratch", layers=[":tool"], platforms=["linux/amd64", "linux/arm64"],
               output_format="docker-archive")
""")
    for target, words in (("selector", ["linux/arm64", "matches no layer"]), ("lacking", ["linux/s390x"]),
                          ("map_lacking", ["no image for linux/arm64", "image"]),
                          ("archive", ["holds one platform", "--lamina-platform=linux/amd64"])):
        result = repo.pants("package", f"bad:{target}", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert all(w in output for w in words), (target, output)
        assert "Traceback" not in output, output
    # one platform of it, picked
    repo.pants("--lamina-platform=linux/arm64", "package", "bad:archive")
    assert (repo.root / "dist" / "bad" / "archive.tar").is_file()


def test_changing_only_the_arm64_source_reruns_only_arm64_extractions(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, sources = setup
    repo.pants("package", "images:app_map")
    arm = sources.images["arm64"]
    changed = dataclasses.replace(arm, layers=[arm.layers[0], FakeLayer(
        {"opt": None, "opt/tool": None, "opt/tool/arch.txt": f"arm64 {PREFIX}\n".encode()}, "RUN install tool", "gzip")])
    # new content (this run's PREFIX): no earlier run's cache entry can serve it
    write_docker_oci(changed, "lamina-test/multiarch:arm64", str(sources.archives["arm64"]))
    result = repo.pants("package", "images:app_map")
    extracted = [d for d in completed_processes(result.stderr) if d.startswith("lamina: extract")]
    assert extracted and all("for linux/arm64" in d for d in extracted), extracted
    assert len(extracted) == 2, extracted  # the rootfs and the tool layer of the arm64 archive
