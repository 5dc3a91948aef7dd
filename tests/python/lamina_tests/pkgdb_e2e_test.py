"""End to end on real Debian 12 packages: a `debootstrap --variant=minbase` base, and two images on
it that each install real packages (`apt-get download`ed curl and gcc, with their dependencies)
with `dpkg -i`, committed as one layer. Composed on the base, the two layers' dpkg databases are
merged by one new layer: `dpkg -s` finds both, `dpkg --audit` is clean, every package is counted,
and the layers taken keep their digests. Without the merge, curl's packages are lost. The SBOM
lists every package dpkg in the image lists, at its version, with the layer that brought it;
pushed with the image to a real registry, it is found from the image's digest (referrers tag
schema), and `lamina layers --packages` shows the packages each layer brought.

Without debootstrap, a Debian 12 apt or a reachable mirror the tests skip, except under CI (env
CI), where they fail."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

import lamina.cli
from lamina_tests.support.debian import debian_debs, debian_image
from lamina_tests.support.images import docker_save
from lamina_tests.support.services import docker, require_docker, start_registry

PREFIX = f"lamina-pkgdb-{uuid.uuid4().hex[:8]}"
PROBE = "dpkg -s curl >/dev/null && dpkg -s gcc-12 >/dev/null && echo found; dpkg --audit; dpkg -l | grep -c ^ii"


def _installed(ref: str) -> int:
    return int(docker("run", "--rm", "--network", "none", ref, "sh", "-c", "dpkg -l | grep -c ^ii").stdout.strip())


def _dpkg_image(base: str, tag: str, debs: Path) -> str:
    """`base` with the .debs in `debs` installed by `dpkg -i` (no network), committed as one layer."""
    name = f"{PREFIX}-build-{uuid.uuid4().hex[:6]}"
    docker("create", "--network", "none", "--name", name, base, "sh", "-c",
           "dpkg -i /debs/*.deb >/dev/null && rm -rf /debs")
    try:
        docker("cp", str(debs), f"{name}:/debs")
        docker("start", "-a", name)
        docker("commit", name, tag)
    finally:
        docker("rm", "-f", name, check=False)
    return tag


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """debian.tar, curl.tar, gcc.tar (saved) and the installed-package counts of their images."""
    require_docker()
    try:
        base = debian_image()
        debs = {p: debian_debs((p,)) for p in ("curl", "gcc")}
    except (RuntimeError, OSError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Debian package tests: {e}")
        pytest.skip(f"needs a Debian 12 rootfs and packages: {e}")
    out = tmp_path_factory.mktemp("images")
    tags = {p: _dpkg_image(base, f"{PREFIX}/{p}:1", d) for p, d in debs.items()}
    try:
        docker_save(base, out / "debian.tar")
        counts = {"base": _installed(base)}
        for p, tag in tags.items():
            docker_save(tag, out / f"{p}.tar")
            counts[p] = _installed(tag)
        yield out, counts
    finally:
        for tag in tags.values():
            docker("image", "rm", "-f", tag, check=False)


def _compose(images: Path, tmp_path: Path, ref: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    spec = {"base": f"docker-archive:{images / 'debian.tar'}",
            "layers": [{"source": f"docker-archive:{images / p}.tar", "layer": "-1", "target": f"//images:{p}"}
                       for p in ("curl", "gcc")],
            "tags": [ref], **extra}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out, audit, sbom = tmp_path / "out.tar", tmp_path / "audit.json", tmp_path / "out.cdx.json"
    assert lamina.cli.main(["compose", str(tmp_path / "spec.json"), "--out", str(out), "--audit", str(audit),
                            "--sbom", str(sbom)]) == 0
    docker("load", "-i", str(out))
    return json.loads(audit.read_text())


def _dpkg_versions(ref: str) -> dict:
    """name -> (version, architecture) of every package dpkg lists as installed in `ref`."""
    out = docker("run", "--rm", "--network", "none", ref, "dpkg-query", "-W", "-f",
                 "${db:Status-Status} ${Package} ${Version} ${Architecture}\\n").stdout
    return {n: (v, a) for s, n, v, a in (line.split() for line in out.splitlines()) if s == "installed"}


def _digests(tar: Path) -> list:
    from lamina.sources import open_image

    return [l.descriptor.digest for l in open_image(f"docker-archive:{tar}").layers]


def test_composed_image_lists_the_packages_of_both_layers(images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dirs, counts = images
    assert counts["curl"] - counts["base"] == 16 and counts["gcc"] - counts["base"] == 25, counts
    ref = f"{PREFIX}/composed:1"
    try:
        audit = _compose(dirs, tmp_path, ref)
        lines = docker("run", "--rm", "--network", "none", ref, "sh", "-c", PROBE).stdout.split()
    finally:
        docker("image", "rm", "-f", ref, check=False)
    # dpkg -s finds both, dpkg --audit prints nothing, every package counted once
    assert lines == ["found", str(counts["base"] + 16 + 25)], lines
    rows = audit["layers"]
    # the layers taken keep their digests: only the merge layer on top is new
    taken = _digests(dirs / "debian.tar") + _digests(dirs / "curl.tar")[-1:] + _digests(dirs / "gcc.tar")[-1:]
    assert [r["digest"] for r in rows[:-1]] == taken
    assert rows[-1]["selector"] == "merge-package-databases" and rows[-1]["digest"] not in taken


def test_the_sbom_lists_every_package_with_the_layer_that_brought_it(images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    import jsonschema  # the validator imports it lazily; named here so Pants infers the dependency
    del jsonschema

    dirs, counts = images
    ref = f"{PREFIX}/sbom:1"
    try:
        audit = _compose(dirs, tmp_path, ref)
        installed = _dpkg_versions(ref)
    finally:
        docker("image", "rm", "-f", ref, check=False)
    text = (tmp_path / "out.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    doc = json.loads(text)
    pkgs = {c["name"]: {**c, "props": {p["name"]: p["value"] for p in c["properties"]}}
            for c in doc["components"] if c["type"] == "library"}
    # every package dpkg in the image lists, at its version and architecture: no more, no fewer
    assert {n: (p["version"], p["props"]["lamina:package:architecture"]) for n, p in pkgs.items()} == installed
    assert len(pkgs) == counts["base"] + 16 + 25
    base, curl, gcc = _digests(dirs / "debian.tar"), _digests(dirs / "curl.tar")[-1], _digests(dirs / "gcc.tar")[-1]
    for name, layer, target in (("curl", curl, "//images:curl"), ("gcc-12", gcc, "//images:gcc")):
        p = pkgs[name]
        version, arch = installed[name]
        assert p["props"]["lamina:layer:digest"] == layer and p["props"]["lamina:layer:target"] == target, p
        assert p["purl"].startswith(f"pkg:deb/debian/{name}@") and f"arch={arch}" in p["purl"], p["purl"]
        assert "distro=debian-12" in p["purl"], p["purl"]
        assert p["version"] == version and version.split(".")[0] in ("7", "12"), version
    # the base's packages are the base's, though the curl and gcc layers' databases list them too
    assert pkgs["libc6"]["props"]["lamina:layer:digest"] in base and pkgs["dpkg"]["props"]["lamina:layer:digest"] in base
    by_layer: dict = {}
    for p in pkgs.values():
        by_layer[p["props"]["lamina:layer:digest"]] = by_layer.get(p["props"]["lamina:layer:digest"], 0) + 1
    assert by_layer[curl] == 16 and by_layer[gcc] == 25, by_layer
    # every layer of the image is listed, the merge layer too
    assert sorted(c["name"] for c in doc["components"] if c["type"] == "file") == sorted(
        r["digest"] for r in audit["layers"])


def test_without_the_merge_the_top_layer_hides_the_other_packages(images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dirs, counts = images
    ref = f"{PREFIX}/unmerged:1"
    try:
        audit = _compose(dirs, tmp_path, ref, merge_package_databases=False)
        assert _installed(ref) == counts["gcc"]  # curl's packages lost, as on main before the merge
    finally:
        docker("image", "rm", "-f", ref, check=False)
    assert all(r["selector"] != "merge-package-databases" for r in audit["layers"])


def _get(url: str, accept: str = "") -> tuple[dict, bytes]:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept} if accept else {}),
                                timeout=60) as resp:
        return dict(resp.headers), resp.read()


def test_the_pushed_sbom_is_found_from_the_image_digest_through_the_registry(images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import urllib.error

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    import jsonschema  # the validator imports it lazily; named here so Pants infers the dependency
    del jsonschema

    dirs, counts = images
    ref = f"{PREFIX}/pushed:1"
    try:
        _compose(dirs, tmp_path, ref)
    finally:
        docker("image", "rm", "-f", ref, check=False)
    with start_registry(tmp_path / "registry") as registry:
        assert lamina.cli.main(["push", str(tmp_path / "spec.json"), f"--to={registry.host}/team/app:1", "--sbom"]) == 0
        oci = "application/vnd.oci.image.manifest.v1+json"
        base = f"{registry.url}/v2/team/app"
        headers, manifest_bytes = _get(f"{base}/manifests/1", oci)
        digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        manifest = json.loads(manifest_bytes)
        # how a client discovers referrers: the API first (distribution 2.8 has none), then the tag schema
        with pytest.raises(urllib.error.HTTPError) as no_api:
            _get(f"{base}/referrers/{digest}")
        assert no_api.value.code == 404
        _, index_bytes = _get(f"{base}/manifests/{digest.replace(':', '-')}", "application/vnd.oci.image.index.v1+json")
        index = json.loads(index_bytes)
        found = [m for m in index["manifests"] if m.get("artifactType") == "application/vnd.cyclonedx+json"]
        assert len(found) == 1, index
        _, artifact_bytes = _get(f"{base}/manifests/{found[0]['digest']}", oci)
        artifact = json.loads(artifact_bytes)
        assert artifact["subject"] == {"mediaType": oci, "digest": digest, "size": len(manifest_bytes)}
        _, text = _get(f"{base}/blobs/{artifact['layers'][0]['digest']}")
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text.decode()) is None
    doc = json.loads(text)
    # it describes the image as pushed: its manifest digest, its (gzip'd) layers
    assert doc["metadata"]["component"]["version"] == digest
    pushed_layers = [l["digest"] for l in manifest["layers"]]
    assert sorted(c["name"] for c in doc["components"] if c["type"] == "file") == sorted(pushed_layers)
    pkgs = {c["name"]: {p["name"]: p["value"] for p in c["properties"]} for c in doc["components"]
            if c["type"] == "library"}
    assert len(pkgs) == counts["base"] + 16 + 25
    curl_layer, gcc_layer = pushed_layers[-3], pushed_layers[-2]  # below the merge layer
    assert pkgs["curl"]["lamina:layer:digest"] == curl_layer and pkgs["curl"]["lamina:layer:target"] == "//images:curl"
    assert pkgs["gcc-12"]["lamina:layer:digest"] == gcc_layer


def test_layers_packages_shows_what_each_real_layer_brought(images, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    dirs, counts = images
    spec = {"base": f"docker-archive:{dirs / 'debian.tar'}",
            "layers": [{"source": f"docker-archive:{dirs / p}.tar", "layer": "-1"} for p in ("curl", "gcc")]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert lamina.cli.main(["layers", str(tmp_path / "spec.json"), "--packages", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    brought = [{p["name"] for p in r["packages"]} for r in rows]
    assert sum(len(b) for b in brought[:-3]) == counts["base"]
    assert len(brought[-3]) == 16 and "curl" in brought[-3] and "libcurl4" in brought[-3]
    assert len(brought[-2]) == 25 and "gcc-12" in brought[-2]
    assert brought[-1] == set()  # the merge layer brings none: it lists what the others brought
