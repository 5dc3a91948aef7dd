"""End to end: `docker://HOST/REPO:TAG` sources in `pants package`, against a real docker-registry.

A tag is looked up once per Pants session (one manifest GET); the extraction is keyed on the digest
it names, so a new session with the tag unchanged downloads no blob, and a moved tag is extracted
again. The package's summary says what each run downloaded. The sample repo runs Pants without
pantsd, so every `repo.pants(...)` is a new process and a new session.
"""
from __future__ import annotations

import base64
import json
import os
import re
import uuid
from pathlib import Path

import pytest

import lamina.cli  # noqa: F401  (the test runs the CLI in a subprocess: this makes it a dependency)
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, sha, write_oci_dir
from lamina_tests.support.cliproc import run_cli
from lamina_tests.support.sample_repo import SampleRepo, completed_processes
from lamina_tests.support.services import start_registry

USER, PASSWORD = "lamina", "tag-s3cret"
LAYER = 1 << 20  # bytes of random data per layer: downloads are plainly visible in the figures


def _layer(name: str) -> FakeLayer:
    # Random content: nothing of it can be in Pants' cache from an earlier run of this test.
    # Compressed already, so that a push sends the blob as it is (it compresses uncompressed ones).
    return FakeLayer({f"opt/{name}/data": os.urandom(LAYER)}, f"ADD {name} /opt/{name}", "gzip")


def _push(image: FakeImage, layout: Path, to: str, env: dict) -> None:
    write_oci_dir(image, str(layout))
    run = run_cli(["push", f"oci:{layout}", f"--to={to}"], env=env)
    assert run.returncode == 0, run.stderr


def _blob_gets(registry, repo: str = "") -> list:  # type: ignore[no-untyped-def]
    return [e.path for e in registry.access_log_lines()
            if e.method == "GET" and f"/{repo}" in e.path and "/blobs/" in e.path]


