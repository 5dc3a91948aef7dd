"""The seed's recipe (bench/seed_recipe.sh) and a cold Docker build cache."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lamina_bench.env import SEED_RECIPE
from lamina_bench.images import BASE_TAG, DockerObjects
from lamina_bench.measure import Run, rmtree, run
from lamina_tests.support.services import docker, docker_env

SEED_TAG = "lamina-bench/seed:latest"


def cold_build_cache(objects: DockerObjects, output_tags: Sequence[str]) -> None:
    """No build cache for the recipe's Dockerfile: remove the outputs and every older build the
    bench made (the legacy builder's cache is their untagged parent images, removed with them),
    and prune BuildKit's cache too."""
    for tag in output_tags:
        docker("image", "rm", tag, check=False)
        objects.tags.discard(tag)
    objects.remove_untagged()
    docker("builder", "prune", "-af", check=False)


def cache_hits(result: Run) -> int:
    """How many Dockerfile steps the legacy builder took from its cache (`---> Using cache`)."""
    return result.stdout.count("Using cache")


def run_seed(work: Path, archives: Sequence[Path], objects: DockerObjects) -> Run:
    """One run of the recipe from `docker save` archives; its scratch dir is removed afterwards."""
    rmtree(work)
    try:
        result = run(["bash", str(SEED_RECIPE), BASE_TAG, SEED_TAG, str(work), *map(str, archives)],
                     env=docker_env())
    finally:
        rmtree(work)
    objects.note(SEED_TAG)
    return result
