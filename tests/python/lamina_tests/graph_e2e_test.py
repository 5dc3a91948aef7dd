"""End to end: `image`/`base` are edges of Pants' graph, so `pants dependents` and CI's
`--changed-since ... --changed-dependents=transitive` know which images use an archive."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from lamina_testing.images import FakeImage, FakeLayer, write_docker_classic
from lamina_tests.support.sample_repo import SampleRepo

BUILD = """
file(name="a_tar", source="a.tar")
file(name="b_tar", source="b.tar")
file(name="c_tar", source="c.tar")
docker_layer(name="a_top", image="a.tar", layer=-1)
docker_layer(name="c_top", image="c.tar", layer=-1)
composed_image(name="uses_a", base="scratch", platform="linux/amd64", layers=[":a_top"])
composed_image(name="uses_b", base="b.tar")
composed_image(name="on_uses_a", base=":uses_a", env={"ON": "a"})
"""


def _archive(path: Path, name: str, nonce: str) -> None:
    write_docker_classic({f"{name}:1": FakeImage([FakeLayer({f"{name}/x": f"{name}{nonce}".encode()}, f"ADD {name}")])},
                         str(path))


def _git(repo: SampleRepo, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo.root, check=True,
                   capture_output=True)


def test_dependents_and_changed_since_see_the_images_that_use_an_archive(tmp_path: Path) -> None:
    repo = SampleRepo(tmp_path / "repo", own_files=False)
    nonce = uuid.uuid4().hex
    images = repo.root / "images"
    images.mkdir()
    for name in ("a", "b", "c"):
        _archive(images / f"{name}.tar", name, nonce)
    repo.write("images/BUILD", BUILD)

    dependents = repo.pants("dependents", "--transitive", "images/a.tar").stdout.split()
    assert set(dependents) >= {"images:a_top", "images:uses_a", "images:on_uses_a"}, dependents
    assert "images:uses_b" not in dependents, dependents
    direct = repo.pants("dependents", "images/b.tar").stdout.split()
    assert direct == ["images:uses_b"], direct

    # An archive no target owns is an error that shows the line to add, no traceback; as a warning
    # (the option), it builds.
    repo.write("images/BUILD", BUILD.replace('file(name="c_tar", source="c.tar")\n', ""))
    result = repo.pants("dependencies", "images:c_top", check=False)
    assert result.returncode != 0, result.stderr
    assert 'Add to images/BUILD: file(name="c_tar", source="c.tar")' in result.stderr, result.stderr
    assert "images:c_top: `image` names images/c.tar, which no target owns" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    result = repo.pants("--lamina-unowned-archive-behavior=warning", "dependencies", "images:c_top")
    assert "[WARN]" in result.stderr and 'file(name="c_tar", source="c.tar")' in result.stderr, result.stderr
    repo.write("images/BUILD", BUILD)

    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    _archive(images / "a.tar", "a", nonce + "-changed")
    _git(repo, "commit", "-qam", "a changed")
    changed = repo.pants("--changed-since=HEAD~1", "--changed-dependents=transitive", "package")
    written = {p.name for p in (repo.root / "dist" / "images").iterdir() if p.name.endswith(".tar")}
    assert written == {"uses_a.tar", "on_uses_a.tar"}, (written, changed.stderr)
