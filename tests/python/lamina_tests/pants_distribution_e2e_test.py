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
    build_image(a, f"FROM {BASE_IMAGE}\nRUN mkdir -p /opt/a && echo curl-1 > /opt/a/curl\nRUN echo second > /opt/a/second\n")
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
