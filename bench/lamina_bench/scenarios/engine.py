"""Scenario `engine`: from images in the local Docker engine, the seed's own starting point.

The seed's recipe starts with `docker save` of each image; lamina's `docker_layer`s name the
engine's images (`docker-daemon:`), and each extraction streams its image from the engine. Every
trial gives the three source images new content first (new layers, new image IDs), so neither
side has seen them; pantsd stays warm, as a user's would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from lamina_bench.config import Sizes
from lamina_bench.context import Bench
from lamina_bench.images import BASE_TAG, PREFIX, SourceImages
from lamina_bench.measure import log, pair, rmtree
from lamina_bench.pants import PantsRepo, io_per_process, lamina_processes, phases
from lamina_bench.seed import SEED_TAG, cold_build_cache, run_seed
from lamina_tests.support.services import docker

G_ENGINE = "from the local engine, all content new"
G_ENGINE_INCR = "from the local engine, after one source image changed"
G_LARGE_INCR = "from the local engine, 2 GB of layers, after the same 100 MB source changed"
OUTPUTS = (("composed", "", "docker-archive output"), ("composed_oci", "_oci", "oci output"),
           ("composed_daemon", "_daemon", "docker-daemon output"))


def engine_build(prefix: str) -> str:
    """The sample repo's BUILD: the three images' top layers on the base, in each output format."""
    out = f"{prefix}/engine"
    return f"""
docker_layer(name="l1", image="docker-daemon:{prefix}/img1:latest", layer=-1)
docker_layer(name="l2", image="docker-daemon:{prefix}/img2:latest", layer=-1)
docker_layer(name="l3", image="docker-daemon:{prefix}/img3:latest", layer=-1)

composed_image(name="composed", base="docker-daemon:{BASE_TAG}", layers=[":l1", ":l2", ":l3"],
               repository="{out}", image_tags=["latest"])

# The same image as an OCI layout in dist/.
composed_image(name="composed_oci", base="docker-daemon:{BASE_TAG}", layers=[":l1", ":l2", ":l3"],
               repository="{out}-oci", image_tags=["latest"], output_format="oci")

# The same image loaded straight into the engine: no archive in dist/, only missing layers sent.
composed_image(name="composed_daemon", base="docker-daemon:{BASE_TAG}", layers=[":l1", ":l2", ":l3"],
               repository="{out}-daemon", image_tags=["latest"], output_format="docker-daemon")
"""


@dataclass
class EngineScenario:
    """`name`: its scratch dir and log prefix; `sizes`: its own source images of these sizes
    (tagged under `prefix`), or None for the bench's shared ones; `keys`: its series' key prefix;
    `cold`: also measure all-new trials; `outputs`: the incremental trials' targets."""

    bench: Bench
    name: str = "engine"
    sizes: Optional[Sizes] = None
    prefix: str = PREFIX
    keys: str = "eng"
    cold: bool = True
    incr_group: str = G_ENGINE_INCR
    outputs: Tuple[Tuple[str, str, str], ...] = OUTPUTS
    images: Optional[SourceImages] = None
    repo: Optional[PantsRepo] = None

    @property
    def work(self):  # type: ignore[no-untyped-def]
        return self.bench.work / self.name

    def setup(self) -> None:
        b = self.bench
        if self.sizes is None:
            self.images = b.source_images()
        else:
            self.images = SourceImages(self.work / "src", self.work / "archives", self.sizes, b.objects,
                                       prefix=self.prefix)
            self.images.build(save=False)  # named in the engine: no archive needed (change_third saves img3's)
        self.repo = PantsRepo(b.tools, self.work / "repo", self.work / "pants-caches", b.wheels)
        self.repo.write("images/BUILD", engine_build(self.prefix))
        (self.work / "tars").mkdir(parents=True, exist_ok=True)
        if not self.cold:  # the incremental seed re-saves only the changed image: the others' tars
            self.images.save_all(self.work / "tars")
        self.repo.pants("package", "images::")  # the core's PEX and pantsd: warm, as a user's
        for _, suffix, _ in OUTPUTS:
            b.objects.note(f"{self.prefix}/engine{suffix}:latest")

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
        log(f"{self.name}: run {i + 1}/{b.cfg.runs}")
        names = self.images.names
        k = self.keys

        def paired(seed, pants, target: str) -> None:  # type: ignore[no-untyped-def]
            # The engine keeps the seed's image, and its `ADD`ed layers can be byte-identical to the
            # sources' (same files, same tar writer): a docker-daemon load after it would find the
            # whole stack there and send nothing. So that output is measured before the seed, always.
            if target.endswith("_daemon"):
                pants()
                seed()
            else:
                pair(i, seed, pants)

        if self.cold:
            for target, suffix, what in (OUTPUTS[0], OUTPUTS[2]):
                self.images.renew(save=False)  # new content: nothing has seen it
                cold_build_cache(b.objects, [SEED_TAG])
                paired(lambda: guard(f"{self.name}: seed recipe", lambda: self.seed_from_engine(
                           f"{k}_seed_cold", "(a) seed recipe from the engine (docker save x3, untar, docker build)",
                           G_ENGINE, names, "cold build cache")),
                       lambda: guard(f"{self.name}: pants {what}", lambda: self.pants(
                           f"images:{target}", f"{k}_pants_cold{suffix}", f"(b) pants package from the engine, {what}",
                           G_ENGINE, extracts=3)), target)
        # one source changed: seed saves only it (the other tars are kept) and builds on its cache
        for target, suffix, what in self.outputs:
            self.images.change_third()
            paired(lambda: guard(f"{self.name}: seed incremental", lambda: self.seed_from_engine(
                       f"{k}_seed_incr", "(a) seed recipe from the engine, one image changed", self.incr_group,
                       ("img3",), "warm build cache; the changed image is the last ADD")),
                   lambda: guard(f"{self.name}: pants incremental {what}", lambda: self.pants(
                       f"images:{target}", f"{k}_pants_incr{suffix}",
                       f"(b) pants package from the engine, one changed, {what}", self.incr_group, extracts=1)),
                   target)

    def teardown(self) -> None:
        if self.repo is not None:
            self.repo.stop_pantsd()
        rmtree(self.work / "tars")
        if self.sizes is not None:  # its own images' build contexts and archives: GBs for `large`
            rmtree(self.work / "src")
            rmtree(self.work / "archives")
        docker("image", "rm", "-f", *(f"{self.prefix}/engine{suffix}:latest" for _, suffix, _ in OUTPUTS), check=False)


def _run(bench: Bench, scenario: EngineScenario) -> None:
    try:
        scenario.setup()
        for i in range(bench.cfg.runs):
            bench.results.note_load(scenario.name, i)
            scenario.run_once(i)
    finally:
        scenario.teardown()


def run_engine(bench: Bench) -> None:
    _run(bench, EngineScenario(bench))


def run_large(bench: Bench) -> None:
    """The engine scenario's incremental trials with 2 GB of layers (the same 100 MB source
    changes): lamina's time should follow the changed bytes, not the image's size. Run it with
    `engine`, whose 500 MB figures it is compared with."""
    sizes = bench.cfg.large_sizes
    _run(bench, EngineScenario(bench, name="large", sizes=sizes, prefix=f"{PREFIX}-large", keys="large",
                               cold=False, incr_group=G_LARGE_INCR, outputs=OUTPUTS[1:]))
