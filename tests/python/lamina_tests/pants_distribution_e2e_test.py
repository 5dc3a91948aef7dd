"""End to end: registry sources, `pants publish` and `pants run` of composed images, on real parts."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import lamina.cli  # noqa: F401  (the test runs the CLI in a subprocess: this makes it a dependency)

from lamina_tests.support.images import BASE_IMAGE, build_base_image, build_image, docker_save
from lamina_tests.support.sample_repo import SampleRepo, completed_processes
from lamina_tests.support.services import docker, require_docker, start_registry

PREFIX = f"lamina-dist-{uuid.uuid4().hex[:8]}"
USER, PASSWORD = "lamina", "s3cret"


def _skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    require_docker()
    build_base_image()
    tmp = tmp_path_factory.mktemp("dist")
    a = f"{PREFIX}/a:latest"
    build_image(a, f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/a && echo curl-1 > /opt/a/curl\nRUN echo second > /opt/a/second && mkdir -p /var/lib/dpkg && printf "
                   "'Package: curl\\nStatus: install ok installed\\nArchitecture: amd64\\nVersion: 7.88.1-10\\n\\n' "
                   "> /var/lib/dpkg/status\n")
    registry = start_registry(tmp / "registry", htpasswd=(USER, PASSWORD))
    config_dir = tmp / "docker-config"
    config_dir.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    creds = f"--creds={USER}:{PASSWORD}"
    # The registry source: image A pushed as it is (with lamina's own push), named by digest.
    docker_save(a, tmp / "a.tar")
    subprocess.run(
        [sys.executable, "-c", "import sys; from lamina.cli import main; sys.exit(main(sys.argv[1:]))",
         "push", str(tmp / "a.tar"), f"--to={registry.host}/src/a:1"],
        check=True, env={**os.environ, "DOCKER_CONFIG": str(config_dir), "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    digest = json.loads(_skopeo("inspect", "--tls-verify=false", creds, f"docker://{registry.host}/src/a:1"))["Digest"]
    repo = SampleRepo(tmp / "repo")
    (repo.root / "images").mkdir()
    docker_save(BASE_IMAGE, repo.root / "images" / "base.tar")
    repo.write(
        "images/BUILD",
        f"""
