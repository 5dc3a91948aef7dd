"""End to end: `packages=` lays what `pants package` builds (a pex_binary) into the image's files
layer, and the image runs it; a target that cannot be packaged, or `files` that provide none, fail
naming the target."""
from __future__ import annotations

import uuid
from pathlib import Path

from lamina_tests.support.debian import debian_image
from lamina_tests.support.images import docker_save
from lamina_tests.support.sample_repo import SampleRepo
from lamina_tests.support.services import docker, require_docker

BACKEND = '--backend-packages=+["pants.backend.python"]'
PYTHON_TOML = '[python]\ninterpreter_constraints = ["CPython>=3.9,<3.14"]\n'


def test_a_pex_binary_in_packages_runs_in_the_image(tmp_path: Path) -> None:
    require_docker()
    base = debian_image(include=("python3",))  # Debian 12 minbase with its python3 (3.11)
    nonce = uuid.uuid4().hex[:12]
    repo = SampleRepo(tmp_path / "repo", extra_toml=PYTHON_TOML)
    docker_save(base, repo.root / "images" / "py.tar")
    repo.write("app/main.py", f'import json, sys\nprint(json.dumps({{"hello": "{nonce}", "python": sys.version_info[:2]}}))\n')
    repo.write(
        "app/BUILD",
        'python_sources(name="src")\n'
        'pex_binary(name="app", entry_point="main.py", shebang="/usr/bin/env python3")\n',
    )
    repo.write(
        "images/BUILD",
        f"""
composed_image(
    name="img", base="py.tar", packages=["app:app"], files_dest="/srv",
    entrypoint=["/srv/app/app.pex"], repository="lamina-pkg/img", image_tags=["{nonce}"],
    output_format="docker-daemon",
)
composed_image(name="not_a_package", base="py.tar", packages=["app:src"])
composed_image(name="no_files", base="py.tar", files=["app:app"])
""",
    )
    ref = f"lamina-pkg/img:{nonce}"
    try:
        repo.pants(BACKEND, "package", "images:img")
        out = docker("run", "--rm", "--network", "none", ref).stdout
        assert f'"hello": "{nonce}"' in out and '"python": [3, 11]' in out, out

        bad = repo.pants(BACKEND, "package", "images:not_a_package", check=False)
        assert bad.returncode != 0 and "`packages` names app/main.py:src, a `python_source`" in bad.stderr and "cannot build" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
        none = repo.pants(BACKEND, "package", "images:no_files", check=False)
        assert none.returncode != 0 and "`files` names app:app" in none.stderr and "provides no files" in none.stderr, none.stderr
    finally:
        docker("image", "rm", "-f", ref, check=False)
