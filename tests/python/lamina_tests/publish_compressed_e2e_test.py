"""End to end: `pants publish` sends the uncompressed layers of `docker save` archives compressed,
once, with stable digests: a registry that has them is sent nothing, and after one source changed
only its layer goes up. Witness: the real registry's access log and the manifest it serves."""
from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
import uuid
from typing import Dict, List, Set

import pytest

from lamina_tests.support.images import BASE_IMAGE, build_base_image, build_image, docker_save
from lamina_tests.support.sample_repo import SampleRepo, completed_processes
from lamina_tests.support.services import docker, require_docker, start_registry

PREFIX = f"lamina-pubz-{uuid.uuid4().hex[:8]}"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _text(seed: str, mib: int) -> bytes:
    """Compressible, but not trivially: numbered lines of words."""
    words = ["layer", "digest", "registry", "manifest", "config", seed, "lamina", "compose"]
    lines = (f"{i:08d} {words[i % 8]} {words[(i * 7) % 8]} {seed} {i * 2654435761 % 1000003}\n" for i in range(1 << 30))
    out = bytearray()
    for line in lines:
        out += line.encode()
        if len(out) >= mib << 20:
            return bytes(out)
    return bytes(out)


def _manifest(registry, repo: str, tag: str) -> dict:  # type: ignore[no-untyped-def]
    request = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                        "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def _uploaded(registry) -> Set[str]:  # type: ignore[no-untyped-def]
    """Digests of the blobs whose upload the registry completed (PUT .../blobs/uploads/...?digest=)."""
    out = set()
    for e in registry.access_log_lines():
        if e.method == "PUT" and "/blobs/uploads/" in e.path and e.status == 201:
            query = urllib.parse.parse_qs(urllib.parse.urlparse(e.path).query)
            out.update(query.get("digest", []))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    require_docker()
    build_base_image()
    tmp = tmp_path_factory.mktemp("pubz")
    registry = start_registry(tmp / "registry")
    repo = SampleRepo(tmp / "repo")
    images = repo.root / "images"
    images.mkdir()
    docker_save(BASE_IMAGE, images / "base.tar")
    tags: Dict[str, str] = {}
    for name in ("a", "b"):
        tags[name] = build_image(f"{PREFIX}/{name}:1", f"FROM {BASE_IMAGE}\nCOPY {name}.txt /opt/{name}.txt\n",
                                 {f"{name}.txt": _text(f"{name}-1", 6)})
        docker_save(tags[name], images / f"{name}.tar")
    repo.write(
        "images/BUILD",
        f"""
docker_layer(name="a", image="a.tar", layer=-1)
docker_layer(name="b", image="b.tar", layer=-1)
composed_image(
    name="app", base="base.tar", layers=[":a", ":b"], repository="{PREFIX}/app", image_tags=["v1"],
    registries=["{registry.host}"], cmd=["sh", "-c", "wc -c /opt/a.txt /opt/b.txt"],
    sbom=False,  # the uploads counted here are the image's; the SBOM referrer is pants_distribution's test
)
""",
    )
    yield repo, registry, images
    registry.stop()
    docker("image", "rm", "-f", *tags.values(), f"{registry.host}/{PREFIX}/app:v1", check=False)


def _layer_line(output: str) -> List[int]:
    found = re.search(r"layers (\d+) uploaded \(.*?\), (\d+) mounted \(.*?\), (\d+) already there", output)
    assert found, output
    return [int(g) for g in found.groups()]