docker_layer(name="a_top", image="docker://{registry.host}/src/a@{digest}", layer=-1)
composed_image(
    name="dev", base="base.tar", layers=[":a_top"], repository="{PREFIX}/dev", image_tags=["v1"],
    registries=["{registry.host}"],
)
composed_image(
    name="dev2", base="base.tar", layers=[":a_top"], repository="{PREFIX}/dev2", image_tags=["v1"],
    env={{"SECOND": "1"}}, registries=["{registry.host}"],
)
composed_image(name="skipped", base="base.tar", registries=["{registry.host}"], skip_push=True)
""",
    )
    env = {"DOCKER_CONFIG": str(config_dir)}
    yield repo, registry, env, creds, a
    registry.stop()
    docker("image", "rm", "-f", a, f"{PREFIX}/dev:v1", check=False)


def test_layer_from_a_registry_fetches_only_its_blob(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, creds, a = setup
    layers = json.loads(_skopeo("inspect", "--tls-verify=false", creds, f"docker://{registry.host}/src/a:1"))["Layers"]
    registry.clear_access_log()
    repo.pants("package", "images:dev", env=env)
    fetched = {e.path.rsplit("/", 1)[-1] for e in registry.access_log_lines()
               if e.method == "GET" and "/src/a/blobs/" in e.path and e.status == 200}
    assert layers[-1] in fetched, fetched
    assert not (set(layers[:-1]) & fetched), f"fetched other layers: {set(layers[:-1]) & fetched}"


def test_publish_pushes_and_a_second_image_uploads_no_layer_bytes(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, creds, a = setup
    first = repo.pants("publish", "images:dev", env=env)
    assert f"{registry.host}/{PREFIX}/dev:v1" in first.stdout + first.stderr
    manifest = json.loads(_skopeo("inspect", "--tls-verify=false", creds, f"docker://{registry.host}/{PREFIX}/dev:v1"))
    assert len(manifest["Layers"]) == 2

    second = repo.pants("publish", "images:dev2", "images:skipped", env=env)
    output = second.stdout + second.stderr
    pushed = re.search(r"uploaded (\d+) bytes, skipped (\d+) bytes", output)
    assert pushed, output
    uploaded, skipped = int(pushed.group(1)), int(pushed.group(2))
    assert uploaded < 4096, output  # the new config and nothing else: layers are skipped or mounted
    assert skipped > 100_000, output
    assert "skip_push" in output, output


def test_publish_attaches_the_sbom_as_a_referrer_and_layers_shows_the_packages(setup) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    repo, registry, env, creds, a = setup
    result = repo.pants("publish", "images:dev", env=env)
    output = result.stdout + result.stderr
    pushed = f"{registry.host}/{PREFIX}/dev"
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", creds, f"docker://{pushed}:v1").encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    tag = digest.replace(":", "-")
    assert f"attached SBOM dev.cdx.json to {pushed}@{digest}" in output and f"referrers tag {tag}" in output, output
    # discovered as a client does without the referrers API: the index under the referrers tag
    index = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", creds, f"docker://{pushed}:{tag}"))
    (entry,) = [m for m in index["manifests"] if m["artifactType"] == "application/vnd.cyclonedx+json"]
    artifact = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", creds, f"docker://{pushed}@{entry['digest']}"))
    assert artifact["subject"]["digest"] == digest
    blob = subprocess.run(["curl", "-sf", "-u", f"{USER}:{PASSWORD}",
                           f"{registry.url}/v2/{PREFIX}/dev/blobs/{artifact['layers'][0]['digest']}"],
                          check=True, capture_output=True).stdout
    doc = json.loads(blob)
    assert doc["metadata"]["component"]["version"] == digest  # the image as pushed
    (curl,) = [c for c in doc["components"] if c["type"] == "library"]
    props = {p["name"]: p["value"] for p in curl["properties"]}
    assert curl["name"] == "curl" and curl["version"] == "7.88.1-10", curl
    assert props["lamina:layer:target"] == "images:a_top" and props["lamina:layer:digest"] == json.loads(raw)["layers"][-1]["digest"]
    # a second publish adds no second entry
    repo.pants("publish", "images:dev", env=env)
    again = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", creds, f"docker://{pushed}:{tag}"))
    assert again == index
    listing = repo.pants("layers", "--layers-packages", "images:dev", env=env).stdout
    assert "packages it brought (1):" in listing and "curl 7.88.1-10 amd64  (dpkg)" in listing, listing


def test_publish_with_a_wrong_password_fails_clearly_and_pushes_nothing(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, creds, a = setup
    bad = tmp_path / "bad-config"
    bad.mkdir()
    auth = base64.b64encode(f"{USER}:wrong".encode()).decode()
    (bad / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    repo.write("wrong/BUILD", f'composed_image(name="w", base="../images/base.tar", repository="{PREFIX}/wrong", registries=["{registry.host}"])\n')
    result = repo.pants("publish", "wrong:w", env={"DOCKER_CONFIG": str(bad)}, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "credentials" in output and registry.host in output, output
    assert "Traceback" not in output
    tags = subprocess.run(["skopeo", "inspect", "--tls-verify=false", creds,
                           f"docker://{registry.host}/{PREFIX}/wrong:latest"], capture_output=True, text=True)
    assert tags.returncode != 0


def test_run_loads_only_missing_layers_and_shows_the_output(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, creds, a = setup
    result = repo.pants("run", "images:dev", "--", "cat", "/opt/a/second", env=env)
    assert "second" in result.stdout, result.stdout + result.stderr
    loaded = re.search(r"\((\d+) of (\d+) layers already in the engine\)", result.stderr)
    assert loaded and int(loaded.group(1)) >= 1, result.stderr  # the busybox base was not sent again
    assert any(p.startswith("lamina: load") for p in completed_processes(result.stderr))


BIG = 200 * 1000 * 1000  # one layer of this size: no process of publish or run may copy it


def _kept_sandboxes(output: str, description: str) -> list:
    """The sandboxes Pants kept (--keep-sandboxes=always) for processes whose description starts so."""
    found = re.findall(r"[Pp]reserving local process execution dir [`'\"]?(/[^`'\"\s]+)[`'\"]? for [`'\"]?([^\n]*)", output)
    return [Path(path) for path, what in found if what.lower().startswith(description.lower())]


def _bytes_in(sandbox: Path) -> int:
    """Bytes of the regular files in a sandbox, not following symlinks (read-only inputs are links)."""
    total = 0
    for dirpath, dirnames, names in os.walk(sandbox, followlinks=False):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


@pytest.fixture(scope="module")
def big(setup):  # type: ignore[no-untyped-def]
    repo, registry, env, creds, a = setup
    tag = f"{PREFIX}/big:1"
    build_image(tag, f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt && head -c {BIG} /dev/urandom > /opt/big\n")
    (repo.root / "bigimg").mkdir(exist_ok=True)
    docker_save(tag, repo.root / "bigimg" / "big.tar")
    docker("image", "rm", "-f", tag, check=False)
    repo.write("bigimg/BUILD", f"""
docker_layer(name="big_top", image="big.tar", layer=-1)
composed_image(name="big", base="../images/base.tar", layers=[":big_top"], repository="{PREFIX}/big",
               image_tags=["v1"], registries=["{registry.host}"])
