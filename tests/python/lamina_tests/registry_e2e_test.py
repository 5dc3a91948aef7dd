"""End to end for registry access: lamina against real docker-registry processes, skopeo as the witness.

Registries run on 127.0.0.1 (plain and with htpasswd); a fault-injecting proxy sits in front of one to
show which failures are retried, and that a registry dying mid-push leaves no tag behind.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

import lamina.cli
from lamina.compose import compose
from lamina.formats.write import write_oci_layout
from lamina.model import OCI_INDEX, OCI_MANIFEST, Platform
from lamina.registry.client import RegistryClient
from lamina.registry.errors import AuthError, NotFound, RegistryUnreachable
from lamina.registry.push import parse_targets, push
from lamina.registry.reference import parse_reference
from lamina.registry.retry import RetryPolicy
from lamina.registry.transport import RegistryOptions
from lamina.sources import open_image
from lamina.validate import validate
from lamina_testing.images import FakeImage, FakeLayer, sha, write_docker_classic, write_oci_dir
from lamina_tests.support.cliproc import run_cli
from lamina_tests.support.faultproxy import Fault, FaultProxy
from lamina_tests.support.services import Registry, free_port, start_registry

FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2, retry_after_cap=5.0, window=30.0)
USER, PASSWORD = "lamina", "s3cret-pass"


def _image(tag: str = "a", arch: str = "amd64") -> FakeImage:
    return FakeImage(
        [
            FakeLayer({"etc/": None, "etc/os-release": f"ID={tag}\n".encode()}, "ADD base /"),
            FakeLayer({"usr/bin/tool": b"#!/bin/sh\necho " + arch.encode() + b"\n" * 200}, "RUN tool", "gzip"),
            FakeLayer({"opt/app/data": (tag.encode() * 5000)}, "COPY app /opt/app", "zstd"),
        ],
        architecture=arch,
    )


def _layout(tmp_path: Path, image: FakeImage, name: str) -> str:
    path = str(tmp_path / name)
    write_oci_dir(image, path, "latest")
    return path


def _skopeo_inspect(ref: str, raw: bool = False, creds: Optional[str] = None) -> dict:
    argv = ["skopeo", "inspect", "--tls-verify=false"] + (["--raw"] if raw else []) + (
        ["--creds", creds] if creds else []) + [ref]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _blob_gets(registry: Registry, repo: str) -> Set[str]:
    return {e.path.rsplit("/", 1)[-1] for e in registry.access_log_lines()
            if e.method == "GET" and e.path.startswith(f"/v2/{repo}/blobs/sha256:")}


def _uploads(registry: Registry) -> List[str]:
    return [f"{e.method} {e.path}" for e in registry.access_log_lines()
            if e.method in ("PATCH", "PUT") and "/blobs/uploads/" in e.path]


def _docker_config(tmp_path: Path, host: str, user: str, password: str) -> str:
    directory = tmp_path / f"docker-config-{user}-{len(password)}"
    directory.mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return str(directory)


@pytest.fixture(autouse=True)
def own_blob_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test remembers its own blob locations: the user's ~/.cache/lamina file is shared with other test files
    and runs, and a stale entry for a reused port would add mount attempts (and tokens) to a push."""
    monkeypatch.setenv("LAMINA_CACHE_DIR", str(tmp_path / "lamina-cache"))