def _downloaded(output: str) -> str:
    found = re.findall(r"^.*registry sources: .*$", output, flags=re.MULTILINE)
    assert len(found) == 1, output
    return found[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("tag")
    # With a password: the lookups and the extractions must get the Docker config (DOCKER_CONFIG).
    registry = start_registry(tmp / "registry", htpasswd=(USER, PASSWORD))
    config_dir = tmp / "docker-config"
    config_dir.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    env = {"DOCKER_CONFIG": str(config_dir)}
    prefix = f"tag-{uuid.uuid4().hex[:8]}"
    base = FakeImage([_layer("base")])
    tools = FakeImage([_layer("tools0"), _layer("tools1")])
    _push(base, tmp / "base", f"{registry.host}/{prefix}/base:1", {**os.environ, **env})
    _push(tools, tmp / "tools", f"{registry.host}/{prefix}/tools:1", {**os.environ, **env})
    repo = SampleRepo(tmp / "repo")
    repo.write(
        "images/BUILD",
        f"""
docker_layer(name="top", image="docker://{registry.host}/{prefix}/tools:1", layer=-1)
composed_image(name="img", base="docker://{registry.host}/{prefix}/base:1", layers=[":top"],
               repository="{prefix}/img", image_tags=["v1"])
""",
    )
    yield repo, registry, env, prefix, base, tools, tmp
    registry.stop()


def test_a_tag_is_looked_up_each_session_and_extracted_again_only_when_it_moves(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, prefix, base, tools, tmp = setup
    host = registry.host

    # 1. First package: both sources are looked up, then extracted; the summary counts the bytes.
    registry.clear_access_log()
    first = repo.pants("package", "images:img", env=env)
    out1 = first.stdout + first.stderr
    line1 = _downloaded(out1)
    print("first run:", line1)
    got = re.search(r"downloaded (\d+) bytes", line1)
    # (if Pants' spawn failure made the sample repo run it twice, the first attempt may have done
    # the downloads: the second, which prints the summary, then downloaded less)
    assert (got and int(got.group(1)) >= 2 * LAYER) or first.attempts > 1, line1  # the base's and the tools' top layer
    if first.attempts == 1:  # (else the first attempt may have done them)
        assert f"for the base image of images:img from docker://{host}/{prefix}/base:1" in line1, line1
        assert f"for the layer of images:top from docker://{host}/{prefix}/tools:1" in line1, line1
    fetched = {p.rsplit("/", 1)[-1] for p in _blob_gets(registry)}
    assert sha(base.layers[0].blob) in fetched and sha(tools.layers[1].blob) in fetched, fetched
    assert sha(tools.layers[0].blob) not in fetched  # only the selected layer of tools
    ran = completed_processes(first.stderr)
    assert sum(p.startswith("lamina: look up docker://") for p in ran) == 2 * first.attempts, ran
    assert sum(p.startswith("lamina: extract") for p in ran) == 2, ran
    # The tag is still what the image and its audit trail record as the source.
    trail = json.loads((repo.root / "dist" / "images" / "img.layers.json").read_text())
    assert [r["source"] for r in trail["layers"]] == [f"docker://{host}/{prefix}/base:1",
                                                      f"docker://{host}/{prefix}/tools:1"], trail
    image1 = open_image(str(repo.root / "dist" / "images" / "img.tar"))
    first_image = (repo.root / "dist" / "images" / "img.tar").read_bytes()
    assert image1.diff_ids == (sha(base.layers[0].tar), sha(tools.layers[1].tar))

    # 2. A new session, nothing moved: the tags are looked up again (manifest GETs), no blob is
    # downloaded, no extraction runs, and the summary says nothing was downloaded.
    registry.clear_access_log()
    second = repo.pants("package", "images:img", env=env)
    out2 = second.stdout + second.stderr
    assert _blob_gets(registry) == [], _blob_gets(registry)
    looked_up = [e.path for e in registry.access_log_lines() if e.method == "GET" and "/manifests/1" in e.path]
    assert len(looked_up) >= 2, registry.access_log_lines()
    ran = completed_processes(second.stderr)
    assert sum(p.startswith("lamina: look up docker://") for p in ran) == 2 * second.attempts, ran
    # The lookup warns every session, naming the digest to pin.
    assert f"docker://{host}/{prefix}/tools:1 is a tag, resolved now to sha256:" in second.stderr, second.stderr
    assert not [p for p in ran if p.startswith("lamina: extract")], ran
    print("second run:", _downloaded(out2))
    assert "registry sources: nothing downloaded this run (2 extractions cached)" in _downloaded(out2), out2
    assert (repo.root / "dist" / "images" / "img.tar").read_bytes() == first_image

    # 3. The tools tag moves to an image with another top layer: only it is extracted again, and
    # the image has the new layer.
    moved = FakeImage([tools.layers[0], _layer("tools2")])
    _push(moved, tmp / "moved", f"{host}/{prefix}/tools:1", {**os.environ, **env})
    registry.clear_access_log()
    third = repo.pants("package", "images:img", env=env)
    out3 = third.stdout + third.stderr
    fetched = {p.rsplit("/", 1)[-1] for p in _blob_gets(registry)}
    assert sha(moved.layers[1].blob) in fetched, fetched
    assert sha(base.layers[0].blob) not in fetched, fetched  # the base's tag did not move
    ran = completed_processes(third.stderr)
    assert [p for p in ran if p.startswith("lamina: extract")] == [
        f"lamina: extract layer of images:top from docker://{host}/{prefix}/tools:1"], ran
    line3 = _downloaded(out3)
    print("tag moved:", line3)
    got = re.search(r"downloaded (\d+) bytes", line3)
    assert (got and LAYER <= int(got.group(1)) < 2 * LAYER) or third.attempts > 1, line3
    assert line3.endswith("1 extraction cached") or third.attempts > 1, line3
    image3 = open_image(str(repo.root / "dist" / "images" / "img.tar"))
    assert image3.diff_ids == (sha(base.layers[0].tar), sha(moved.layers[1].tar))


def test_require_pinned_sources_refuses_a_tag_naming_the_target_field_and_fix(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, prefix, base, tools, tmp = setup
    registry.clear_access_log()
    result = repo.pants("--lamina-require-pinned-sources", "package", "images:img", env=env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    # Whichever source is refused first (they are resolved side by side), the error names it.
    refused = re.search(rf"images:(img: `base`|top: `image`)='(docker://{re.escape(registry.host)}/{prefix}/"
                        r"(base|tools):1)' names a registry image by tag", output)
    assert refused, output
    assert "[lamina].require_pinned_sources" in output and f"lamina resolve {refused.group(2)}" in output, output
    assert f"{refused.group(2)[:-2]}@sha256:<digest>" in output, output
    assert _blob_gets(registry) == []


def test_a_warm_pantsd_reports_what_each_run_downloaded_not_what_an_earlier_run_did(setup) -> None:  # type: ignore[no-untyped-def]
    import glob
    import signal

    repo, registry, env, prefix, base, tools, tmp = setup
    host = registry.host
    try:
        repo.pants("--pantsd", "package", "images:img", env=env)  # pantsd starts and holds the build
        moved = FakeImage([tools.layers[0], _layer("tools3")])
        _push(moved, tmp / "moved-again", f"{host}/{prefix}/tools:1", {**os.environ, **env})
        ran_now = repo.pants("--pantsd", "package", "images:img", env=env)
        line = _downloaded(ran_now.stdout + ran_now.stderr)
        print("pantsd, the tag moved:", line)
        got = re.search(r"downloaded (\d+) bytes", line)
        assert got and LAYER <= int(got.group(1)) < 2 * LAYER and line.endswith("1 extraction cached"), line
        # The next run: pantsd still holds that extraction's result, made in the run before.
        registry.clear_access_log()
        again = repo.pants("--pantsd", "package", "images:img", env=env)
        line = _downloaded(again.stdout + again.stderr)
        print("pantsd, nothing moved:", line)
        assert "registry sources: nothing downloaded this run (2 extractions cached)" in line, line
        assert _blob_gets(registry) == []
        ran = completed_processes(again.stderr)
        assert sum(p.startswith("lamina: look up docker://") for p in ran) == 2, ran  # per session, also in pantsd
        assert not [p for p in ran if p.startswith("lamina: extract")], ran
        image = open_image(str(repo.root / "dist" / "images" / "img.tar"))
        assert image.diff_ids[-1] == sha(moved.layers[1].tar)
    finally:
        for pid_file in glob.glob(str(repo.root / ".pids" / "*" / "pantsd" / "pid")):
            try:
                os.kill(int(Path(pid_file).read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