def test_publish_sends_compressed_layers_once_and_after_a_change_only_the_changed_one(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, images = setup
    repo.pants("package", "images:app")  # its config and audit trail, in dist/
    registry.clear_access_log()
    first = repo.pants("publish", "images:app")
    out = first.stdout + first.stderr
    manifest = _manifest(registry, f"{PREFIX}/app", "v1")
    layers = manifest["layers"]
    assert [l["mediaType"] for l in layers] == [GZIP] * len(layers), layers
    # What went up is the compressed layers (and the config): under half the layers' tar size.
    package = json.loads((repo.root / "dist" / "images" / "app.layers.json").read_text())
    tar_bytes = sum(row["size"] for row in package["layers"])
    sent = _uploaded(registry)
    assert {l["digest"] for l in layers} <= sent, (sent, layers)
    assert sum(l["size"] for l in layers) < 0.5 * tar_bytes, (layers, tar_bytes)
    assert _layer_line(out)[0] == len(layers), out
    # The diff_ids are the uncompressed layers': the config is the one `pants package` made.
    assert manifest["config"]["digest"] == package["config"]

    # It pulls and runs, in the real engine.
    ref = f"{registry.host}/{PREFIX}/app:v1"
    docker("image", "rm", "-f", ref, check=False)
    docker("pull", "-q", ref)
    ran = docker("run", "--rm", "--network", "none", ref).stdout
    assert "/opt/a.txt" in ran and "/opt/b.txt" in ran, ran

    # Again, a new Pants session: nothing is compressed again, no layer byte is sent.
    registry.clear_access_log()
    again = repo.pants("publish", "images:app")
    out = again.stdout + again.stderr
    assert not [p for p in completed_processes(again.stderr) if p.startswith("lamina: compress")], out
    assert _uploaded(registry) == set(), registry.access_log_lines()
    assert _layer_line(out)[0] == 0, out
    assert _manifest(registry, f"{PREFIX}/app", "v1") == manifest

    # One source changed: only its layer is compressed and sent.
    build_image(f"{PREFIX}/b:1", f"FROM {BASE_IMAGE}\nCOPY b.txt /opt/b.txt\n", {"b.txt": _text("b-2", 6)})
    docker_save(f"{PREFIX}/b:1", images / "b.tar")
    registry.clear_access_log()
    changed = repo.pants("publish", "images:app")
    out = changed.stdout + changed.stderr
    compressed = [p for p in completed_processes(changed.stderr) if p.startswith("lamina: compress")]
    assert len(compressed) == 1, out
    new = _manifest(registry, f"{PREFIX}/app", "v1")
    assert new["layers"][:-1] == layers[:-1] and new["layers"][-1] != layers[-1]
    assert _uploaded(registry) == {new["layers"][-1]["digest"], new["config"]["digest"]}, registry.access_log_lines()
    assert _layer_line(out)[0] == 1, out


def test_an_engine_image_pulled_from_the_registry_is_published_by_mounting_the_registrys_own_blobs(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, _ = setup
    local = build_image(f"{PREFIX}/pulled:1", f"FROM {BASE_IMAGE}\nCOPY c.txt /opt/c.txt\n", {"c.txt": _text("c", 3)})
    src = f"{registry.host}/{PREFIX}/src:1"
    docker("tag", local, src)
    docker("push", src)
    docker("image", "rm", "-f", local, src)
    docker("pull", "-q", src)  # the engine now records where it came from (RepoDigests)
    source_layers = _manifest(registry, f"{PREFIX}/src", "1")["layers"]
    repo.write(
        "engine/BUILD",
        f'composed_image(name="eng", base="docker-daemon:{src}", repository="{PREFIX}/eng", image_tags=["v1"], '
        f'registries=["{registry.host}"], env={{"FROM": "engine"}}, sbom=False)\n',
    )
    registry.clear_access_log()
    result = repo.pants("publish", "engine:eng")
    out = result.stdout + result.stderr
    # Every layer mounted from the source repository or already there: no layer byte compressed or sent.
    uploaded, mounted, present = _layer_line(out)
    assert uploaded == 0 and mounted + present == len(source_layers), out
    # (its layers' compressed forms are still made, cached: the fallback, had the registry not
    # answered; the digests below show they were not used)
    pushed = _manifest(registry, f"{PREFIX}/eng", "v1")
    assert [l["digest"] for l in pushed["layers"]] == [l["digest"] for l in source_layers]
    assert _uploaded(registry) == {pushed["config"]["digest"]}, registry.access_log_lines()
    # Only manifests and the config were read of the source: no layer blob fetched.
    assert not [e for e in registry.access_log_lines() if e.method == "GET" and "/blobs/" in e.path
                and e.path.rsplit("/", 1)[-1] in {l["digest"] for l in source_layers}]
    docker("image", "rm", "-f", src, check=False)


def _push_from_engine(registry, local: str, name: str) -> str:  # type: ignore[no-untyped-def]
    """Push an engine image to the registry; its `docker://...@sha256:` reference there."""
    remote = f"{registry.host}/{PREFIX}/{name}:1"
    docker("tag", local, remote)
    docker("push", remote)
    digests = json.loads(docker("image", "inspect", "--format", "{{json .RepoDigests}}", remote).stdout)
    return "docker://" + next(d for d in digests if d.startswith(f"{registry.host}/{PREFIX}/{name}@"))


def test_an_image_of_registry_sources_published_to_that_registry_moves_no_layer_byte(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, _ = setup
    base = _push_from_engine(registry, BASE_IMAGE, "thinbase")
    tool = _push_from_engine(registry, build_image(f"{PREFIX}/tool:1", f"FROM {BASE_IMAGE}\nCOPY t.txt /opt/t.txt\n",
                                                   {"t.txt": _text("t", 2)}), "tool")
    layer_digests = {l["digest"] for name in ("thinbase", "tool") for l in _manifest(registry, f"{PREFIX}/{name}", "1")["layers"]}
    repo.write(
        "thin/BUILD",
        f'docker_layer(name="tool", image="{tool}", layer=-1)\n'
        f'composed_image(name="thin", base="{base}", layers=[":tool"], repository="{PREFIX}/thin", image_tags=["v1"], '
        f'registries=["{registry.host}"], output_format="registry", scan_registry_layers=False)\n',
    )
    registry.clear_access_log()
    packaged = repo.pants("package", "thin:thin")
    assert (repo.root / "dist" / "thin" / "thin.layers.json").exists()
    assert not list((repo.root / "dist" / "thin").glob("thin.tar")), "registry output writes no image file"
    assert "no image file" in packaged.stderr, packaged.stderr
    published = repo.pants("publish", "thin:thin")
    out = published.stdout + published.stderr
    uploaded, mounted, present = _layer_line(out)
    assert uploaded == 0 and mounted >= 1, out
    fetched = [e.path for e in registry.access_log_lines() if e.method == "GET" and "/blobs/" in e.path]
    assert not [p for p in fetched if p.rsplit("/", 1)[-1] in layer_digests], fetched  # configs only
    pushed = _manifest(registry, f"{PREFIX}/thin", "v1")
    assert {l["digest"] for l in pushed["layers"]} <= layer_digests