@pytest.fixture
def registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    reg = start_registry(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture
def isolated_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """No credentials unless a test writes some: DOCKER_CONFIG points at an empty directory."""
    directory = tmp_path / "empty-docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return str(directory)


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple:  # type: ignore[type-arg]
    # These tests are of push's blob protocol on the test images' own blobs: sent as they are
    # (what push sends compressed is publish_compressed_e2e_test's subject).
    if argv and argv[0] == "push" and not any(a.startswith("--compression") for a in argv):
        argv = (*argv, "--compression=none")
    code = lamina.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_push_then_skopeo_sees_the_manifest_and_extract_fetches_only_the_selected_blob(
        tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture, isolated_docker_config: str) -> None:
    fake = _image()
    layout = _layout(tmp_path, fake, "src")
    code, out, err = _cli(capsys, "push", "oci:" + layout, "--to", f"{registry.host}/team/app:1")
    assert code == 0, err
    summary = out.strip()
    assert summary.startswith(f"pushed {registry.host}/team/app:1 sha256:")
    digest = summary.split()[2]
    total = sum(len(l.blob) for l in fake.layers) + len(fake.config_bytes())
    assert summary.endswith(f"blobs in all: uploaded {total} bytes, skipped 0 bytes (0 mounted)")
    assert f"\u2014 layers {len(fake.layers)} uploaded (" in summary

    inspected = _skopeo_inspect(f"docker://{registry.host}/team/app:1")
    assert inspected["Digest"] == digest
    assert inspected["Layers"] == [sha(l.blob) for l in fake.layers]
    raw = _skopeo_inspect(f"docker://{registry.host}/team/app:1", raw=True)
    assert raw["mediaType"] == OCI_MANIFEST and raw["config"]["digest"] == sha(fake.config_bytes())

    registry.clear_access_log()
    bundle = str(tmp_path / "bundle")
    code, out, err = _cli(capsys, "extract", f"docker://{registry.host}/team/app@{digest}", "--layer", "-1",
                          "--out", bundle)
    assert code == 0, err
    assert err == ""  # pinned: no warning
    selection = json.loads(out)
    assert [l["descriptor"]["digest"] for l in selection["layers"]] == [sha(fake.layers[2].blob)]
    assert _blob_gets(registry, "team/app") == {sha(fake.config_bytes()), sha(fake.layers[2].blob)}
    with open(os.path.join(bundle, "blobs", "sha256", sha(fake.layers[2].blob)[7:]), "rb") as f:
        assert f.read() == fake.layers[2].blob


def test_tag_source_warns_with_the_digest_to_pin_or_fails_when_pinning_is_required(
        tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture, isolated_docker_config: str) -> None:
    layout = _layout(tmp_path, _image(), "src")
    code, out, err = _cli(capsys, "push", "oci:" + layout, "--to", f"{registry.host}/app:v1")
    digest = out.split()[2]
    code, out, err = _cli(capsys, "layers", f"docker://{registry.host}/app:v1", "--json")
    assert code == 0
    assert err == (f"lamina: warning: docker://{registry.host}/app:v1 is a tag, resolved now to {digest}; "
                   f"pin it as docker://{registry.host}/app@{digest}\n")
    assert len(json.loads(out)["layers"]) == 3
    code, out, err = _cli(capsys, "layers", f"docker://{registry.host}/app:v1", "--require-pinned")
    assert code == 2 and out == ""
    assert err == (f"lamina: error: docker://{registry.host}/app:v1: a tag can move and --require-pinned is set; "
                   f"pin it as docker://{registry.host}/app@{digest}\n")


def test_composed_image_pushes_to_the_same_digest_compose_wrote(
        tmp_path: Path, registry: Registry, isolated_docker_config: str) -> None:
    source = open_image("oci:" + _layout(tmp_path, _image(), "src"))
    composed = compose(None, [l.taken_from(source, ":") for l in source.layers],
                       platform=source.platform, tags=("x:1",))
    out = str(tmp_path / "composed")
    write_oci_layout(composed, out)
    options = RegistryOptions(retry=FAST)
    [result] = push(open_image("oci:" + out), parse_targets([f"{registry.host}/composed:1"]), options)
    assert result.digest == composed.manifest_descriptor.digest
    assert _skopeo_inspect(f"docker://{registry.host}/composed:1")["Digest"] == result.digest


BIG = 24 << 20  # one layer's size: a push from a spec must write nothing near it to disk


def test_push_of_a_compose_spec_writes_no_archive_first(tmp_path: Path, registry: Registry,
                                                       isolated_docker_config: str) -> None:
    big = FakeImage([FakeLayer({"opt/big": os.urandom(BIG)}, "ADD big /opt", "none"),
                     FakeLayer({"opt/small": b"s" * 100}, "RUN small", "gzip")])
    write_docker_classic({"big:1": big}, str(tmp_path / "big.tar"))
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "hello.txt").write_text("hello\n")
    spec = {"platform": "linux/amd64", "layers": [{"source": str(tmp_path / "big.tar"), "layer": ":", "name": "big"}],
            "files": [{"src": str(tmp_path / "files" / "hello.txt"), "dest": "/etc/hello.txt"}], "tags": ["spec:1"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TMPDIR": str(tmp_path), "LAMINA_CACHE_DIR": str(tmp_path / "cache")}
    run = run_cli(["push", "spec.json", "--to", f"{registry.host}/from/spec:1", "--compression=none"], cwd=str(tmp_path),
                  env=env)
    assert run.returncode == 0, run.stderr
    assert 0 <= run.write_bytes < BIG // 8, f"wrote {run.write_bytes} bytes to disk"  # the files layer, small JSON
    assert run.read_bytes < 3 * BIG  # the source read once (page cache may hide some of it: never more)
    digest = run.stdout.split()[2]
    # what was pushed is what `lamina compose` writes from the same spec
    code = lamina.cli.main(["compose", str(tmp_path / "spec.json"), "--out", str(tmp_path / "out"), "--format", "oci"])
    assert code == 0
    composed = open_image("oci:" + str(tmp_path / "out"))
    assert digest == composed.manifest_descriptor.digest
    pulled = open_image(f"docker://{registry.host}/from/spec@{digest}")
    assert [l.descriptor.digest for l in pulled.layers] == [sha(big.layers[0].blob), sha(big.layers[1].blob),
                                                           composed.layers[2].descriptor.digest]
    assert validate(pulled).layers == 3
    assert not list(tmp_path.glob(".lamina-files-*"))  # the files layer's temporary directory is gone


def test_push_of_a_spec_checks_diff_ids_of_layers_no_one_verified(tmp_path: Path, registry: Registry,
                                                                  capsys: pytest.CaptureFixture,
                                                                  isolated_docker_config: str) -> None:
    fake = _image("lying")
    lying = FakeImage(fake.layers, config_extra={"rootfs": {"type": "layers", "diff_ids": [
        sha(l.tar) for l in fake.layers[:2]] + [sha(b"not this layer")]}})
    layout = _layout(tmp_path, lying, "lying")
    (tmp_path / "spec.json").write_text(json.dumps({"platform": "linux/amd64",
                                                     "layers": [{"source": "oci:" + layout, "layer": ":"}]}))
    code, out, err = _cli(capsys, "push", str(tmp_path / "spec.json"), "--to", f"{registry.host}/lying/app:1")
    assert code == 2 and out == "", (out, err)
    assert "uncompressed content is " + sha(fake.layers[2].tar) + ", the config says " + sha(b"not this layer") in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    tags = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/lying/app:1"],
                          capture_output=True, text=True)
    assert tags.returncode != 0  # no manifest names the layer


def test_second_push_mounts_layers_another_repository_has(
        tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture, isolated_docker_config: str) -> None:
    fake = _image("m")
    code, out, err = _cli(capsys, "push", "oci:" + _layout(tmp_path, fake, "src"), "--to", f"{registry.host}/base:1")
    assert code == 0, err
    digest = out.split()[2]
    # 1. the image itself, read from the registry, pushed to another repository: everything mounted
    registry.clear_access_log()
    source = f"docker://{registry.host}/base@{digest}"
    code, out, err = _cli(capsys, "push", source, "--to", f"{registry.host}/copy:1")
    assert code == 0, err
    assert out.strip().endswith(f"uploaded 0 bytes, skipped {sum(len(l.blob) for l in fake.layers) + len(fake.config_bytes())} "
                                "bytes (4 mounted)")
    assert _uploads(registry) == [] and _blob_gets(registry, "base") == {sha(fake.config_bytes())}

    # 2. a composed image whose layers came from that repository (dev.lamina.layer.source): layers mounted
    image = open_image(source)
    composed = compose(None, [l.taken_from(image, ":") for l in image.layers[1:]],
                       platform=image.platform)
    layout = str(tmp_path / "composed")
    write_oci_layout(composed, layout)
    registry.clear_access_log()
    [result] = push(open_image("oci:" + layout), parse_targets([f"{registry.host}/other/app:2"]), RegistryOptions())
    layer_outcomes = {b.digest: (b.how, b.source_repo) for b in result.blobs}
    assert layer_outcomes[sha(fake.layers[1].blob)] == ("mounted", "base")
    assert layer_outcomes[sha(fake.layers[2].blob)] == ("mounted", "base")
    assert layer_outcomes[composed.config_descriptor.digest] == ("uploaded", "")
    assert result.uploaded_bytes == len(composed.config_bytes) and result.mounted == 2
    assert len(_uploads(registry)) == 1  # only the new config's PUT
    assert validate(open_image(f"docker://{registry.host}/other/app@{result.digest}")).layers == 2


def test_compose_spec_reads_base_and_layers_from_the_registry(
        tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture, isolated_docker_config: str) -> None:
    base, other = _image("base"), _image("other")
    digests = {}
    for name, fake in (("base", base), ("other", other)):
        code, out, err = _cli(capsys, "push", "oci:" + _layout(tmp_path, fake, name), "--to", f"{registry.host}/{name}:1")
        digests[name] = out.split()[2]
    spec = {"base": f"docker://{registry.host}/base@{digests['base']}",
            "layers": [{"source": f"docker://{registry.host}/other@{digests['other']}", "layer": "-1"}],
            "format": "oci", "tags": ["composed:1"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    registry.clear_access_log()
    out_dir = str(tmp_path / "composed")
    code, out, err = _cli(capsys, "compose", str(tmp_path / "spec.json"), "--out", out_dir)
    assert code == 0, err
    image = open_image("oci:" + out_dir)
    assert [l.descriptor.digest for l in image.layers] == [sha(l.blob) for l in base.layers] + [sha(other.layers[2].blob)]
    assert _blob_gets(registry, "other") == {sha(other.config_bytes()), sha(other.layers[2].blob)}
    assert validate(image).layers == 4
    # pushed to another repository, the added layer is mounted from `other` (its dev.lamina.layer.source
    # annotation says so); base layers carry no such annotation, so they are uploaded
    [result] = push(image, parse_targets([f"{registry.host}/composed:1"]), RegistryOptions())
    how = {b.digest: (b.how, b.source_repo) for b in result.blobs}
    assert how[sha(other.layers[2].blob)] == ("mounted", "other")
    assert {how[sha(l.blob)] for l in base.layers} == {("uploaded", "")}


def test_large_blob_is_uploaded_in_chunks_and_reads_back(
        tmp_path: Path, registry: Registry, isolated_docker_config: str) -> None:
    big = FakeImage([FakeLayer({"big.bin": os.urandom(3 * 1024 * 1024 + 12345)}, "ADD big /")])
    options = RegistryOptions(chunk_size=1 << 20, retry=FAST)
    [result] = push(open_image("oci:" + _layout(tmp_path, big, "big")), parse_targets([f"{registry.host}/big:1"]), options)
    patches = [e for e in registry.access_log_lines() if e.method == "PATCH"]
    assert len(patches) == 4 and {e.status for e in patches} == {202}
    image = open_image(f"docker://{registry.host}/big@{result.digest}", registry=options)
    assert validate(image).bytes == len(big.layers[0].blob)
    out = str(tmp_path / "fetched")
    RegistryClient(registry.host, options).fetch_blob("big", image.layers[0].descriptor, out)
    with open(out, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == image.layers[0].descriptor.hex


def test_multi_platform_index_resolves_to_the_asked_platform(
        tmp_path: Path, registry: Registry, isolated_docker_config: str) -> None:
    options = RegistryOptions(retry=FAST)
    entries = []
    for arch in ("amd64", "arm64"):
        fake = _image(arch, arch)
        [result] = push(open_image("oci:" + _layout(tmp_path, fake, arch)), parse_targets([f"{registry.host}/multi:{arch}"]), options)
        raw = urllib.request.urlopen(urllib.request.Request(
            f"{registry.url}/v2/multi/manifests/{result.digest}", headers={"Accept": OCI_MANIFEST})).read()
        entries.append({"mediaType": OCI_MANIFEST, "digest": result.digest, "size": len(raw),
                        "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    client = RegistryClient(registry.host, options)
    client.put_manifest(parse_reference(f"{registry.host}/multi:all"), OCI_INDEX, index)
    for wanted in ("amd64", "arm64"):
        image = open_image(f"docker://{registry.host}/multi@{sha(index)}", platform=Platform("linux", wanted),
                           registry=options)
        assert image.platform.architecture == wanted
    with pytest.raises(Exception, match=r"no image for platform linux/s390x \(it has linux/amd64, linux/arm64\)"):
        open_image(f"docker://{registry.host}/multi@{sha(index)}", platform=Platform("linux", "s390x"), registry=options)
    from lamina.sources import source_platforms

    assert source_platforms(f"docker://{registry.host}/multi:all", options) == (Platform("linux", "amd64"),
                                                                               Platform("linux", "arm64"))
    assert source_platforms(f"docker://{registry.host}/multi:arm64", options) == ()


def test_basic_auth_from_docker_config_and_wrong_password(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_registry(tmp_path / "auth-registry", htpasswd=(USER, PASSWORD)) as reg:
        layout = _layout(tmp_path, _image(), "src")
        monkeypatch.setenv("DOCKER_CONFIG", _docker_config(tmp_path, reg.host, USER, PASSWORD))
        code, out, err = _cli(capsys, "push", "oci:" + layout, "--to", f"{reg.host}/secret/app:1")
        assert code == 0, err
        digest = out.split()[2]
        assert _skopeo_inspect(f"docker://{reg.host}/secret/app:1", creds=f"{USER}:{PASSWORD}")["Digest"] == digest
        code, out, err = _cli(capsys, "validate", f"docker://{reg.host}/secret/app@{digest}")
        assert code == 0, err

        wrong = _docker_config(tmp_path, reg.host, USER, "not-the-password")
        monkeypatch.setenv("DOCKER_CONFIG", wrong)
        code, out, err = _cli(capsys, "layers", f"docker://{reg.host}/secret/app@{digest}")
        assert code == 2 and out == ""
        assert err == (f"lamina: error: docker://{reg.host}/secret/app@{digest}: {reg.host} refused the credentials "
                       f"of {USER} from {wrong}/config.json auths (HTTP 401); check them or run `docker login {reg.host}`\n")

        empty = tmp_path / "no-creds"
        empty.mkdir()
        monkeypatch.setenv("DOCKER_CONFIG", str(empty))
        with pytest.raises(AuthError, match=rf"{reg.host} requires credentials \(HTTP 401\) and {empty}/config.json "
                                            rf"has none for {reg.host}; run `docker login {reg.host}`"):
            push(open_image("oci:" + layout), parse_targets([f"{reg.host}/secret/app:2"]),
                 RegistryOptions.from_environ(os.environ))
        assert not [e for e in reg.access_log_lines() if e.path.endswith("/manifests/2") and e.method == "PUT"]


def test_unknown_repository_and_tag_are_named(
        tmp_path: Path, registry: Registry, capsys: pytest.CaptureFixture, isolated_docker_config: str) -> None:
    _cli(capsys, "push", "oci:" + _layout(tmp_path, _image(), "src"), "--to", f"{registry.host}/known:1",
         "--to", f"{registry.host}/known:2")
    code, out, err = _cli(capsys, "layers", f"docker://{registry.host}/nosuch/repo:1")
    assert code == 2
    assert err == (f"lamina: error: docker://{registry.host}/nosuch/repo:1: repository nosuch/repo is not known to "
                   f"{registry.host} (no such repository, or it has no tags); check the name\n")
    code, out, err = _cli(capsys, "layers", f"docker://{registry.host}/known:9")
    assert code == 2
    assert err == (f"lamina: error: docker://{registry.host}/known:9: {registry.host}/known has no manifest for tag 9; "
                   "it has tags 1, 2\n")
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFound, match=f"has no manifest for digest {missing}"):
        open_image(f"docker://{registry.host}/known@{missing}", registry=RegistryOptions(retry=FAST))

    # a blob the manifest names but the registry lost: named when that layer is read
    image = open_image(f"docker://{registry.host}/known:1", registry=RegistryOptions(retry=FAST))
    lost = image.layers[1].descriptor.digest
    urllib.request.urlopen(urllib.request.Request(f"{registry.url}/v2/known/blobs/{lost}", method="DELETE"))
    code, out, err = _cli(capsys, "extract", f"docker://{registry.host}/known:1", "--layer", "1", "--out",
                          str(tmp_path / "bundle"))
    assert code == 2
    assert err.splitlines()[-1] == (f"lamina: error: docker://{registry.host}/known:1: blob {lost}: blob is missing "
                                    f"from {registry.host}/known")
    assert not os.path.exists(tmp_path / "bundle")


def test_unreachable_registry_is_named_with_a_hint(
        tmp_path: Path, capsys: pytest.CaptureFixture, isolated_docker_config: str) -> None:
    host = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    code, out, err = _cli(capsys, "layers", f"docker://{host}/app@sha256:{'1' * 64}")
    assert code == 2
    assert err.startswith(f"lamina: error: docker://{host}/app@sha256:{'1' * 64}: cannot reach registry {host} at "
                          f"http://{host} (Connection refused); check that it is running and that HOST:PORT is right "
                          "(gave up after 5 attempts)")
    assert err.count("\n") == 1
    assert time.monotonic() - start < 30


# -- faults ---------------------------------------------------------------------------------------


@pytest.fixture
def proxied(registry: Registry):  # type: ignore[no-untyped-def]
    proxy = FaultProxy(registry.host)
    yield proxy
    proxy.stop()


def _push_through(tmp_path: Path, proxy: FaultProxy, fake: FakeImage, tag: str, **options_kw: object) -> tuple:  # type: ignore[type-arg]
    options = RegistryOptions(retry=FAST, **options_kw)  # type: ignore[arg-type]
    return push(open_image("oci:" + _layout(tmp_path, fake, f"src-{tag}")),
                parse_targets([f"{proxy.host}/faulty:{tag}"]), options)


def test_500_once_and_429_with_retry_after_are_retried(
        tmp_path: Path, registry: Registry, proxied: FaultProxy, isolated_docker_config: str) -> None:
    proxied.add(Fault("status", "PUT", "/manifests/", status=500))
    proxied.add(Fault("status", "HEAD", "/blobs/sha256:", status=429, headers=(("Retry-After", "1"),)))
    proxied.add(Fault("status", "POST", "/blobs/uploads/", status=503))
    start = time.monotonic()
    [result] = _push_through(tmp_path, proxied, _image("r"), "1")
    assert time.monotonic() - start >= 1.0  # Retry-After honoured
    outcomes = [e.outcome for e in proxied.entries("PUT", "/manifests/")]
    assert outcomes == ["injected 500", "forwarded 201"]
    assert [e.outcome for e in proxied.entries("HEAD")][:2] == ["injected 429", "forwarded 404"]
    assert _skopeo_inspect(f"docker://{registry.host}/faulty:1")["Digest"] == result.digest


def test_connection_dropped_mid_upload_restarts_that_blob(
        tmp_path: Path, registry: Registry, proxied: FaultProxy, isolated_docker_config: str) -> None:
    big = FakeImage([FakeLayer({"big.bin": os.urandom(2 * 1024 * 1024 + 7)}, "ADD big /"),
                     FakeLayer({"small": b"s" * 3000}, "ADD small /")])
    proxied.add(Fault("drop", "PATCH", "/blobs/uploads/", after_bytes=300_000))  # mid-chunk
    proxied.add(Fault("drop", "PUT", r"/blobs/uploads/.*digest="))  # the commit after the chunks
    [result] = _push_through(tmp_path, proxied, big, "2", chunk_size=1 << 20)
    assert [e.outcome for e in proxied.entries("PATCH")][0] == "dropped"
    assert [e.outcome for e in proxied.entries("PUT", "/blobs/uploads/")][0] == "dropped"
    image = open_image(f"docker://{registry.host}/faulty@{result.digest}", registry=RegistryOptions())
    assert validate(image).bytes == sum(len(l.blob) for l in big.layers)

    small = FakeImage([FakeLayer({"small": os.urandom(50_000)}, "ADD small /")])
    proxied.log.clear()
    proxied.add(Fault("drop", "PUT", r"/blobs/uploads/.*digest=", after_bytes=20_000))  # a monolithic upload
    [result] = _push_through(tmp_path, proxied, small, "3")
    assert [e.outcome for e in proxied.entries("PUT", "/blobs/uploads/")][:2] == ["dropped", "forwarded 201"]
    assert validate(open_image(f"docker://{registry.host}/faulty@{result.digest}")).layers == 1


def test_read_timeout_is_retried(
        tmp_path: Path, registry: Registry, proxied: FaultProxy, isolated_docker_config: str) -> None:
    [pushed] = _push_through(tmp_path, proxied, _image("t"), "3")
    # the delay is far longer than the read timeout, so a loaded machine cannot blur the two
    proxied.add(Fault("delay", "GET", "/manifests/", delay=10.0))
    options = RegistryOptions(retry=FAST, read_timeout=2.0)
    start = time.monotonic()
    image = open_image(f"docker://{proxied.host}/faulty@{pushed.digest}", registry=options)
    assert 2.0 <= time.monotonic() - start < 9.0  # gave up on the slow answer after the 2 s read timeout
    assert image.diff_ids == tuple(sha(l.tar) for l in _image("t").layers)
    deadline = time.monotonic() + 60
    while len(proxied.entries("GET", "/manifests/")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the delayed request is logged when the proxy is done with it
    outcomes = [e.outcome for e in proxied.entries("GET", "/manifests/")]
    assert outcomes[0] == "forwarded 200" and outcomes[1].startswith("delayed 10.0s then ")


def test_registry_dying_mid_push_leaves_no_tag(
        tmp_path: Path, registry: Registry, proxied: FaultProxy, isolated_docker_config: str) -> None:
    big = FakeImage([FakeLayer({"big.bin": os.urandom(2 * 1024 * 1024)}, "ADD big /")])
    proxied.add(Fault("die", "PATCH", "/blobs/uploads/", after_bytes=500_000))
    with pytest.raises(RegistryUnreachable, match=rf"cannot reach registry {proxied.host} .*gave up after 4 attempts"):
        _push_through(tmp_path, proxied, big, "dead", chunk_size=1 << 20)
    proxied.revive()
    assert not [e for e in registry.access_log_lines() if "/manifests/" in e.path and e.method == "PUT"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{registry.url}/v2/faulty/manifests/dead")
    assert e.value.code == 404


# -- bearer tokens: docker-registry with `auth: token`, and a token server signing JWTs with openssl -------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenServer:
    """A token endpoint: checks Basic credentials, grants every asked scope as an RS256 JWT (x5c header)."""

    def __init__(self, directory: Path, service: str, issuer: str) -> None:
        self.key, self.cert = str(directory / "key.pem"), str(directory / "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out",
                        self.cert, "-days", "2", "-subj", "/CN=lamina-test-token-issuer"],
                       check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True, timeout=60, stdin=subprocess.DEVNULL).stdout
        self._x5c = base64.b64encode(der).decode()
        self.service, self.issuer = service, issuer
        self.requests: List[Dict[str, object]] = []
        import http.server
        import threading
        import urllib.parse

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                auth = self.headers.get("Authorization") or ""
                ok = auth == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                server.requests.append({"scopes": query.get("scope", []), "ok": ok})
                if not ok:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(query.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/token"

    def token(self, scopes: List[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": USER, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                                   check=True, capture_output=True, timeout=60).stdout
        return signing_input + "." + _b64url(signature)

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def _start_custom_registry(root: Path, auth: Optional[dict] = None, tls: Optional[dict] = None,  # type: ignore[type-arg]
                           ca: Optional[str] = None) -> Registry:
    """docker-registry with settings start_registry() does not offer (token auth, TLS); ready when /v2/ answers."""
    import ssl

    root.mkdir(parents=True)
    port = free_port()
    http: dict = {"addr": f"127.0.0.1:{port}", "secret": os.urandom(8).hex()}  # type: ignore[type-arg]
    if tls:
        http["tls"] = tls
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")}, "delete": {"enabled": True}},
        "http": http,
    }
    if auth:
        config["auth"] = auth
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    with open(root / "access.log", "ab") as out, open(root / "registry.log", "ab") as err:
        proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True, cwd=str(root))
    registry = Registry(port=port, root=root, process=proc)
    url = f"{'https' if tls else 'http'}://{registry.host}/v2/"
    context = ssl.create_default_context(cafile=ca) if ca else None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2, context=context)
            return registry
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return registry
        except OSError:
            pass
        time.sleep(0.1)
    registry.stop()
    raise RuntimeError(f"registry did not start: {(root / 'registry.log').read_text()[-2000:]}")


def test_bearer_token_auth_push_pull_and_mount(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = _TokenServer(tmp_path, "lamina-test-registry", "lamina-test-issuer")
    registry = _start_custom_registry(tmp_path / "token-registry", auth={"token": {
        "realm": tokens.realm, "service": tokens.service, "issuer": tokens.issuer, "rootcertbundle": tokens.cert}})
    try:
        monkeypatch.setenv("DOCKER_CONFIG", _docker_config(tmp_path, registry.host, USER, PASSWORD))
        fake = _image("bearer")
        code, out, err = _cli(capsys, "push", "oci:" + _layout(tmp_path, fake, "src"), "--to",
                              f"{registry.host}/team/one:1")
        assert code == 0, err
        digest = out.split()[2]
        assert all(r["ok"] for r in tokens.requests) and tokens.requests
        assert {s for r in tokens.requests for s in r["scopes"]} == {"repository:team/one:pull,push"}  # type: ignore[attr-defined]
        assert len(tokens.requests) == 1  # one token, reused for every request of the push

        tokens.requests.clear()
        code, out, err = _cli(capsys, "push", f"docker://{registry.host}/team/one@{digest}", "--to",
                              f"{registry.host}/team/two:1")
        assert code == 0, err
        assert out.strip().endswith("(4 mounted)")
        assert ["repository:team/one:pull", "repository:team/two:pull,push"] in [
            sorted(r["scopes"]) for r in tokens.requests]  # type: ignore[call-overload]  # the mount's token

        code, out, err = _cli(capsys, "validate", f"docker://{registry.host}/team/two@{digest}")
        assert code == 0, err

        wrong = _docker_config(tmp_path, registry.host, USER, "wrong-password")
        monkeypatch.setenv("DOCKER_CONFIG", wrong)
        code, out, err = _cli(capsys, "layers", f"docker://{registry.host}/team/one@{digest}")
        assert code == 2
        token_host = tokens.realm.split("/")[2]
        assert err == (f"lamina: error: docker://{registry.host}/team/one@{digest}: the token endpoint {token_host} "
                       f"refused the credentials of {USER} from {wrong}/config.json auths (HTTP 401); check them or "
                       f"run `docker login {registry.host}`\n")
    finally:
        registry.stop()
        tokens.stop()


# -- TLS: a registry on 127.0.0.1 serving a certificate from a private CA ------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def test_tls_registry_is_verified_against_the_ca_bundle(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        isolated_docker_config: str) -> None:
    ca_key, ca, key, csr, cert, ext = (str(tmp_path / n) for n in
                                       ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "san.ext"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=lamina-test-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    Path(ext).write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
             "-extfile", ext)
    registry = _start_custom_registry(tmp_path / "tls-registry", tls={"certificate": cert, "key": key}, ca=ca)
    try:
        fake = _image("tls")
        code, out, err = _cli(capsys, "push", "oci:" + _layout(tmp_path, fake, "src"), "--to",
                              f"{registry.host}/secure:1", "--ca-bundle", ca)
        assert code == 0, err  # over HTTPS: this registry answers nothing else
        digest = out.split()[2]
        code, out, err = _cli(capsys, "validate", f"docker://{registry.host}/secure@{digest}", "--ca-bundle", ca)
        assert code == 0, err
        code, out, err = _cli(capsys, "layers", f"docker://{registry.host}/secure@{digest}")
        assert code == 2
        assert err.startswith(f"lamina: error: docker://{registry.host}/secure@{digest}: TLS with {registry.host} "
                              "failed (")
        assert "certificate verify failed" in err
        assert err.endswith("; for a private CA pass --ca-bundle PATH\n")  # loopback may use HTTP anyway
    finally:
        registry.stop()
