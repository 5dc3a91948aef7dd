"""Scenario `engine`: from images in the local Docker engine, the seed's own starting point.

The seed's recipe starts with `docker save` of each image; lamina's `docker_layer`s name the
engine's images (`docker-daemon:`), and each extraction streams its image from the engine. Every
trial gives the three source images new content first (new layers, new image IDs), so neither
side has seen them; pantsd stays warm, as a user's would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lamina_bench.context import Bench
from lamina_bench.images import BASE_TAG, PREFIX, SourceImages
from lamina_bench.measure import log, pair, rmtree
from lamina_bench.pants import PantsRepo, io_per_process, lamina_processes, phases
from lamina_bench.seed import SEED_TAG, cold_build_cache, run_seed
from lamina_tests.support.services import docker

G_ENGINE = "from the local engine, all content new"
G_ENGINE_INCR = "from the local engine, after one source image changed"
OUT = f"{PREFIX}/engine"

ENGINE_BUILD = f"""
docker_layer(name="l1", image="docker-daemon:{PREFIX}/img1:latest", layer=-1)
docker_layer(name="l2", image="docker-daemon:{PREFIX}/img2:latest", layer=-1)
docker_layer(name="l3", image="docker-daemon:{PREFIX}/img3:latest", layer=-1)

composed_image(name="composed", base="docker-daemon:{BASE_TAG}", layers=[":l1", ":l2", ":l3"],
               repository="{OUT}", image_tags=["latest"])

# The same image loaded straight into the engine: no archive in dist/, only missing layers sent.
composed_image(name="composed_daemon", base="docker-daemon:{BASE_TAG}", layers=[":l1", ":l2", ":l3"],
               repository="{OUT}-daemon", image_tags=["latest"], output_format="docker-daemon")
"""


@dataclass
class EngineScenario:
    bench: Bench
    images: Optional[SourceImages] = None
    repo: Optional[PantsRepo] = None

    @property
    def work(self):  # type: ignore[no-untyped-def]
        return self.bench.work / "engine"

    def setup(self) -> None:
        b = self.bench
        self.images = b.source_images()
        self.repo = PantsRepo(b.tools, self.work / "repo", self.work / "pants-caches", b.wheels)
        self.repo.write("images/BUILD", ENGINE_BUILD)
        (self.work / "tars").mkdir(parents=True, exist_ok=True)
        self.repo.pants("package", "images::")  # the core's PEX and pantsd: warm, as a user's
        b.objects.note(f"{OUT}-daemon:latest")

    def layer_bytes(self) -> int:
        """Bytes of the image's layers (base + the three top ones), as the engine's archives hold them."""
        assert self.images is not None
        return sum(self.images.sizes.layer_mb) * 1000 * 1000

    def seed_from_engine(self, key: str, label: str, group: str, names, hits_note: str) -> None:  # type: ignore[no-untyped-def]
        """`docker save` of the images named (the others' tars from before are reused: the seed's
        best case), then the recipe; its image ends up in the engine."""
        b = self.bench
        assert self.images is not None
        tars = self.work / "tars"
        saved = sum(self.images.save_one(n, tars) for n in names)
        result = run_seed(self.work / "seed", [tars / f"{n}.tar" for n in self.images.names], b.objects)
        b.results.record(key, label, group, saved + result.seconds, note=hits_note)

    def pants(self, target: str, key: str, label: str, group: str, extracts: int) -> None:
        assert self.repo is not None
        result = self.repo.pants("package", target)
        r = self.bench.results
        r.record(key, label, group, result.seconds, note="warm pantsd")
        r.add_phases(label, phases(result))
        if group == G_ENGINE:
            r.add_io(f"pants package from the engine ({target})", io_per_process(result), self.layer_bytes())
        got = len(lamina_processes(result, "extract"))
        if got != extracts:
            r.problem(f"engine {label}: ran {got} extract processes, expected {extracts}")

    def run_once(self, i: int) -> None:
        b = self.bench
        assert self.images is not None
        guard = b.results.attempt
        log(f"engine: run {i + 1}/{b.cfg.runs}")
        names = self.images.names
        for target, key, what in (("images:composed", "eng_pants_cold", "docker-archive output"),
                                  ("images:composed_daemon", "eng_pants_cold_daemon", "docker-daemon output")):
            self.images.renew(save=False)  # new content: nothing has seen it
            cold_build_cache(b.objects, [SEED_TAG])
            pair(i, lambda: guard("engine: seed recipe", lambda: self.seed_from_engine(
                     "eng_seed_cold", "(a) seed recipe from the engine (docker save x3, untar, docker build)",
                     G_ENGINE, names, "cold build cache")),
                 lambda: guard(f"engine: pants {what}", lambda: self.pants(
                     target, key, f"(b) pants package from the engine, {what}", G_ENGINE, extracts=3)))
        # one source changed: seed saves only it (the other tars are kept) and builds on its cache
        for target, key, what in (("images:composed", "eng_pants_incr", "docker-archive output"),
                                  ("images:composed_daemon", "eng_pants_incr_daemon", "docker-daemon output")):
            self.images.change_third()
            pair(i, lambda: guard("engine: seed incremental", lambda: self.seed_from_engine(
                     "eng_seed_incr", "(a) seed recipe from the engine, one image changed", G_ENGINE_INCR,
                     ("img3",), "warm build cache; the changed image is the last ADD")),
                 lambda: guard(f"engine: pants incremental {what}", lambda: self.pants(
                     target, key, f"(b) pants package from the engine, one changed, {what}", G_ENGINE_INCR,
                     extracts=1)))

    def teardown(self) -> None:
        if self.repo is not None:
            self.repo.stop_pantsd()
        rmtree(self.work / "tars")
        docker("image", "rm", "-f", f"{OUT}:latest", f"{OUT}-daemon:latest", check=False)


def run_engine(bench: Bench) -> None:
    scenario = EngineScenario(bench)
    try:
        scenario.setup()
        for i in range(bench.cfg.runs):
            bench.results.note_load("engine", i)
            scenario.run_once(i)
    finally:
        scenario.teardown()
