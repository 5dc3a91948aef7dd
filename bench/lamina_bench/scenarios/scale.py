"""Scenario `scale`: many composed_image targets sharing layers in one `pants package ::`."""
from __future__ import annotations

from lamina_bench.context import Bench
from lamina_bench.measure import log, pair, rmtree
from lamina_bench.pants import PantsRepo, lamina_processes, phases

GROUP = "scale: 20 composed_image targets"
LAYERS = """
docker_layer(name="l1", image="img1.tar", layer=-1)
docker_layer(name="l2", image="img2.tar", layer=-1)
docker_layer(name="l3", image="img3.tar", layer=-1)
"""


def build_file(targets: int) -> str:
    """Every target takes l3 (100 MB, 5,000 files); one in five adds l1, one in five l2 (200 MB
    each), so 20 targets write ~3.6 GB of images while only 3 distinct layers (+ the base) exist."""
    out = [LAYERS]
    for k in range(targets):
        layers = {0: [":l1", ":l3"], 1: [":l3", ":l2"]}.get(k % 5, [":l3"])
        out.append(f'composed_image(name="c{k:02d}", base="base.tar", layers={layers!r}, '
                   f'env={{"TARGET": "{k}"}}, repository="lamina-bench/scale-{k:02d}")\n')
    return "\n".join(out)


def run_scale(bench: Bench) -> None:
    cfg, r = bench.cfg, bench.results
    work = bench.work / "scale"
    repo = PantsRepo(bench.tools, work / "repo", work / "pants-caches", bench.wheels)
    bench.link_archives(work / "repo" / "images")
    repo.write("images/BUILD", build_file(cfg.sizes.scale_targets))
    distinct = 3 + 1  # three docker_layers + the one base every target shares
    try:
        for i in range(cfg.scale_runs):
            log(f"scale: run {i + 1}/{cfg.scale_runs} ({cfg.sizes.scale_targets} targets)")
            r.note_load("scale", i)
            repo.make_cold()
            cold = repo.pants("package", "::")
            extracts = len(lamina_processes(cold, "extract"))
            composes = len(lamina_processes(cold, "compose"))
            r.record("scale_cold", f"pants package :: ({cfg.sizes.scale_targets} targets), cold", GROUP,
                     cold.seconds)
            r.add_phases("scale: pants package ::, cold", phases(cold))
            r.count("scale: extract processes (cold)", extracts)
            r.count("scale: compose processes (cold)", composes)
            if extracts != distinct or composes != cfg.sizes.scale_targets:
                r.problem(f"scale: {extracts} extract / {composes} compose processes, expected "
                          f"{distinct} / {cfg.sizes.scale_targets}")
            for k in range(cfg.noop_pairs):
                pair(k, lambda: _noop(repo, bench), lambda: _list(repo, bench))
    finally:
        repo.stop_pantsd()
        rmtree(work)


def _noop(repo: PantsRepo, bench: Bench) -> None:
    r, n = bench.results, bench.cfg.sizes.scale_targets
    res = repo.pants("package", "::")
    r.record("scale_noop", f"pants package :: ({n} targets), no-op", GROUP, res.seconds, note="warm pantsd")
    if lamina_processes(res):
        r.problem(f"scale no-op ran {len(lamina_processes(res))} lamina processes")


def _list(repo: PantsRepo, bench: Bench) -> None:
    res = repo.pants("list", "::")
    bench.results.record("scale_list", "pants list :: (scale repo)", GROUP, res.seconds, note="warm pantsd")
