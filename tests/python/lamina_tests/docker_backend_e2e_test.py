"""End to end with Pants' own docker backend: a `docker_image` target as the `image`/`base` of lamina's
targets (built, then read from the engine by its ID), and a lamina image used by a Dockerfile's FROM."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from lamina.sources import open_image
from lamina_tests.support.images import BASE_IMAGE, build_base_image
from lamina_tests.support.sample_repo import SampleRepo
from lamina_tests.support.services import docker, require_docker

DOCKER_TOML = '[docker]\nenv_vars = ["DOCKER_BUILDKIT=0", "DOCKER_HOST"]\n'
BACKEND = '--backend-packages=+["pants.backend.docker"]'


def test_a_docker_image_target_is_a_source_and_a_lamina_image_is_a_from(tmp_path: Path) -> None:
    require_docker()
    build_base_image()
    nonce = uuid.uuid4().hex[:12]
    repo = SampleRepo(tmp_path / "repo", extra_toml=DOCKER_TOML)
    repo.write("app/hello.txt", f"hello {nonce}\n")
    repo.write("app/Dockerfile", f"FROM {BASE_IMAGE}\nCOPY app/hello.txt /opt/hello.txt\n")
    repo.write("app/next/Dockerfile", f"FROM lamina-dk/composed:{nonce}\nCOPY app/hello.txt /opt/again.txt\n")
    repo.write(
        "app/BUILD",
        f"""
file(name="hello", source="hello.txt")
docker_image(name="app_image", dependencies=[":hello"], repository="lamina-dk/app", image_tags=["{nonce}"])
docker_layer(name="top", image=":app_image", layer=-1)
composed_image(name="img", base="scratch", platform="linux/amd64", layers=[":top"])
composed_image(
    name="composed", base=":app_image", repository="lamina-dk/composed", image_tags=["{nonce}"],
    output_format="docker-daemon", cmd=["cat", "/opt/hello.txt", "/opt/again.txt"],
)
""",
    )
    repo.write(
        "app/next/BUILD",
        f'docker_image(name="next", dependencies=["app:hello"], repository="lamina-dk/next", image_tags=["{nonce}"])\n',
    )
    try:
        repo.pants(BACKEND, "package", "app:img", "app:composed")
        # The layer taken from the docker_image is the one the engine holds for it: same diff_id.
        engine_layers = json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                          f"lamina-dk/app:{nonce}").stdout)
        image = open_image(str(repo.root / "dist" / "app" / "img.tar"))
        assert list(image.diff_ids) == engine_layers[-1:]
        composed = json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                     f"lamina-dk/composed:{nonce}").stdout)
        assert composed == engine_layers  # the base taken whole, digest-true
        audit = json.loads((repo.root / "dist" / "app" / "img.layers.json").read_text())
        assert audit["layers"][0]["source"] == "app:app_image"  # recorded by its address, not the engine ID

        # The other way: a Dockerfile FROM the image lamina loaded into the engine.
        repo.pants(BACKEND, "package", "app/next:next")
        out = docker("run", "--rm", "--network", "none", f"lamina-dk/next:{nonce}",
                     "cat", "/opt/hello.txt", "/opt/again.txt").stdout
        assert out == f"hello {nonce}\n" * 2, out
    finally:
        docker("image", "rm", "-f", f"lamina-dk/app:{nonce}", f"lamina-dk/composed:{nonce}",
               f"lamina-dk/next:{nonce}", check=False)