""")
    yield repo
    docker("image", "rm", "-f", f"{PREFIX}/big:v1", check=False)


def test_run_and_publish_read_the_layers_where_pants_keeps_them_never_a_copy(setup, big) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, creds, a = setup
    repo.pants("package", "bigimg:big", env=env)  # built first, so the runs below do only their own work
    ran = repo.pants("--keep-sandboxes=always", "run", "bigimg:big", "--", "wc", "-c", "/opt/big", env=env)
    published = repo.pants("--keep-sandboxes=always", "publish", "bigimg:big", env=env)
    kept = {what: _kept_sandboxes(result.stderr, what) for what, result in
            (("lamina: load", ran), ("interactive process", published))}
    every = _kept_sandboxes(ran.stderr, "") + _kept_sandboxes(published.stderr, "")
    try:
        assert str(BIG) in ran.stdout, ran.stdout + ran.stderr
        manifest = json.loads(_skopeo("inspect", "--tls-verify=false", creds, f"docker://{registry.host}/{PREFIX}/big:v1"))
        assert len(manifest["Layers"]) == 2
        for what, sandboxes in kept.items():
            assert sandboxes, f"no kept sandbox of {what!r} in:\n{ran.stderr if what.startswith('lamina') else published.stderr}"
            for sandbox in sandboxes:
                assert _bytes_in(sandbox) < BIG // 10, f"{what}: {sandbox} holds a copy of the layer"
                links = [p for p in sandbox.iterdir() if p.name.startswith("__layer") and p.is_symlink()]
                assert links, f"{what}: the layer bundle in {sandbox} is not linked read-only: {sorted(sandbox.iterdir())}"
    finally:
        for sandbox in every:  # all that were kept, not only the ones looked at
            subprocess.run(["rm", "-rf", str(sandbox)], check=False)


def test_output_format_docker_daemon_loads_the_image_and_a_change_sends_only_its_layer(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry, env, creds, a = setup
    run_id = uuid.uuid4().hex[:8]
    (repo.root / "daemon").mkdir(exist_ok=True)

    def save(name: str, content: str) -> None:
        tag = f"{PREFIX}/{name}:src"
        build_image(tag, f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/{name} && echo {content} > /opt/{name}/file\n")
        docker_save(tag, repo.root / "daemon" / f"{name}.tar")
        docker("image", "rm", "-f", tag, check=False)

    save("x", f"x-{run_id}")
    save("y", f"y-{run_id}")
    image = f"{PREFIX}/indaemon"
    repo.write("daemon/BUILD", f"""
docker_layer(name="x", image="x.tar", layer=-1)
docker_layer(name="y", image="y.tar", layer=-1)
composed_image(name="indaemon", base="../images/base.tar", layers=[":x", ":y"], repository="{image}",
               image_tags=["v1"], output_format="docker-daemon")
""")
    try:
        first = repo.pants("package", "daemon:indaemon", env=env)
        out = first.stdout + first.stderr
        assert re.search(rf"loaded sha256:[0-9a-f]+ as {re.escape(image)}:v1", out), out
        assert sorted(p.name for p in (repo.root / "dist" / "daemon").iterdir()) == ["indaemon.cdx.json", "indaemon.layers.json"]
        trail = json.loads((repo.root / "dist" / "daemon" / "indaemon.layers.json").read_text())
        inspected = json.loads(docker("image", "inspect", f"{image}:v1").stdout)[0]
        assert inspected["RootFS"]["Layers"] == [row["diff_id"] for row in trail["layers"]]  # digest-true
        assert inspected["Id"] == trail["config"]
        ran = docker("run", "--rm", "--network", "none", f"{image}:v1", "cat", "/opt/x/file", "/opt/y/file")
        assert ran.stdout.split() == [f"x-{run_id}", f"y-{run_id}"]

        save("y", f"y2-{run_id}")  # one source changed: only its layer goes to the engine
        second = repo.pants("package", "daemon:indaemon", env=env)
        out = second.stdout + second.stderr
        trail = json.loads((repo.root / "dist" / "daemon" / "indaemon.layers.json").read_text())
        sent = re.search(r"sent (\d+) bytes, skipped (\d+) bytes \((\d+) of (\d+) layers already in the engine\)", out)
        assert sent, out
        assert (int(sent.group(3)), int(sent.group(4))) == (len(trail["layers"]) - 1, len(trail["layers"]))
        assert int(sent.group(1)) == trail["layers"][-1]["size"]
        ran = docker("run", "--rm", "--network", "none", f"{image}:v1", "cat", "/opt/y/file")
        assert ran.stdout.split() == [f"y2-{run_id}"]
    finally:
        docker("image", "rm", "-f", f"{image}:v1", check=False)
