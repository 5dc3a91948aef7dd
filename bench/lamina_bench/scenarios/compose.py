"""Scenario `compose`: the seed's recipe vs. lamina (Pants and CLI) vs. Pants' docker_image vs. the floor."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from lamina_bench.config import MB
from lamina_bench.context import Bench
from lamina_bench.images import BASE_TAG, SourceImages, extract_layer, layer_diff_ids
from lamina_bench.lamina_cli import floor_command, remove_output
from lamina_bench.measure import CommandFailed, Run, log, pair, rmtree, run
from lamina_bench.pants import PantsRepo, io_per_process, lamina_processes, phases
from lamina_bench.profile import profile_compose
from lamina_bench.seed import SEED_TAG, cache_hits, cold_build_cache, run_seed

G_COLD = "compose from archives, cold"
G_WARM = "re-run, nothing changed"
G_INCR = "after one source image changed"
G_CORE = "lamina core vs. floor"
G_CHECKS = "composition checks on / off"
G_RSS = "lamina processes (peak RSS)"
PANTS_DOCKER_TAG = "lamina-bench/pants-docker:latest"
OUT_TAG = "lamina-bench/composed:latest"
CLI_FLOOR_GOAL = 1.3

COMPOSED_BUILD = f"""
docker_layer(name="l1", image="img1.tar", layer=-1)
docker_layer(name="l2", image="img2.tar", layer=-1)
docker_layer(name="l3", image="img3.tar", layer=-1)

composed_image(
    name="composed",
    base="base.tar",
    layers=[":l1", ":l2", ":l3"],
    repository="{OUT_TAG.split(':')[0]}",
    image_tags=["latest"],
)

# The same image as an OCI layout directory: its blobs are the layer bundles' bytes, which Pants'
# store already holds, so capturing the output stores nothing new.
composed_image(
    name="composed_oci",
    base="base.tar",
    layers=[":l1", ":l2", ":l3"],
    repository="{OUT_TAG.split(':')[0]}-oci",
    image_tags=["latest"],
    output_format="oci",
)
"""
TARGET = "images:composed"
TARGET_OCI = "images:composed_oci"

DOCKER_BUILD = f"""
files(name="layers", sources=["layer*.tar"])

docker_image(
    name="seed",
    source="Dockerfile",
    dependencies=[":layers"],
    repository="{PANTS_DOCKER_TAG.split(':')[0]}",
    image_tags=["latest"],
)
"""

DOCKER_TOML = """
[docker]
env_vars = ["DOCKER_BUILDKIT=0", "DOCKER_HOST", "HOME"]

