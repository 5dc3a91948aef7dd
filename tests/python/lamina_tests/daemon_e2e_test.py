"""End to end for the Docker engine: export through the SDK, incremental `docker load`, clear errors.

Needs a Docker engine (20.10 here); images are built FROM the busybox base with a per-run prefix and
removed afterwards.
"""
from __future__ import annotations

import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

import lamina.cli
from lamina.compose import compose
from lamina.daemon import DaemonError, chain_ids, connect, export, load
from lamina.formats.write import write_oci_layout
from lamina.sources import open_image
from lamina_testing.images import FakeImage, FakeLayer, write_docker_classic
from lamina_tests.support.cliproc import run_cli
from lamina_tests.support.images import BASE_IMAGE, build_base_image, build_image, docker_save, image_id
from lamina_tests.support.services import docker, require_docker, start_registry

PREFIX = f"lamina-daemon-e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def built() -> Iterator[dict]:
    require_docker()
    build_base_image()
    tags = {
        "y": build_image(f"{PREFIX}/y:1", f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/y && echo why > /opt/y/file\n"),
        "z": build_image(f"{PREFIX}/z:1", f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/z && echo zed > /opt/z/file\n"
                                          "RUN echo more > /opt/z/more\n"),
    }
    created: List[str] = list(tags.values())
    yield {"tags": tags, "created": created}
    for tag in created:
        docker("rmi", "--force", tag, check=False)


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple:  # type: ignore[type-arg]
    code = lamina.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _members(path: str) -> dict:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_export_equals_docker_save(tmp_path: Path, built: dict, capsys: pytest.CaptureFixture) -> None:
    tag = built["tags"]["z"]
    out = str(tmp_path / "exported.tar")
    code, stdout, err = _cli(capsys, "daemon-export", tag, "--out", out)
    assert code == 0, err
    assert stdout == image_id(tag) + "\n"
    saved = str(docker_save(tag, tmp_path / "saved.tar"))
    ours, theirs = open_image("docker-archive:" + out), open_image("docker-archive:" + saved)
    assert ours.diff_ids == theirs.diff_ids and len(ours.diff_ids) == 3
    assert ours.config_bytes == theirs.config_bytes
    assert ours.tags == (tag,)
    assert [l.descriptor.digest for l in ours.layers] == [l.descriptor.digest for l in theirs.layers]
    assert _members(out) == _members(saved)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".lamina-tmp")] == []


