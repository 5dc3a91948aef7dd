"""Command line: parse options, run the chosen scenarios, print the summary, write JSON and PNG."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from lamina_bench.config import FULL, LARGE, QUICK, QUICK_LARGE, SCENARIOS, Config
from lamina_bench.measure import elapsed, log, rmtree

DEFAULT_RUNS, QUICK_RUNS = 3, 2


def parse_args(argv: List[str], doc: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 bench/run.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small smoke run (< 3 min): tiny layers, 2 runs; scale and examples do one cold run")
    p.add_argument("--runs", type=int, help=f"runs per measurement (default {DEFAULT_RUNS}, --quick {QUICK_RUNS}); "
                                            "the scale scenario does at most 2")
    p.add_argument("--scenario", default="all",
                   help=f"what to run: all (default), or one or more of {', '.join(SCENARIOS)}, comma-separated")
    p.add_argument("--workdir", type=Path, help="where the scratch directory is made (default: the system temp "
                                                "dir); it is removed at the end")
    p.add_argument("--keep-workdir", action="store_true", help="leave the scratch directory in place")
    args = p.parse_args(argv)
    unknown = [s for s in args.scenario.split(",") if s not in ("all", *SCENARIOS)]
    if unknown:
        p.error(f"unknown scenario {unknown[0]!r}; choose from all, {', '.join(SCENARIOS)}")
    if args.runs is not None and args.runs < 2:
        p.error("--runs must be at least 2: the bench reports medians, never single timings")
    return args


def make_config(args: argparse.Namespace) -> Config:
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lamina-bench-", dir=args.workdir))
    return Config(
        runs=args.runs or (QUICK_RUNS if args.quick else DEFAULT_RUNS),
        scenarios=SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(",")),
        sizes=QUICK if args.quick else FULL,
        large_sizes=QUICK_LARGE if args.quick else LARGE,
        workdir=workdir.resolve(),
        keep_workdir=bool(args.keep_workdir),
        quick=args.quick,
        noop_pairs=2 if args.quick else 3,
    )


def _runners() -> Dict[str, Callable]:  # type: ignore[type-arg]
    from lamina_bench.scenarios.compose import run_compose
    from lamina_bench.scenarios.engine import run_engine, run_large
    from lamina_bench.scenarios.examples import run_examples
    from lamina_bench.scenarios.memory import run_memory
    from lamina_bench.scenarios.scale import run_scale

    return {"compose": run_compose, "engine": run_engine, "large": run_large, "memory": run_memory, "scale": run_scale, "examples": run_examples}


def main(argv: List[str], doc: Optional[str] = None) -> int:
    args = parse_args(argv, doc or "")
    cfg = make_config(args)
    from lamina_bench import env
    from lamina_bench.context import Bench

    os.chdir(env.REPO)  # SampleRepo finds the plugin sources from the working directory
    tools = env.find_tools()
    tools.export()
    bench = Bench(cfg, tools, env.WHEELS_DIR)
    bench.results.info.update(env.machine_info())
    log(f"bench: scenarios {', '.join(cfg.scenarios)}; {cfg.runs} runs; scratch in {cfg.workdir}; "
        f"lamina CLI on {tools.core_python}; peak RSS via "
        f"{'/usr/bin/time -v' if tools.time_bin else 'wait4 rusage'}")
    failed = None
    try:
        runners = _runners()
        for name in cfg.scenarios:
            runners[name](bench)
    except BaseException as e:  # report what was measured before the failure, then re-raise
        failed = e
        raise
    finally:
        _finish(bench, cfg, failed)
    return 1 if bench.results.problems else 0


def _finish(bench, cfg: Config, failed: Optional[BaseException]) -> None:  # type: ignore[no-untyped-def]
    from lamina_bench import env, report

    log("bench: cleaning up (Docker images, scratch files)")
    bench.objects.remove()
    if not cfg.keep_workdir:
        rmtree(cfg.workdir)
    bench.results.info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    bench.results.info["total_seconds"] = round(elapsed())
    if failed is not None:
        bench.results.problem(f"bench stopped early: {type(failed).__name__}: {str(failed)[:500]}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    env.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, png_path = env.RESULTS_DIR / f"{stamp}.json", env.RESULTS_DIR / f"{stamp}.png"
    meta = {"argv_scenarios": list(cfg.scenarios), "runs": cfg.runs, "quick": cfg.quick,
            "sizes": cfg.sizes.__dict__, "sha256_tool": bench.tools.sha256_cmd[0],
            "core_python": bench.tools.core_python, "time_bin": bench.tools.time_bin}
    report.write_json(bench.results, json_path, meta)
    title = (f"lamina bench {stamp} ({'quick' if cfg.quick else 'full'}, {cfg.runs} runs, layers "
             f"{'/'.join(map(str, cfg.sizes.layer_mb))} MB; {os.cpu_count()} CPUs)")
    try:
        report.write_png(bench.results, png_path, title)
    except Exception as e:  # the table and JSON matter more than the chart
        bench.results.problem(f"chart not written: {e}")
    print()
    print(report.summary_text(bench.results))
    print()
    print(f"total {elapsed():.0f} s; results: {json_path}" + (f", {png_path}" if png_path.exists() else ""))
