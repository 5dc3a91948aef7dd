"""End to end: lamina installed in a repository from its wheels, as README's "Use lamina in your repo" says.

The wheels are this checkout's `pants-plugins:dist` (lamina-pants) and `src/python:dist` (lamina),
built by Pants for this test (`runtime_package_dependencies`). The sample repository has no
pythonpath into this checkout, no lamina sources and no `[lamina].core_target`: only
`[GLOBAL].plugins = ["lamina-pants==X"]`, `backend_packages = ["lamina_pants"]` and
`[python-repos].find_links` naming the wheels' directory. So the plugin Pants loads is the one its
plugin resolver installed from the lamina-pants wheel (with the lamina wheel it requires, and
pantsbuild.pants checked against the running Pants), and the core's PEX is built from the
`lamina==X` requirement.
"""
from __future__ import annotations

import io
import json
import shutil
import tarfile
import urllib.request
from pathlib import Path

import pytest

from lamina import __version__

from lamina_tests.support.sample_repo import SampleRepo
from lamina_tests.support.services import start_registry

BUILD = """
files(name="f", sources=["hello.txt"])
composed_image(
    name="img", base="scratch", platform="linux/amd64", files=[":f"], files_dest="/srv",
    repository="lamina-wheel/img", image_tags=["v1"], registries=["{registry}"],
)
"""


def _built_wheels() -> list[Path]:
    """The wheels Pants built into this test's sandbox (at their dist/ paths: its root)."""
    found = sorted(Path.cwd().glob("*.whl"))
    names = sorted(p.name for p in found)
    expected = sorted([f"lamina-{__version__}-py3-none-any.whl", f"lamina_pants-{__version__}-py3-none-any.whl"])
    assert names == expected, f"the sandbox holds {names}, not {expected}: see runtime_package_dependencies in BUILD"
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "wheels"
    wheels.mkdir()
    for wheel in _built_wheels():
        shutil.copyfile(wheel, wheels / wheel.name)
    registry = start_registry(tmp / "registry")
    repo = SampleRepo(tmp / "repo", installed_plugin=(f"lamina-pants=={__version__}", wheels))
    repo.write("images/hello.txt", "hello from an installed lamina\n")
    repo.write("images/BUILD", BUILD.format(registry=registry.host))
    yield repo, registry
    registry.stop()


def test_the_sample_repo_has_nothing_of_this_checkout(setup) -> None:  # type: ignore[no-untyped-def]
    repo, _ = setup
    toml = (repo.root / "pants.toml").read_text()
    assert "pythonpath" not in toml and "core_target" not in toml, toml
    assert f'plugins = ["lamina-pants=={__version__}"]' in toml, toml
    assert not (repo.root / "src").exists() and not list(repo.root.rglob("*.py"))


def test_package_with_the_installed_plugin(setup) -> None:  # type: ignore[no-untyped-def]
    repo, _ = setup
    result = repo.pants("package", "images:img")
    log = result.stdout + result.stderr
    assert f"lamina=={__version__}" in log, log  # the core's PEX came from the requirement
    archive = repo.root / "dist" / "images" / "img.tar"
    assert archive.is_file(), log
    with tarfile.open(archive) as tar:
        (entry,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] == ["lamina-wheel/img:v1"], entry
        (layer,) = entry["Layers"]
        with tarfile.open(fileobj=io.BytesIO(tar.extractfile(layer).read())) as layer_tar:  # type: ignore[union-attr]
            content = layer_tar.extractfile("srv/hello.txt").read()  # type: ignore[union-attr]
    assert content == b"hello from an installed lamina\n"


def test_publish_with_the_installed_plugin(setup) -> None:  # type: ignore[no-untyped-def]
    repo, registry = setup
    result = repo.pants("publish", "images:img")
    request = urllib.request.Request(
        f"{registry.url}/v2/lamina-wheel/img/manifests/v1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        manifest = json.loads(response.read())
    assert len(manifest["layers"]) == 1, (manifest, result.stderr)
