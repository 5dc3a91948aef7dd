"""Scenario `examples`: the README's `pants package examples::` in a sample repo copy of examples/."""
from __future__ import annotations

import shutil

from lamina_bench.context import Bench
from lamina_bench.env import REPO
from lamina_bench.measure import log, pair, rmtree
from lamina_bench.pants import PantsRepo, lamina_processes, phases

GROUP = "examples:: (README)"


def run_examples(bench: Bench) -> None:
    cfg, r = bench.cfg, bench.results
    work = bench.work / "examples"
    repo = PantsRepo(bench.tools, work / "repo", work / "pants-caches", bench.wheels)
    shutil.copytree(REPO / "examples", work / "repo" / "examples")
    try:
        for i in range(cfg.examples_runs):
            log(f"examples: run {i + 1}/{cfg.examples_runs}")
            r.note_load("examples", i)
            repo.make_cold()
            cold = repo.pants("package", "examples::")
            r.record("ex_cold", "pants package examples::, cold", GROUP, cold.seconds,
                     note="fresh local store, named caches and pantsd")
            r.count("examples: lamina processes (cold)", len(lamina_processes(cold)))
            r.add_phases("examples: pants package, cold", phases(cold))
            for k in range(cfg.noop_pairs):
                def noop() -> None:
                    res = repo.pants("package", "examples::")
                    r.record("ex_noop", "pants package examples::, no-op", GROUP, res.seconds, note="warm pantsd")
                    if lamina_processes(res):
                        r.problem(f"examples no-op ran {len(lamina_processes(res))} lamina processes")

                def listing() -> None:
                    res = repo.pants("list", "::")
                    r.record("ex_list", "pants list :: (examples repo)", GROUP, res.seconds, note="warm pantsd")

                pair(k, noop, listing)
    finally:
        repo.stop_pantsd()
        rmtree(work)