[dockerfile-parser]
# The built-in lockfile names files.pythonhosted.org URLs; resolve from the local wheels instead.
lockfile = "<none>"
"""


@dataclass
class ComposeScenario:
    bench: Bench
    images: Optional[SourceImages] = None
    repo: Optional[PantsRepo] = None
    docker_repo: Optional[PantsRepo] = None
    docker_na: Optional[str] = None
    floor_layers: List[Path] = field(default_factory=list)

    # --- set-up ---------------------------------------------------------------------------
    @property
    def work(self) -> Path:
        return self.bench.work / "compose"

    @property
    def archive_dir(self) -> Path:
        return self.work / "repo" / "images"

    def archives(self) -> List[Path]:
        assert self.images is not None
        return [self.archive_dir / f"{n}.tar" for n in self.images.names]

    def base_archive(self) -> Path:
        return self.archive_dir / "base.tar"

    def setup(self) -> None:
        b = self.bench
        self.repo = PantsRepo(b.tools, self.work / "repo", self.work / "pants-caches", b.wheels)
        self.repo.write("images/BUILD", COMPOSED_BUILD)
        self.images = b.source_images()
        b.link_archives(self.archive_dir)
        self.refresh_floor_layers()
        self.setup_docker_repo()

    def refresh_floor_layers(self) -> None:
        """The layer tars the composed image holds (base layer + the three top layers), for the
        floor and as the docker_image context; the docker repo hard-links them."""
        assert self.images is not None
        sources = [(self.base_archive(), 0)] + [(a, -1) for a in self.archives()]
        self.floor_layers = []
        for n, (archive, index) in enumerate(sources):
            dest = self.work / "floor" / f"layer{n}.tar"
            tmp = dest.with_suffix(".tmp")
            extract_layer(archive, index, tmp)
            os.replace(tmp, dest)
            self.floor_layers.append(dest)
        self.link_docker_context()

    def link_docker_context(self) -> None:
        """The docker_image's context: hard links to the three top layers' tars."""
        if self.docker_repo is None:
            return
        for n, layer in enumerate(self.floor_layers[1:], 1):
            link = self.docker_repo.root / f"layer{n}.tar"
            if link.exists():
                link.unlink()
            os.link(layer, link)

    def setup_docker_repo(self) -> None:
        b = self.bench
        self.docker_repo = PantsRepo(b.tools, self.work / "docker-repo", self.work / "docker-caches", b.wheels,
                                     extra_toml=DOCKER_TOML,
                                     extra_flags=["--backend-packages=+['pants.backend.docker']"])
        dockerfile = [f"FROM {BASE_TAG}"] + [f"ADD layer{n}.tar /" for n in range(1, len(self.floor_layers))]
        self.docker_repo.write("Dockerfile", "\n".join(dockerfile) + "\n")
        self.docker_repo.write("BUILD", DOCKER_BUILD)
        self.link_docker_context()
        try:
            self.docker_repo.pants("package", "::")
            log("bench: Pants' docker_image works here")
        except CommandFailed as e:
            lines = [l for l in str(e).splitlines() if l.strip()]
            self.docker_na = "pants.backend.docker failed: " + (lines[-1][:200] if lines else "?")
            self.docker_repo.stop_pantsd()
            self.docker_repo = None

    def teardown(self) -> None:
        for repo in (self.repo, self.docker_repo):
            if repo is not None:
                repo.stop_pantsd()

    # --- one run ----------------------------------------------------------------------------
    def run_once(self, i: int) -> None:
        b = self.bench
        log(f"compose: run {i + 1}/{b.cfg.runs}")
        guard = b.results.attempt
        guard("(d) pants docker_image", self.docker_image_cold)
        pair(i, lambda: guard("(a) seed recipe cold/warm", self.seed_cold_and_warm),
             lambda: guard("(b) pants package cold/no-op", self.pants_cold_noop_list))
        pair(i, lambda: guard("(c) lamina compose", self.cli_compose), lambda: guard("(e) floor", self.floor))
        guard("lamina CLI, Pants' steps", self.cli_like_pants)
        guard("(b) checks on / off", lambda: self.checks_on_off(i))
        self.change_source()
        pair(i, lambda: guard("(a) seed recipe incremental", self.seed_incremental),
             lambda: guard("(b) pants package incremental", self.pants_incremental))
        self.change_source()
        guard("(b) pants package incremental, OCI layout output", self.pants_incremental_oci)
        guard("(b) pants package, all sources new, warm pantsd", self.pants_all_new)

    def docker_image_cold(self) -> None:
        r = self.bench.results
        label = "(d) pants docker_image, cold docker cache"
        if self.docker_repo is None:
            r.not_available("pants_docker_image", label, G_COLD, self.docker_na or "not set up")
            return
        cold_build_cache(self.bench.objects, [SEED_TAG, PANTS_DOCKER_TAG])
        result = self.docker_repo.pants("package", "::")
        self.bench.objects.note(PANTS_DOCKER_TAG)
        r.record("pants_docker_image", label, G_COLD, result.seconds,
                 note="given the layer tars as files (untar/copy not included); warm pantsd")

    def seed_cold_and_warm(self) -> None:
        b, r = self.bench, self.bench.results
        cold_build_cache(b.objects, [SEED_TAG, PANTS_DOCKER_TAG])
        cold = run_seed(self.work / "seed", self.archives(), b.objects)
        r.record("seed_cold", "(a) seed recipe, cold build cache", G_COLD, cold.seconds)
        self.expect_cache_hits("cold", cold, 0)
        warm = run_seed(self.work / "seed", self.archives(), b.objects)
        r.record("seed_warm", "(a) seed recipe, warm build cache", G_WARM, warm.seconds)
        self.expect_cache_hits("warm", warm, 3)

    def expect_cache_hits(self, what: str, result: Run, hits: int) -> None:
        got = cache_hits(result)
        self.bench.results.count(f"seed recipe {what}: ADD steps from the build cache", got)
        if got != hits:
            self.bench.results.problem(f"seed recipe {what}: {got} steps from the build cache, expected {hits}")

    def pants_cold_noop_list(self) -> None:
        b, r, repo = self.bench, self.bench.results, self.repo
        assert repo is not None
        repo.make_cold()
        cold = repo.pants("package", TARGET)
        r.record("pants_cold", "(b) pants package, cold", G_COLD, cold.seconds,
                 note="fresh local store, named caches and pantsd")
        r.add_phases("(b) pants package, cold", phases(cold))
        r.add_io("a cold pants package", io_per_process(cold), sum(p.stat().st_size for p in self.floor_layers))
        self.expect_processes("cold", cold, extracts=4, composes=1)
        self.check_digest_true(self.work / "repo" / "dist" / "images" / "composed.tar", "pants output")
        for k in range(b.cfg.noop_pairs):
            def noop() -> None:
                res = repo.pants("package", TARGET)
                r.record("pants_noop", "(b) pants package, no-op", G_WARM, res.seconds, note="warm pantsd")
                self.expect_processes("no-op", res, extracts=0, composes=0)

            def listing() -> None:
                res = repo.pants("list", "::")
                r.record("pants_list", "pants list ::", G_WARM, res.seconds, note="warm pantsd")

            pair(k, noop, listing)
        r.info.setdefault("pantsd_rss_mib", []).append(round(repo.pantsd_rss_mib()))  # type: ignore[union-attr]

    def checks_on_off(self, i: int) -> None:
        """What the composition checks (scans + check, issue 5) cost: a cold `pants package` with
        `--lamina-check-compositions` (the default) and one with `--no-lamina-check-compositions`,
        each from a fresh store, A/B interleaved; then cached re-runs with each setting (the run
        before each timed one has the same setting, so pantsd's graph is warm for it)."""
        r, repo = self.bench.results, self.repo
        assert repo is not None
        flags = {True: "--lamina-check-compositions", False: "--no-lamina-check-compositions"}
        keys = {True: "pants_cold_checks", False: "pants_cold_nochecks"}

        def cold(checks: bool) -> None:
            repo.make_cold()
            res = repo.pants(flags[checks], "package", TARGET)
            r.record(keys[checks], f"(b) pants package, cold, checks {'on' if checks else 'off'}", G_CHECKS,
                     res.seconds, note="fresh local store, named caches and pantsd")
            scans = [p for p in lamina_processes(res) if p.startswith(("lamina: scan", "lamina: check"))]
            want = 1 if checks else 0  # the check (the extractions index their layers: no scan), or none
            if len(scans) != want:
                r.problem(f"pants cold, checks {'on' if checks else 'off'}: ran {len(scans)} scan/check "
                          f"processes, expected {want}")

        pair(i, lambda: cold(True), lambda: cold(False))
        for k in range(self.bench.cfg.noop_pairs):
            def cached(checks: bool) -> None:
                repo.pants(flags[checks], "package", TARGET)
                res = repo.pants(flags[checks], "package", TARGET)
                r.record(f"pants_noop_{'checks' if checks else 'nochecks'}",
                         f"(b) pants package, cached re-run, checks {'on' if checks else 'off'}", G_CHECKS,
                         res.seconds, note="warm pantsd")
                if lamina_processes(res):
                    r.problem(f"cached re-run, checks {'on' if checks else 'off'}: ran {lamina_processes(res)}")

            pair(k + i, lambda: cached(True), lambda: cached(False))

    def expect_processes(self, what: str, result, extracts: int, composes: int) -> None:  # type: ignore[no-untyped-def]
        got_e, got_c = len(lamina_processes(result, "extract")), len(lamina_processes(result, "compose"))
        self.bench.results.count(f"compose {what}: extract processes", got_e)
        if (got_e, got_c) != (extracts, composes):
            self.bench.results.problem(f"pants {what}: ran {got_e} extract / {got_c} compose processes, "
                                       f"expected {extracts} / {composes}")

    def cli_spec(self) -> dict:
        return {"base": {"source": str(self.base_archive())},
                "layers": [{"source": str(a), "layer": "-1"} for a in self.archives()],
                "tags": [OUT_TAG], "format": "docker-archive"}

    def cli_compose(self) -> None:
        b = self.bench
        out = self.work / "cli" / "out.tar"
        out.parent.mkdir(parents=True, exist_ok=True)
        result = b.cli.compose(self.cli_spec(), out.parent, out)
        b.results.record("cli_compose", "(c) lamina compose (CLI) from archives", G_CORE, result.seconds,
                         result.max_rss_kib)
        if "cli_checked" not in b.results.info:
            b.results.info["cli_checked"] = True
            self.check_digest_true(out, "CLI output")
        remove_output(out)

    def floor(self) -> None:
        b = self.bench
        out = self.work / "floor-out"
        rmtree(out)
        out.mkdir(parents=True)
        result = run(floor_command(b.tools, self.floor_layers, out))
        b.results.record("floor", f"(e) floor: {b.tools.sha256_cmd[0]} sha256 + cp", G_CORE, result.seconds)
        b.results.info["floor_bytes"] = sum(p.stat().st_size for p in self.floor_layers)
        rmtree(out)

    def cli_like_pants(self) -> None:
        """What Pants runs, via the CLI: `extract --index` per layer (+ the base: it copies and
        indexes each layer in one pass), one `check` (the plugin's composition check), then
        `compose` of the bundles. Gives the peak RSS of every kind of lamina process Pants starts."""
        b, r = self.bench, self.bench.results
        work = self.work / "pipeline"
        rmtree(work)
        work.mkdir(parents=True)
        sources = [("base", self.base_archive(), ":")] + [
            (f"l{n + 1}", a, "-1") for n, a in enumerate(self.archives())]
        total = 0.0
        for name, archive, selector in sources:
            result = b.cli.extract(str(archive), selector, work / name, archive.name, cwd=work, index=True)
            total += result.seconds
            r.series_for("rss_extract", "lamina extract (one layer, as in Pants)", G_RSS).add(
                result.seconds, result.max_rss_kib)
        try:
            total += self.cli_check(work, [name for name, _, _ in sources])
        except CommandFailed as e:
            r.problem(f"lamina check as Pants runs it failed: {str(e).splitlines()[-1][:200]}")
        spec = {"base": {"source": "base"}, "layers": [{"source": n} for n, _, _ in sources[1:]],
                "tags": [OUT_TAG], "format": "docker-archive"}
        result = b.cli.compose(spec, work, work / "out.tar")
        r.series_for("rss_compose_bundles", "lamina compose of bundles (as in Pants)", G_RSS).add(
            result.seconds, result.max_rss_kib)
        r.record("cli_pipeline", "lamina CLI: Pants' steps (extract --index, check, compose)", G_CORE,
                 total + result.seconds)
        rmtree(work)

    def cli_check(self, work: Path, bundles: List[str]) -> float:
        """One `lamina check` of the stack, from the indexes the extractions made; its seconds."""
        b, r = self.bench, self.bench.results
        result = b.cli("check", *(f"--index={n}/lamina-index.json" for n in bundles), "--on-conflict=warn",
                       "--json=report.json", cwd=work)
        r.series_for("rss_check", "lamina check (as in Pants)", G_RSS).add(result.seconds, result.max_rss_kib)
        return result.seconds

    def change_source(self) -> None:
        assert self.images is not None
        built, saved = self.images.change_third()
        self.bench.link_archives(self.archive_dir)
        self.refresh_floor_layers()
        self.bench.results.info.setdefault("img3_rebuild_s", []).append(round(built, 2))  # type: ignore[union-attr]
        self.bench.results.record("docker_save_img3", "docker save of the changed image (both pay it)", G_INCR, saved)

    def seed_incremental(self) -> None:
        b = self.bench
        result = run_seed(self.work / "seed", self.archives(), b.objects)
        b.results.record("seed_incr", "(a) seed recipe, incremental", G_INCR, result.seconds,
                         note="warm build cache; the changed image is the last ADD (best case for the seed)")
        self.expect_cache_hits("incremental", result, 2)

    def pants_incremental(self) -> None:
        assert self.repo is not None
        result = self.repo.pants("package", TARGET)
        self.bench.results.record("pants_incr", "(b) pants package, incremental", G_INCR, result.seconds,
                                  note="warm pantsd")
        self.bench.results.add_phases("(b) pants package, incremental", phases(result))
        self.expect_processes("incremental", result, extracts=1, composes=1)

    def pants_incremental_oci(self) -> None:
        """The same change (the third source rebuilt, again) for the composed_image whose output is
        an OCI layout directory: only the changed layer's bytes are new to Pants' store."""
        assert self.repo is not None
        result = self.repo.pants("package", TARGET_OCI)
        self.bench.results.record("pants_incr_oci", "(b) pants package, incremental, output_format=oci", G_INCR,
                                  result.seconds, note="warm pantsd")
        self.bench.results.add_phases("(b) pants package, incremental, output_format=oci", phases(result))
        self.expect_processes("incremental (oci)", result, extracts=1, composes=1)

    def pants_all_new(self) -> None:
        """Every source image new (content Pants has never seen), with a warm pantsd: what lamina
        adds inside Pants is this minus a no-op package, against one `lamina compose`."""
        assert self.images is not None and self.repo is not None
        self.images.renew(save=True)
        self.bench.link_archives(self.archive_dir)
        self.refresh_floor_layers()
        result = self.repo.pants("package", TARGET)
        self.bench.results.record("pants_new_warm", "(b) pants package, all three sources new", G_INCR,
                                  result.seconds, note="warm pantsd")
        self.expect_processes("all new", result, extracts=3, composes=1)

    # --- checks -----------------------------------------------------------------------------
    def check_digest_true(self, out: Path, what: str) -> None:
        """The composed image's diff_ids are the sources' (base layer + each top layer), unchanged."""
        assert self.images is not None
        want = layer_diff_ids(self.base_archive()) + [layer_diff_ids(a)[-1] for a in self.archives()]
        got = layer_diff_ids(out)
        if got != want:
            self.bench.results.problem(f"{what}: diff_ids {got} are not the sources' {want}")
        else:
            log(f"  {what}: digest-true ({len(got)} layers, {out.stat().st_size / MB:.0f} MB)")

    def profile_if_slow(self) -> None:
        """lamina CLI / floor over its goal: profile one compose and keep where the time went."""
        r = self.bench.results
        cli, floor = r.series.get("cli_compose"), r.series.get("floor")
        if not (cli and floor and cli.median and floor.median) or cli.median / floor.median <= CLI_FLOOR_GOAL:
            return
        log("compose: lamina CLI / floor is over its goal; profiling one `lamina compose` with cProfile")
        r.profiles["lamina compose (CLI) from archives"] = profile_compose(self.bench, self.cli_spec(),
                                                                          self.work / "profile")


def run_compose(bench: Bench) -> None:
    scenario = ComposeScenario(bench)
    try:
        scenario.setup()
        bench.results.info["compose_layer_mb"] = list(bench.cfg.sizes.layer_mb)
        for i in range(bench.cfg.runs):
            bench.results.note_load("compose", i)
            scenario.run_once(i)
        bench.results.attempt("profiling lamina compose", scenario.profile_if_slow)
    finally:
        scenario.teardown()
        rmtree(scenario.work / "seed")