def test_extract_straight_from_the_engine_equals_extract_from_docker_save_and_keeps_nothing_else(
        tmp_path: Path, built: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = built["tags"]["z"]
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    code, out, err = _cli(capsys, "extract", f"docker-daemon:{tag}", "--layer=1:", "--out", str(tmp_path / "engine"),
                          "--index")
    assert code == 0, err
    docker_save(tag, tmp_path / "saved.tar")
    code, out2, err = _cli(capsys, "extract", str(tmp_path / "saved.tar"), "--layer=1:", "--out", str(tmp_path / "saved"),
                           "--index", f"--name=docker-daemon:{tag}")
    assert code == 0, err
    assert json.loads(out) == json.loads(out2)  # the same selection, recorded under the same name
    blobs = sorted(os.listdir(tmp_path / "engine" / "blobs" / "sha256"))
    assert blobs == sorted(os.listdir(tmp_path / "saved" / "blobs" / "sha256"))
    for name in ("lamina-index.json", "lamina-selection.json", "index.json"):
        assert (tmp_path / "engine" / name).read_bytes() == (tmp_path / "saved" / name).read_bytes(), name
    assert os.listdir(tmp_path / "tmp") == []  # the unpacked export is gone


def test_export_by_id_has_no_tag(tmp_path: Path, built: dict) -> None:
    engine = connect(os.environ)
    image = image_id(built["tags"]["y"])
    exported = export(engine, image, str(tmp_path / "by-id.tar"))
    assert exported.image_id == image
    assert open_image("docker-archive:" + exported.path).tags == ()


def test_incremental_load_sends_only_missing_layers_and_the_image_runs(
        tmp_path: Path, built: dict, capsys: pytest.CaptureFixture) -> None:
    engine = connect(os.environ)
    y = open_image("docker-archive:" + export(engine, built["tags"]["y"], str(tmp_path / "y.tar")).path)
    z = open_image("docker-archive:" + export(engine, built["tags"]["z"], str(tmp_path / "z.tar")).path)
    base = open_image("docker-archive:" + export(engine, BASE_IMAGE, str(tmp_path / "base.tar")).path)
    # base + y's layer + z's two layers: the engine has (base, y1) as y's chain, but not (base, y1, z1, z2)
    composed = compose(base, [l.taken_from(y, "1") for l in y.layers[1:]]
                       + [l.taken_from(z, "1:") for l in z.layers[1:]], tags=(f"{PREFIX}/composed:1",))
    layout = str(tmp_path / "composed")
    write_oci_layout(composed, layout)
    tag = f"{PREFIX}/composed:1"
    built["created"].append(tag)
    code, out, err = _cli(capsys, "load", "oci:" + layout, "--tag", tag)
    assert code == 0, err
    sizes = [l.descriptor.size for l in composed.layers]
    assert out == (f"loaded {composed.config_descriptor.digest} as {tag} \u2014 sent {sizes[2] + sizes[3]} bytes, "
                   f"skipped {sizes[0] + sizes[1]} bytes (2 of 4 layers already in the engine)\n")
    assert image_id(tag) == composed.config_descriptor.digest
    run = docker("run", "--rm", "--network", "none", tag, "cat", "/opt/y/file", "/opt/z/file", "/opt/z/more")
    assert run.stdout == "why\nzed\nmore\n"

    # loading it again sends no layer at all
    report = load(engine, open_image("oci:" + layout), (f"{PREFIX}/composed:2",))
    built["created"].append(f"{PREFIX}/composed:2")
    assert (report.sent_bytes, report.layers_skipped, report.fell_back) == (0, 4, "")


def test_load_from_a_registry_fetches_only_the_layers_the_engine_lacks(
        tmp_path: Path, built: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = connect(os.environ)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no credentials
    # its own blob-locations file: the user's is shared with the Pants publish tests running beside it
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(tmp_path / "lamina-cache"))
    source = build_image(f"{PREFIX}/r:1", f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/r && echo {uuid.uuid4().hex} > /opt/r/id\n"
                                          "RUN echo arr > /opt/r/file\n")
    built["created"].append(source)
    image = open_image("docker-archive:" + export(engine, source, str(tmp_path / "z.tar")).path)
    with start_registry(tmp_path / "registry") as registry:
        # sent as they are, so the registry's blobs are the archive's (compare below)
        code, out, err = _cli(capsys, "push", "docker-archive:" + str(tmp_path / "z.tar"), "--to",
                              f"{registry.host}/z:1", "--compression=none")
        assert code == 0, err
        digest = out.split()[2]
        registry.clear_access_log()
        tag = f"{PREFIX}/from-registry:1"
        built["created"].append(tag)
        code, out, err = _cli(capsys, "load", f"docker://{registry.host}/z@{digest}", "--tag", tag)
        assert code == 0, err
        assert out.endswith("(3 of 3 layers already in the engine)\n")  # the image itself is there: nothing to send
        fetched = {e.path.rsplit("/", 1)[-1] for e in registry.access_log_lines() if "/blobs/" in e.path}
        assert fetched == {image.config_descriptor.digest}  # the config only, no layer blob

        docker("rmi", source, tag)  # now the engine lacks the two layers on top of the base
        registry.clear_access_log()
        code, out, err = _cli(capsys, "load", f"docker://{registry.host}/z@{digest}", "--tag", tag)
        assert code == 0, err
        assert out.endswith("(1 of 3 layers already in the engine)\n")
        fetched = {e.path.rsplit("/", 1)[-1] for e in registry.access_log_lines() if "/blobs/" in e.path}
        assert fetched == {image.config_descriptor.digest} | {l.descriptor.digest for l in image.layers[1:]}
    assert docker("run", "--rm", "--network", "none", tag, "cat", "/opt/r/file").stdout == "arr\n"


def test_load_of_a_compose_spec_writes_no_archive_first_and_the_image_runs(tmp_path: Path, built: dict) -> None:
    big_size = 24 << 20
    engine = connect(os.environ)
    base = export(engine, BASE_IMAGE, str(tmp_path / "base.tar")).path
    big = FakeImage([FakeLayer({"opt/big/data": os.urandom(big_size)}, "ADD data /opt/big", "none")])
    write_docker_classic({"big:1": big}, str(tmp_path / "big.tar"))
    (tmp_path / "hello.txt").write_text("hello from a spec\n")
    spec = {"base": base, "layers": [{"source": str(tmp_path / "big.tar"), "layer": "0", "name": "big"}],
            "files": [{"src": str(tmp_path / "hello.txt"), "dest": "/etc/hello.txt"}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    tag = f"{PREFIX}/spec:1"
    built["created"].append(tag)
    run = run_cli(["load", "spec.json", "--tag", tag], cwd=str(tmp_path), env={**os.environ, "TMPDIR": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert 0 <= run.write_bytes < big_size // 8, f"wrote {run.write_bytes} bytes to disk"
    assert "(1 of 3 layers already in the engine)" in run.stdout  # the base's layer: not sent
    inspected = json.loads(docker("image", "inspect", tag).stdout)[0]
    source = open_image("docker-archive:" + str(tmp_path / "big.tar"))
    assert inspected["RootFS"]["Layers"][1] == source.layers[0].diff_id  # the layer, digest-true
    out = docker("run", "--rm", "--network", "none", tag, "sh", "-c", "cat /etc/hello.txt; wc -c < /opt/big/data")
    assert out.stdout.split("\n")[:2] == ["hello from a spec", str(big_size)]


def test_sparse_load_falls_back_to_the_full_image_when_the_engine_lacks_a_layer(tmp_path: Path, built: dict) -> None:
    engine = connect(os.environ)
    tag = f"{PREFIX}/fallback:1"
    built["created"].append(tag)
    fresh = build_image(f"{PREFIX}/fresh:1", f"FROM {BASE_IMAGE}\nRUN echo {uuid.uuid4().hex} > /fresh\n")
    image = open_image("docker-archive:" + export(engine, fresh, str(tmp_path / "fresh.tar")).path)
    docker("rmi", fresh)
    lying = frozenset(chain_ids(image.diff_ids))  # claims the engine has every layer; it lacks the top one
    report = load(engine, image, (tag,), present=lying)
    assert report.fell_back and report.layers_skipped == 0 and report.sent_bytes == sum(
        l.descriptor.size for l in image.layers)
    assert docker("run", "--rm", "--network", "none", tag, "cat", "/fresh").returncode == 0


def test_a_partial_load_refused_in_any_words_falls_back_once_and_says_so(
        tmp_path: Path, built: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import lamina.daemon

    engine = connect(os.environ)
    tag = f"{PREFIX}/anywords:1"
    built["created"].append(tag)
    y = open_image("docker-archive:" + export(engine, built["tags"]["y"], str(tmp_path / "y.tar")).path)
    real, calls = lamina.daemon._post_load, []

    def containerd_words(engine, body):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:  # the sparse tarball: refused as the containerd image store words it
            for _ in body:
                pass
            raise DaemonError("failed to get reader: content digest sha256:abc: not found")
        return real(engine, body)

    monkeypatch.setattr(lamina.daemon, "_post_load", containerd_words)
    report = load(engine, y, (tag,))  # the engine has all of y: the first try sends no layer
    assert len(calls) == 2 and report.layers_skipped == 0
    assert report.summary().count("refused the load without the layers it has (failed to get reader: content "
                                  "digest sha256:abc: not found), so the full image was sent") == 1
    assert image_id(tag) == y.config_descriptor.digest


def test_missing_image_and_unreachable_engine_are_clear_errors(
        tmp_path: Path, built: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = f"{PREFIX}/does-not-exist:1"
    out_path = str(tmp_path / "x.tar")
    code, out, err = _cli(capsys, "daemon-export", missing, "--out", out_path)
    host = os.environ.get("DOCKER_HOST")
    where = f"DOCKER_HOST={host}" if host else "unix:///var/run/docker.sock (DOCKER_HOST is not set)"
    assert (code, out) == (2, "")
    assert err == (f"lamina: error: no image {missing!r} in the Docker engine at {where}; build or pull it first, "
                   "or check the name (`docker images`)\n")
    assert not os.path.exists(out_path)

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    code, out, err = _cli(capsys, "daemon-export", built["tags"]["y"], "--out", out_path)
    assert code == 2
    assert err.startswith(f"lamina: error: cannot reach the Docker engine at DOCKER_HOST=unix://{tmp_path}/no-such.sock: ")
    assert err.endswith("; start it or point DOCKER_HOST at a running one\n") and err.count("\n") == 1
    with pytest.raises(DaemonError, match="cannot reach the Docker engine at DOCKER_HOST="):
        connect({"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"})
