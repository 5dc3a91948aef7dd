"""End to end: the core's PEX is built from the `[lamina].core_target` target, and from nothing else."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from lamina_testing.images import FakeImage, FakeLayer, write_docker_classic
from lamina_tests.support.sample_repo import SampleRepo

BUILD = """
docker_layer(name="top", image="one.tar", layer=-1)
composed_image(name="img", base="scratch", platform="linux/amd64", layers=[":top"])
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> SampleRepo:
    repo = SampleRepo(tmp_path_factory.mktemp("core") / "repo")
    (repo.root / "images").mkdir()
    one = FakeImage([FakeLayer({"opt/": None, "opt/one": b"1"}, "ADD one /opt/")])
    write_docker_classic({"one:1": one}, str(repo.root / "images" / "one.tar"))
    repo.write("images/BUILD", BUILD)
    # Beside the core's files but not in its target: a test, and test helpers of their own package.
    repo.write("src/python/lamina/planted_test.py", "raise AssertionError('a test in the PEX')\n")
    repo.write("src/python/lamina_testing/__init__.py", "")
    return repo


def test_the_core_pex_holds_the_core_target_files_and_no_test_or_helper(repo: SampleRepo) -> None:
    result = repo.pants("--keep-sandboxes=always", "--no-local-cache", "package", "images:img")
    kept = re.findall(r"Preserving local process execution dir (\S+) for (.*)$", result.stderr, re.MULTILINE)
    try:
        (sandbox,) = [path for path, description in kept if description == "Building the lamina core"]
        pex = Path(sandbox) / "lamina.pex"  # packed layout: the sources lie in it as files
        held = sorted(str(p.relative_to(pex)) for p in pex.rglob("*.py") if p.relative_to(pex).parts[0] != "__pex__")
    finally:
        for path, _ in kept:
            shutil.rmtree(path, ignore_errors=True)
    core = repo.root / "src" / "python"
    expected = sorted(str(p.relative_to(core)) for p in (core / "lamina").rglob("*.py") if p.name != "planted_test.py")
    held_core = [p for p in held if p.startswith("lamina/")]
    assert "lamina/cli.py" in held_core and "lamina/formats/__init__.py" in held_core, held
    assert held_core == expected, held
    assert not [p for p in held if p.endswith("_test.py") or p.startswith("lamina_testing/")], held


def test_an_unset_core_target_fails_naming_the_option_and_the_fix(repo: SampleRepo) -> None:
    result = repo.pants("--lamina-core-target=", "--python-repos-indexes=[]", "package", "images:img", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # Unset, the core is the `lamina==<plugin version>` distribution; this repo has no wheel of it.
    from lamina import __version__

    assert "`[lamina].core_target` is not set" in output, output
    assert f"`lamina=={__version__}`" in output and "find_links" in output, output
    assert 'files(name="core_files"' in output and 'core_target = "src/python:core_files"' in output, output
