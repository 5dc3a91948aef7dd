"""End to end: `pants package` of a sample repo whose source images the test builds in a real engine."""
from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest

from lamina_testing.images import FakeImage, FakeLayer, write_docker_classic
from lamina_tests.support.images import BASE_IMAGE, build_base_image, build_image, docker_save
from lamina_tests.support.sample_repo import SampleRepo, completed_processes
from lamina_tests.support.services import docker, require_docker

PREFIX = f"lamina-e2e-{uuid.uuid4().hex[:8]}"


def _diff_ids(ref: str) -> list:
    return json.loads(docker("image", "inspect", ref, "--format", "{{json .RootFS.Layers}}").stdout)


def _build_sources(version: str = "1") -> dict:
    """Images A, B, C on the busybox base; returns their tags."""
    tags = {k: f"{PREFIX}/{k}:latest" for k in ("a", "b", "c")}
    build_image(tags["a"], f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/a && echo curl-{version} > /opt/a/curl\n")
    build_image(
        tags["b"],
        f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/b && echo docs > /opt/b/docs\n"
        "RUN echo gcc-compiler > /opt/b/gcc  # apt-get install gcc\n",
    )
    build_image(tags["c"], f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/c && echo lib-{version} > /opt/c/lib.so\n")
    for name in ("apt_a", "apt_b"):  # each "installs a package" and rewrites the dpkg database
        tags[name] = f"{PREFIX}/{name}:latest"
        build_image(
            tags[name],
            f"FROM {BASE_IMAGE}\nRUN mkdir -p /var/lib/dpkg /opt/{name} && echo 'Package: {name}' > "
            f"/var/lib/dpkg/status && echo {name} > /opt/{name}/bin\n",
        )
    return tags


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> SampleRepo:
    require_docker()
    build_base_image()
    tags = _build_sources()
    repo = SampleRepo(tmp_path_factory.mktemp("sample"))
    images = repo.root / "images"
    images.mkdir()
    docker_save(BASE_IMAGE, images / "base.tar")
    for key, tag in tags.items():
        docker_save(tag, images / f"{key}.tar")
    repo.write(
        "apt/BUILD",
        """
docker_layer(name="a", image="../images/apt_a.tar", layer=-1)
docker_layer(name="b", image="../images/apt_b.tar", layer=-1)
composed_image(name="warn", base="../images/base.tar", layers=[":a", ":b"], merge_package_databases=False)
composed_image(name="strict", base="../images/base.tar", layers=[":a", ":b"], on_conflict="error",
               merge_package_databases=False)
composed_image(name="quiet", base="../images/base.tar", layers=[":a", ":b"], on_conflict="ignore",
               merge_package_databases=False)
composed_image(name="merged", base="../images/base.tar", layers=[":a", ":b"], on_conflict="error")
""",
    )
    c_top = _diff_ids(tags["c"])[-1]
    repo.write(
        "images/BUILD",
        f"""
docker_layer(name="a_top", image="a.tar", layer=-1)
docker_layer(name="b_gcc", image="b.tar", layer="created_by=apt-get install gcc")
docker_layer(name="c_lib", image="docker-archive:c.tar", layer="path=/opt/c/lib.so")
docker_layer(name="c_digest", image="c.tar", layer="{c_top[:15]}")
docker_layer(name="b_slice", image="b.tar", layer="1:")

composed_image(
    name="dev",
    base="base.tar",
    layers=[":a_top", ":b_gcc", ":c_lib"],
    workdir="/opt",
    env={{"LAMINA": "yes"}},
    repository="{PREFIX}/dev",
    image_tags=["v1"],
)

composed_image(
    name="sliced",
    base="base.tar",
    layers=[":b_slice", ":c_digest"],
    repository="{PREFIX}/sliced",
    output_format="oci-archive",
)
""",
    )
    yield repo
    for ref in [*tags.values(), f"{PREFIX}/dev:v1"]:
        docker("image", "rm", "-f", ref, check=False)


def test_package_builds_a_loadable_image_with_the_source_layers(repo: SampleRepo) -> None:
    repo.pants("package", "images:dev")
    archive = repo.root / "dist" / "images" / "dev.tar"
    assert archive.is_file(), list((repo.root / "dist").rglob("*"))
    docker("load", "-i", str(archive))
    ref = f"{PREFIX}/dev:v1"
    out = docker(
        "run", "--rm", "--network", "none", ref, "sh", "-c",
        "cat /opt/a/curl /opt/b/gcc /opt/c/lib.so; pwd; echo $LAMINA; test -e /opt/b/docs || echo no-docs",
    ).stdout.split()
    assert out == ["curl-1", "gcc-compiler", "lib-1", "/opt", "yes", "no-docs"]
    base = _diff_ids(BASE_IMAGE)
    a, b, c = (_diff_ids(f"{PREFIX}/{k}:latest") for k in ("a", "b", "c"))
    assert _diff_ids(ref) == base + [a[-1], b[-1], c[-1]]

    # The audit trail beside it: each layer's source, selector, target, digest and diff_id.
    trail = json.loads((repo.root / "dist" / "images" / "dev.layers.json").read_text())
    with tarfile.open(archive) as tf:
        manifest_file = tf.extractfile("manifest.json")
        assert manifest_file is not None
        manifest_path = json.load(manifest_file)[0]["Layers"]
    rows = trail["layers"]
    assert [r["diff_id"] for r in rows] == _diff_ids(ref)
    assert ["blobs/sha256/" + r["digest"].split(":", 1)[1] for r in rows] == manifest_path
    n = len(base)
    assert [(r["selector"], r["target"]) for r in rows] == [("base", "images:dev")] * n + [
        ("-1", "images:a_top"), ("created_by=apt-get install gcc", "images:b_gcc"), ("path=/opt/c/lib.so", "images:c_lib")]
    assert [r["source"] for r in rows] == ["images/base.tar"] * n + ["images/a.tar", "images/b.tar", "docker-archive:images/c.tar"]
    assert [r["source_index"] for r in rows[n:]] == [len(a) - 1, len(b) - 1, len(c) - 1]


def test_slice_and_digest_selectors(repo: SampleRepo) -> None:
    repo.pants("package", "images:sliced")
    archive = repo.root / "dist" / "images" / "sliced.oci.tar"
    from lamina.sources import open_image

    image = open_image(f"oci-archive:{archive}")
    base = _diff_ids(BASE_IMAGE)
    b, c = _diff_ids(f"{PREFIX}/b:latest"), _diff_ids(f"{PREFIX}/c:latest")
    assert list(image.diff_ids) == base + b[1:] + [c[-1]]
    trail = json.loads((repo.root / "dist" / "images" / "sliced.layers.json").read_text())  # beside it, ".oci" dropped
    assert [r["diff_id"] for r in trail["layers"]] == list(image.diff_ids)
    assert [r["target"] for r in trail["layers"]][len(base):] == ["images:b_slice"] * (len(b) - 1) + ["images:c_digest"]


def test_only_layers_of_a_changed_source_are_extracted_again(repo: SampleRepo) -> None:
    repo.pants("package", "images:dev")  # warm
    again = repo.pants("package", "images:dev")
    assert completed_processes(again.stderr) == [], again.stderr
    c2 = f"{PREFIX}/c:latest"
    build_image(c2, f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/c && echo lib-2 > /opt/c/lib.so\n")
    docker_save(c2, repo.root / "images" / "c.tar")
    changed = repo.pants("package", "images:dev")
    ran = completed_processes(changed.stderr)
    extracted = sorted(p for p in ran if p.startswith("lamina: extract"))
    assert extracted == ["lamina: extract layer of images:c_lib from docker-archive:images/c.tar"], ran
    # no process reads a layer again to scan it: the extraction indexed it as it copied it
    assert not [p for p in ran if p.startswith("lamina: scan")], ran
    assert "lamina: check images:dev" in ran
    assert "lamina: compose images:dev" in ran
    docker("load", "-i", str(repo.root / "dist" / "images" / "dev.tar"))
    out = docker("run", "--rm", "--network", "none", f"{PREFIX}/dev:v1", "cat", "/opt/c/lib.so").stdout
    assert out.strip() == "lib-2"


BAD_CASES = {
    "unknown_selector": (
        'docker_layer(name="l", image="../../images/a.tar", layer="newest")\n',
        ["bad/unknown_selector:l", "'layer'", "newest", "created_by=<regex>"],
    ),
    "no_match": (
        'docker_layer(name="l", image="../../images/a.tar", layer="created_by=no-such-step")\n'
        'composed_image(name="img", base="../../images/base.tar", layers=[":l"])\n',
        ["bad/no_match:l", "matches no layer", "candidates"],
    ),
    "missing_archive": (
        'docker_layer(name="l", image="missing.tar", layer=-1)\n'
        'composed_image(name="img", base="../../images/base.tar", layers=[":l"])\n',
        ["bad/missing_archive:l", "`image` field", "missing.tar"],
    ),
    "scratch_without_platform": (
        'composed_image(name="img", base="scratch")\n',
        ["bad/scratch_without_platform:img", "'platform'", "scratch"],
    ),
    "other_architecture": (
        'docker_layer(name="l", image="arm.tar", layer=-1)\n'
        'composed_image(name="img", base="../../images/base.tar", layers=[":l"])\n',
        ["bad/other_architecture:l", "linux/arm64", "linux/amd64"],
    ),
    "bad_repository": (
        'composed_image(name="img", base="../../images/base.tar", repository="Team/Dev")\n',
        ["bad/bad_repository:img", "'repository'", "'Team/Dev'", "path component 'Team'", 'repository="team/dev"'],
    ),
    "bad_tag": (
        'composed_image(name="img", base="../../images/base.tar", image_tags=["v1:latest"])\n',
        ["bad/bad_tag:img", "'image_tags'", "'v1:latest'", "not a Docker tag", "the repository goes in `repository`"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES), ids=sorted(BAD_CASES))
def test_bad_build_input_fails_with_one_clear_error(repo: SampleRepo, case: str) -> None:
    build, expected = BAD_CASES[case]
    if case == "other_architecture":
        arm = FakeImage([FakeLayer({"opt/arm": b"arm"})], architecture="arm64")
        (repo.root / "bad" / case).mkdir(parents=True, exist_ok=True)
        write_docker_classic({"arm:latest": arm}, str(repo.root / "bad" / case / "arm.tar"))
    repo.write(f"bad/{case}/BUILD", build)
    result = repo.pants("package", f"bad/{case}:", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"
    assert "Traceback" not in output, output
    assert not list((repo.root / "dist").glob(f"bad.{case}/*")), "partial output left in dist/"


def test_findings_show_on_every_package_also_from_a_warm_pantsd(repo: SampleRepo) -> None:
    import glob
    import signal

    try:
        first = repo.pants("--pantsd", "package", "apt:warn")
        second = repo.pants("--pantsd", "package", "apt:warn")  # served from pantsd's memory
        assert completed_processes(second.stderr) == [], second.stderr
        for run in (first, second):
            assert "composition check found" in run.stderr and "var/lib/dpkg/status" in run.stderr, run.stderr
    finally:
        for pid_file in glob.glob(str(repo.root / ".pids" / "*" / "pantsd" / "pid")):
            try:
                os.kill(int(Path(pid_file).read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass


def test_conflicting_package_databases_are_reported_and_can_fail_the_build(repo: SampleRepo) -> None:
    warned = repo.pants("package", "apt:warn")
    assert "var/lib/dpkg/status" in warned.stderr and "package database" in warned.stderr, warned.stderr
    assert "apt_a.tar" in warned.stderr and "apt_b.tar" in warned.stderr, warned.stderr
    assert (repo.root / "dist" / "apt" / "warn.tar").is_file()

    strict = repo.pants("package", "apt:strict", check=False)
    output = strict.stdout + strict.stderr
    assert strict.returncode != 0, output
    assert "apt:strict" in output and "var/lib/dpkg/status" in output, output
    # The error itself names the finding and both layers.
    (finding,) = [l.strip() for l in output.splitlines() if l.strip().startswith("error: /var/lib/dpkg/status")]
    assert "apt_a.tar" in finding and "apt_b.tar" in finding and "package database" in finding, output
    assert "see the report" not in output, output
    assert "Traceback" not in output
    assert not (repo.root / "dist" / "apt" / "strict.tar").exists()
    assert not (repo.root / "dist" / "apt" / "strict.layers.json").exists()

    quiet = repo.pants("package", "apt:quiet")  # on_conflict="ignore"
    assert "composition check" not in quiet.stderr and "dpkg" not in quiet.stderr, quiet.stderr
    assert (repo.root / "dist" / "apt" / "quiet.tar").is_file()


def test_layer_from_the_docker_engine_is_extracted_once_per_image_id_straight_from_the_engine(repo: SampleRepo) -> None:
    tag = f"{PREFIX}/daemon-src:latest"
    build_image(tag, f"FROM {BASE_IMAGE}\nRUN echo engine-1 {PREFIX} > /engine\n")  # new content, new ID
    repo.write(
        "daemon/BUILD",
        f"""
docker_layer(name="d", image="docker-daemon:{tag}", layer=-1)
composed_image(name="img", base="../images/base.tar", layers=[":d"], repository="{PREFIX}/daemon-img")
""",
    )
    try:
        first = completed_processes(repo.pants("package", "daemon:img").stderr)
        # One list of the engine's images answers the tag: no lookup process per name.
        assert first.count("lamina: list the images in the Docker engine") == 1, first
        assert not any(p.startswith("lamina: look up") for p in first), first
        # The extraction reads the engine's export stream itself: no whole image is stored first.
        assert not any(p.startswith("lamina: export") for p in first), first
        assert any(p.startswith("lamina: extract layer of daemon:d") for p in first), first
        # Neither the busybox base nor the layer holds a package database, as their extractions
        # said: no process merges or lists them on the way to the compose, and the SBOM is still
        # written (with the layers, and no packages).
        assert not any(p.startswith(("lamina: merge the package databases", "lamina: list the packages"))
                       for p in first), first
        sbom = json.loads((repo.root / "dist" / "daemon" / "img.cdx.json").read_text())
        assert [c["type"] for c in sbom["components"]] == ["file", "file"], sbom["components"]

        second = completed_processes(repo.pants("package", "daemon:img").stderr)
        assert [p for p in second if p.startswith(("lamina: export", "lamina: extract"))] == [], second

        build_image(tag, f"FROM {BASE_IMAGE}\nRUN echo engine-2 {PREFIX} > /engine\n")
        third = completed_processes(repo.pants("package", "daemon:img").stderr)
        extracted = [p for p in third if p.startswith("lamina: extract")]
        assert extracted == [f"lamina: extract layer of daemon:d from docker-daemon:{tag}"], third
        docker("load", "-i", str(repo.root / "dist" / "daemon" / "img.tar"))
        out = docker("run", "--rm", "--network", "none", f"{PREFIX}/daemon-img:latest", "cat", "/engine").stdout
        assert out.strip() == f"engine-2 {PREFIX}"
    finally:
        docker("image", "rm", "-f", tag, f"{PREFIX}/daemon-img:latest", check=False)


def test_missing_engine_image_is_one_clear_error(repo: SampleRepo) -> None:
    repo.write(
        "daemon_missing/BUILD",
        'docker_layer(name="d", image="docker-daemon:lamina-no-such-image:nope", layer=-1)\n'
        'composed_image(name="img", base="../images/base.tar", layers=[":d"])\n',
    )
    result = repo.pants("package", "daemon_missing:img", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "daemon_missing:d" in output and "lamina-no-such-image:nope" in output, output
    assert "DOCKER_HOST" in output or "engine" in output, output
    assert "Traceback" not in output
    # The engine's list lacks the name, so it is looked up alone, and that lookup's error names the target.
    assert "daemon_missing:d: no image 'lamina-no-such-image:nope' in the Docker engine" in output, output


def test_layers_goal_lists_sources_and_composed_images(repo: SampleRepo) -> None:
    b = _diff_ids(f"{PREFIX}/b:latest")
    listed = repo.pants("layers", "images:b_gcc", "images:dev").stdout
    source, composed = listed.split("images:dev:")
    assert source.startswith("images:b_gcc:"), listed
    # The source image's layers in order, each with its diff_id and the step that made it.
    rows = [line.split() for line in source.splitlines()[2:]]
    # ... and the one its `layer` selector takes is marked.
    assert [r[0] for r in rows] == [str(i) for i in range(len(b) - 1)] + [f"{len(b) - 1}*"], listed
    assert [r[3] for r in rows] == [d[:19] for d in b], listed
    assert "apt-get install gcc" in source.strip().splitlines()[-1], listed  # created_by of the top layer
    # The composed image: the base's layers, then each added layer under its own diff_id.
    a, c = _diff_ids(f"{PREFIX}/a:latest"), _diff_ids(f"{PREFIX}/c:latest")
    got = [line.split()[3] for line in composed.splitlines()[2:] if line.strip()]
    assert got == [d[:19] for d in _diff_ids(BASE_IMAGE) + [a[-1], b[-1], c[-1]]], listed


def test_package_databases_are_merged_into_one_layer_on_top(repo: SampleRepo) -> None:
    built = repo.pants("package", "apt:merged")  # on_conflict="error": the merged database is no conflict
    assert "merged /var/lib/dpkg/status (dpkg, 2 packages)" in built.stderr, built.stderr
    audit = json.loads((repo.root / "dist" / "apt" / "merged.layers.json").read_text())
    rows = audit["layers"]
    assert rows[-1]["selector"] == "merge-package-databases", rows
    warn = json.loads((repo.root / "dist" / "apt" / "warn.layers.json").read_text()) if (
        repo.root / "dist" / "apt" / "warn.layers.json").exists() else None
    if warn is not None:  # the layers taken keep their digests: only the merge layer is new
        assert [r["digest"] for r in rows[:-1]] == [r["digest"] for r in warn["layers"]]
    ref = "merged:latest"
    docker("load", "-i", str(repo.root / "dist" / "apt" / "merged.tar"))
    try:
        status = docker("run", "--rm", "--network", "none", ref, "cat", "/var/lib/dpkg/status").stdout
    finally:
        docker("image", "rm", "-f", ref, check=False)
    assert status == "Package: apt_a\n\nPackage: apt_b\n\n", status
    # the SBOM beside it: each package under the layer (and docker_layer target) that brought it
    sbom = json.loads((repo.root / "dist" / "apt" / "merged.cdx.json").read_text())
    assert sbom["specVersion"] == "1.5" and sbom["metadata"]["component"]["version"] == audit["manifest"]
    pkgs = {c["name"]: {p["name"]: p["value"] for p in c["properties"]}
            for c in sbom["components"] if c["type"] == "library"}
    assert sorted(pkgs) == ["apt_a", "apt_b"], pkgs
    for name, row in (("apt_a", rows[-3]), ("apt_b", rows[-2])):
        assert pkgs[name]["lamina:layer:digest"] == row["digest"], (pkgs, rows)
        assert pkgs[name]["lamina:layer:target"] == row["target"] == f"apt:{name[-1]}", (pkgs, rows)


def test_layers_goal_prints_files_and_the_conflict_report(repo: SampleRepo) -> None:
    files = repo.pants("layers", "--layers-files", "apt:a").stdout
    assert "var/lib/dpkg/status" in files and "opt/apt_a/bin" in files, files
    repo.pants("package", "apt:warn")
    # merge_package_databases=False: the SBOM lists what dpkg in the image sees, the top layer's copy
    sbom = json.loads((repo.root / "dist" / "apt" / "warn.cdx.json").read_text())
    rows = json.loads((repo.root / "dist" / "apt" / "warn.layers.json").read_text())["layers"]
    (pkg,) = [c for c in sbom["components"] if c["type"] == "library"]
    props = {p["name"]: p["value"] for p in pkg["properties"]}
    assert pkg["name"] == "apt_b" and props["lamina:layer:digest"] == rows[-1]["digest"], (pkg, rows)
    listed = repo.pants("layers", "--layers-conflicts", "apt:warn")
    report = listed.stdout
    assert "var/lib/dpkg/status" in report and "package database" in report, report
    assert "stack (" in report and "conflicts (" in report, report  # the package's own check report
    # ... reused from the package: no layer is scanned again and the check is a cache hit
    ran = completed_processes(listed.stderr)
    assert not [p for p in ran if p.startswith(("lamina: scan", "lamina: check"))], ran
    quiet = repo.pants("layers", "apt:warn").stdout
    assert "var/lib/dpkg/status" not in quiet, quiet


def test_sources_and_bundles_are_linked_into_sandboxes_not_copied(repo: SampleRepo) -> None:
    # Fresh content, so that every process runs (the machine's Pants cache may know older runs).
    src = FakeImage([FakeLayer({"opt/linked": f"linked {uuid.uuid4()}".encode()})])
    (repo.root / "linked").mkdir(exist_ok=True)
    write_docker_classic({"linked:1": src}, str(repo.root / "linked" / "src.tar"))
    repo.write(
        "linked/BUILD",
        'docker_layer(name="l", image="src.tar", layer=-1)\n'
        'composed_image(name="img", base="src.tar", layers=[":l"])\n',
    )
    result = repo.pants("--keep-sandboxes=always", "package", "linked:img")
    kept = dict(
        (desc, Path(path))
        for path, desc in re.findall(r"Preserving local process execution dir (\S+) for (lamina: [^\n]+)", result.stderr)
    )
    try:
        extract = kept["lamina: extract layer of linked:l from linked/src.tar"]
        compose = kept["lamina: compose linked:img"]
        assert not [d for d in kept if d.startswith("lamina: scan")], sorted(kept)  # indexed by the extractions
        # The source archive and the bundles are symlinks to one read-only copy, not sandbox files.
        (source,) = [p for p in extract.iterdir() if p.name.startswith("__source-")]
        assert source.is_symlink() and (source / "linked" / "src.tar").is_file()
        linked = sorted(p.name.split("-")[0] for p in compose.iterdir() if p.is_symlink() and p.name.startswith("__"))
        # also the core's PEX, read-only like the rest (the layers hold no package database: no merge's
        # output to link)
        assert linked == ["__base", "__lamina_core", "__layer0"], sorted(p.name for p in compose.iterdir())
        assert not (compose / "lamina.pex").exists()  # the PEX is linked, never copied into a sandbox
        assert (extract / "__bundle" / "lamina-index.json").is_file()
    finally:
        for path in kept.values():
            shutil.rmtree(path, ignore_errors=True)


def test_an_oci_output_takes_its_layer_blobs_from_the_bundles_not_from_the_compose(repo: SampleRepo) -> None:
    # The compose writes the config, manifest and index; the layer blobs are merged in from the
    # bundles' digests Pants already holds, so the compose neither writes nor links them.
    from lamina.sources import open_image
    from lamina.validate import validate

    big = os.urandom(3 << 20)
    base = FakeImage([FakeLayer({"etc/os-release": f"ID={uuid.uuid4()}\n".encode()})])
    src = FakeImage([FakeLayer({"etc/os-release": b"ID=test\n"}), FakeLayer({"opt/big": big, "opt/id": uuid.uuid4().bytes})])
    (repo.root / "ocilayout").mkdir(exist_ok=True)
    write_docker_classic({"base:1": base}, str(repo.root / "ocilayout" / "base.tar"))
    write_docker_classic({"src:1": src}, str(repo.root / "ocilayout" / "src.tar"))
    repo.write(
        "ocilayout/BUILD",
        'docker_layer(name="l", image="src.tar", layer=-1)\n'
        'composed_image(name="img", base="base.tar", layers=[":l"], output_format="oci", image_tags=["1"],\n'
        '               files=[":app"])\n'
        'files(name="app", sources=["app.txt"])\n',
    )
    (repo.root / "ocilayout" / "app.txt").write_text(f"app {uuid.uuid4()}\n")
    result = repo.pants("--keep-sandboxes=always", "package", "ocilayout:img")
    kept = dict(
        (desc, Path(path))
        for path, desc in re.findall(r"Preserving local process execution dir (\S+) for (lamina: [^\n]+)", result.stderr)
    )
    try:
        layout = repo.root / "dist" / "ocilayout" / "img.oci"
        image = open_image(f"oci:{layout}")
        source, base_image = open_image(str(repo.root / "ocilayout" / "src.tar")), open_image(str(repo.root / "ocilayout" / "base.tar"))
        assert image.diff_ids[:2] == base_image.diff_ids + source.diff_ids[-1:]  # then the files layer
        assert len(image.layers) == 3 and validate(image).layers == 3  # every blob there, each its digest
        assert not list((repo.root / "dist").rglob("lamina-placed-blobs.json"))
        written = kept["lamina: compose ocilayout:img"] / "__out" / "ocilayout" / "img.oci"
        blobs = {p.name for p in (written / "blobs" / "sha256").iterdir()}
        assert image.manifest_descriptor.hex in blobs and image.config_descriptor.hex in blobs
        # the base's and the docker_layer's blobs came from their bundles, not the compose's output
        assert not blobs & {l.descriptor.hex for l in image.layers[:2]}, blobs
    finally:
        for path in kept.values():
            shutil.rmtree(path, ignore_errors=True)


def test_the_examples_package_without_findings_and_can_start_what_they_name(tmp_path: Path) -> None:
    """The README's first command on the repo's own examples/: Docker-free, no finding, and an
    example image that names a start command holds it, with its interpreter (today none does)."""
    from lamina.analyze.check import check
    from lamina.analyze.scan import scan_image
    from lamina.analyze.start import StartConfig
    from lamina.sources import open_image
    from lamina_tests.support.sample_repo import _checkout_dir

    repo = SampleRepo(tmp_path / "repo")
    shutil.copytree(_checkout_dir("examples"), repo.root / "examples")
    result = repo.pants("package", "examples::")
    assert "composition check found" not in result.stderr, result.stderr
    images = sorted(p for p in (repo.root / "dist").rglob("*") if p.name.endswith((".tar", ".oci")))
    assert [p.name for p in images] == ["app.tar", "base.tar", "data.oci.tar", "tools.tar"], images
    for path in images:  # the final image, scanned whole: another road than the package's per-layer scans
        image = open_image(str(path))
        start = StartConfig.from_image_config(image.config)
        report = check(scan_image(image), start=start)
        assert not report.of_kind("start") and not report.of_kind("interpreter"), (path, report.text())
    app = open_image(str(repo.root / "dist" / "examples.app" / "app.tar"))
    assert StartConfig.from_image_config(app.config).argv == ()  # text files only: nothing to run
    files = [e.path for layer in scan_image(app) for e in layer.entries if e.kind == "file"]
    assert files == ["etc/os-release", "etc/passwd", "usr/local/share/lamina/greeting.txt",
                     "usr/share/lamina/data.txt", "app/config/app.toml"], files  # as the README lists them


def test_run_without_image_tags_runs_the_image_by_its_id(repo: SampleRepo) -> None:
    repo.write("notags/BUILD", 'composed_image(name="img", base="../images/base.tar", image_tags=[])\n')
    result = repo.pants("run", "notags:img", "--", "echo", "ran-untagged", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "ran-untagged" in result.stdout, output  # was: IndexError
    assert "loaded sha256:" in result.stderr and "(untagged)" in result.stderr, output
