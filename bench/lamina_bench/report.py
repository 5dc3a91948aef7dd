"""The summary: a table of medians, ratios of medians against the goals, peak RSS; JSON and PNG."""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lamina_bench.config import RSS_GOAL_MB
from lamina_bench.measure import Results, Series


@dataclass(frozen=True)
class RatioSpec:
    key: str
    label: str
    num: str
    den: str
    goal: Optional[Tuple[str, float]] = None  # (">=" or "<=", value)
    minus: str = ""  # a series subtracted from `num` first: (num - minus) / den


RATIOS = (
    RatioSpec("seed_cold_vs_pants_cold", "seed recipe cold / pants package cold", "seed_cold", "pants_cold",
              (">=", 2.0)),
    RatioSpec("seed_cold_vs_cli", "seed recipe cold / lamina CLI compose", "seed_cold", "cli_compose", (">=", 2.0)),
    RatioSpec("seed_incr_vs_pants_incr", "seed recipe incremental / pants incremental", "seed_incr", "pants_incr",
              (">=", 1.5)),
    RatioSpec("seed_incr_vs_pants_incr_oci", "seed recipe incremental / pants incremental (oci output)",
              "seed_incr", "pants_incr_oci", (">=", 2.5)),
    RatioSpec("seed_warm_vs_pants_noop", "seed recipe warm / pants no-op", "seed_warm", "pants_noop"),
    RatioSpec("docker_image_vs_seed", "pants docker_image / seed recipe cold", "pants_docker_image", "seed_cold"),
    RatioSpec("cli_vs_floor", "lamina CLI compose / floor", "cli_compose", "floor", ("<=", 1.3)),
    RatioSpec("pipeline_vs_floor", "lamina CLI, Pants' steps / floor", "cli_pipeline", "floor"),
    RatioSpec("pants_cold_vs_cli", "pants package cold / lamina CLI compose", "pants_cold", "cli_compose"),
    RatioSpec("pants_adds_vs_cli", "(pants package, all new, warm pantsd - no-op) / lamina CLI compose",
              "pants_new_warm", "cli_compose", ("<=", 2.0), minus="pants_noop"),
    RatioSpec("eng_seed_vs_pants", "engine: seed recipe / pants package, docker-archive output", "eng_seed_cold",
              "eng_pants_cold", (">=", 1.5)),
    RatioSpec("eng_seed_vs_pants_daemon", "engine: seed recipe / pants package, docker-daemon output",
              "eng_seed_cold", "eng_pants_cold_daemon", (">=", 2.0)),
    RatioSpec("eng_incr", "engine: seed incremental / pants incremental, docker-archive output", "eng_seed_incr",
              "eng_pants_incr", (">=", 1.5)),
    RatioSpec("eng_incr_daemon", "engine: seed incremental / pants incremental, docker-daemon output",
              "eng_seed_incr", "eng_pants_incr_daemon", (">=", 2.5)),
    RatioSpec("eng_incr_oci", "engine: seed incremental / pants incremental, oci output", "eng_seed_incr",
              "eng_pants_incr_oci", (">=", 2.5)),
    RatioSpec("large_growth_oci", "2 GB / 500 MB of layers: pants incremental, oci output", "large_pants_incr_oci",
              "eng_pants_incr_oci", ("<=", 1.3)),
    RatioSpec("large_growth_daemon", "2 GB / 500 MB of layers: pants incremental, docker-daemon output",
              "large_pants_incr_daemon", "eng_pants_incr_daemon", ("<=", 1.3)),
    RatioSpec("large_incr_oci", "2 GB: seed incremental / pants incremental, oci output", "large_seed_incr",
              "large_pants_incr_oci", (">=", 5.0)),
    RatioSpec("large_incr_daemon", "2 GB: seed incremental / pants incremental, docker-daemon output",
              "large_seed_incr", "large_pants_incr_daemon", (">=", 5.0)),
    RatioSpec("noop_vs_list", "pants no-op / pants list :: (warm pantsd)", "pants_noop", "pants_list", ("<=", 1.2)),
    RatioSpec("checks_cold", "pants package cold: checks on / off", "pants_cold_checks", "pants_cold_nochecks",
              ("<=", 1.2)),
    RatioSpec("checks_noop", "pants cached re-run: checks on / off", "pants_noop_checks", "pants_noop_nochecks",
              ("<=", 1.1)),
    RatioSpec("mem_compose_vs_floor", "memory: lamina compose / floor", "mem_compose", "mem_floor", ("<=", 1.3)),
    RatioSpec("scale_noop_vs_list", "scale: pants no-op / pants list ::", "scale_noop", "scale_list", ("<=", 1.5)),
    RatioSpec("ex_noop_vs_list", "examples: pants no-op / pants list ::", "ex_noop", "ex_list", ("<=", 1.2)),
)


@dataclass(frozen=True)
class Ratio:
    spec: RatioSpec
    value: Optional[float]
    why_na: str = ""

    @property
    def meets(self) -> Optional[bool]:
        if self.value is None or self.spec.goal is None:
            return None
        op, goal = self.spec.goal
        return self.value >= goal if op == ">=" else self.value <= goal

    def to_json(self) -> dict:
        return {"key": self.spec.key, "label": self.spec.label, "value": self.value,
                "numerator": self.spec.num, "denominator": self.spec.den,
                "goal": None if self.spec.goal is None else f"{self.spec.goal[0]} {self.spec.goal[1]}",
                "meets_goal": self.meets, "na": self.why_na or None}


def ratios(results: Results) -> List[Ratio]:
    out = []
    for spec in RATIOS:
        num, den = results.series.get(spec.num), results.series.get(spec.den)
        minus = results.series.get(spec.minus) if spec.minus else None
        if num is None or den is None or (spec.minus and minus is None):
            continue  # scenario not run
        if num.median is None or den.median is None or den.median == 0 or (minus is not None and minus.median is None):
            out.append(Ratio(spec, None, (num.na or den.na or "no samples")))
        else:
            out.append(Ratio(spec, (num.median - (minus.median if minus is not None else 0.0)) / den.median))
    return out


def rss_rows(results: Results) -> List[Series]:
    return [s for s in results.series.values() if s.rss_kib]


# --- text -------------------------------------------------------------------------------------
def summary_text(results: Results) -> str:
    lines = []
    width = max([len(s.label) for s in results.series.values()] + [40]) + 2
    lines.append(f"{'measurement':<{width}}{'median':>9}{'min':>9}{'max':>9}{'n':>4}{'peak RSS':>11}")
    for group in _groups(results):
        lines.append(f"-- {group} --")
        for s in results.series.values():
            if s.group != group:
                continue
            if s.na:
                lines.append(f"{s.label:<{width}}   n/a ({s.na})")
                continue
            rss = f"{s.peak_rss_mb:.0f} MB" if s.peak_rss_mb else ""
            single = "   (one run: a smoke test, not a claim)" if len(s.seconds) == 1 else ""
            lines.append(f"{s.label:<{width}}{s.median:>8.2f}s{min(s.seconds):>8.2f}s{max(s.seconds):>8.2f}s"
                         f"{len(s.seconds):>4}{rss:>11}{single}")
    rs = ratios(results)
    if rs:
        lines.append("")
        rwidth = max(len(r.spec.label) for r in rs) + 2
        lines.append(f"{'ratio of medians':<{rwidth}}{'value':>8}{'goal':>10}   verdict")
        for r in rs:
            goal = f"{r.spec.goal[0]} {r.spec.goal[1]:g}x" if r.spec.goal else ""
            value = f"{r.value:.2f}x" if r.value is not None else "n/a"
            verdict = {True: "meets", False: "MISSES", None: ""}[r.meets]
            if r.why_na:
                verdict = f"n/a ({r.why_na})"
            lines.append(f"{r.spec.label:<{rwidth}}{value:>8}{goal:>10}   {verdict}")
    rows = rss_rows(results)
    if rows:
        lines.append("")
        lines.append(f"{'peak RSS of lamina processes':<{width}}{'max':>9}{'median':>9}{'n':>4}   goal <= {RSS_GOAL_MB:g} MB")
        for s in rows:
            med = sorted(s.rss_kib)[len(s.rss_kib) // 2] * 1024 / 1e6
            peak = s.peak_rss_mb or 0.0
            verdict = "meets" if peak <= RSS_GOAL_MB else "MISSES"
            lines.append(f"{s.label:<{width}}{peak:>6.0f} MB{med:>6.0f} MB{len(s.rss_kib):>4}   {verdict}")
    for key, runs in results.phases.items():
        names = list(dict.fromkeys(n for r in runs for n in r))
        parts = ", ".join(f"{n} {statistics.median(r.get(n, 0.0) for r in runs):.1f}s" for n in names)
        lines.append("")
        lines.append(f"where {key} spends its time (median of {len(runs)}, from Pants' log): {parts}")
    for key, (rows, layer_bytes) in results.io.items():
        lines.append("")
        lines.append(f"bytes each lamina process read and wrote in {key} (its own /proc/self/io, newest run):")
        pwidth = max(len(r[0]) for r in rows) + 2
        for what, read, wrote in rows:
            lines.append(f"  {what:<{pwidth}}read {read / 1e6:>8.1f} MB   wrote {wrote / 1e6:>8.1f} MB")
        total_r, total_w = sum(r[1] for r in rows), sum(r[2] for r in rows)
        lines.append(f"  {'total':<{pwidth}}read {total_r / 1e6:>8.1f} MB   wrote {total_w / 1e6:>8.1f} MB")
        if layer_bytes:
            verdict = "meets" if total_r <= 2 * layer_bytes else "MISSES"
            lines.append(f"  layers handled: {layer_bytes / 1e6:.1f} MB; read {total_r / layer_bytes:.2f}x, "
                         f"written {total_w / layer_bytes:.2f}x their size (goal: read <= 2x) {verdict}")
    for key, text in results.profiles.items():
        lines.append("")
        lines.append(f"cProfile of {key}, top functions by own time:")
        lines.extend(f"  {t}" for t in text)
    if results.load:
        cpus = os.cpu_count() or 1
        busy = max(results.load.values())
        lines.append("")
        lines.append(f"1-min load average at run starts: {min(results.load.values()):.1f}..{busy:.1f} on {cpus} CPUs"
                     + ("  (other work was running: expect noise; compare the min column)" if busy > 0.75 * cpus
                        else ""))
    if results.counts:
        lines.append("")
        for key, values in results.counts.items():
            lines.append(f"{key}: {values}")
    if results.problems:
        lines.append("")
        lines.append("PROBLEMS:")
        lines.extend(f"  - {p}" for p in results.problems)
    return "\n".join(lines)


def _groups(results: Results) -> List[str]:
    seen: Dict[str, None] = {}
    for s in results.series.values():
        seen.setdefault(s.group, None)
    return list(seen)


# --- files ------------------------------------------------------------------------------------
def write_json(results: Results, path: Path, meta: dict) -> None:
    doc = {"meta": meta, "series": {k: s.to_json() for k, s in results.series.items()},
           "ratios": [r.to_json() for r in ratios(results)],
           "rss_goal_mb": RSS_GOAL_MB, "counts": results.counts, "phases": results.phases,
           "profiles": results.profiles, "load_at_run_start": results.load, "info": results.info,
           "io": {k: {"processes": rows, "layer_bytes": n} for k, (rows, n) in results.io.items()},
           "problems": results.problems}
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def _color(key: str) -> str:
    if key.startswith("seed") or key == "pants_docker_image":
        return "#d62728" if key.startswith("seed") else "#ff7f0e"
    if "floor" in key:
        return "#7f7f7f"
    if key.endswith("list") or key.startswith("docker_save"):
        return "#bcbd22"
    return "#1f77b4"


def write_png(results: Results, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [s for s in results.series.values() if s.seconds and s.group != "lamina processes (peak RSS)"]
    rs = [r for r in ratios(results) if r.value is not None]
    rss = rss_rows(results)
    fig = plt.figure(figsize=(16, max(8, 0.42 * len(timed) + 2)))
    grid = fig.add_gridspec(2, 2, width_ratios=(1.35, 1))
    _timings_panel(fig.add_subplot(grid[:, 0]), timed, results)
    _ratios_panel(fig.add_subplot(grid[0, 1]), rs)
    _rss_panel(fig.add_subplot(grid[1, 1]), rss)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _timings_panel(ax, timed: List[Series], results: Results) -> None:  # type: ignore[no-untyped-def]
    labels, ticks, y = [], [], 0.0
    for group in _groups(results):
        members = [s for s in timed if s.group == group]
        if not members:
            continue
        ax.text(0.005, y, group, transform=ax.get_yaxis_transform(), fontsize=8, fontweight="bold",
                va="center", color="#333333")
        y += 1
        for s in members:
            med = s.median or 0.0
            ax.barh(y, med, color=_color(s.key), xerr=[[med - min(s.seconds)], [max(s.seconds) - med]],
                    capsize=3, error_kw={"elinewidth": 0.8})
            ax.text(max(s.seconds) * 1.04, y, f"{med:.2f}s", va="center", fontsize=7)
            labels.append(s.label)
            ticks.append(y)
            y += 1
        y += 0.4
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_ylim(y - 0.5, -0.7)  # inverted: first group on top
    ax.set_xscale("log")
    ax.set_xlabel("seconds (median of runs, whiskers min..max; log scale)")
    ax.set_title("wall time (red: seed recipe, orange: Pants docker_image, blue: lamina, grey: floor, "
                 "olive: reference)", fontsize=10)


def _ratios_panel(ax, rs: List[Ratio]) -> None:  # type: ignore[no-untyped-def]
    for i, r in enumerate(rs):
        color = {True: "#2ca02c", False: "#d62728", None: "#7f7f7f"}[r.meets]
        ax.barh(i, r.value, color=color)
        ax.text(r.value, i, f" {r.value:.2f}x", va="center", fontsize=7)
        if r.spec.goal:
            ax.plot([r.spec.goal[1]] * 2, [i - 0.4, i + 0.4], color="black", lw=1.5)
    ax.set_yticks(range(len(rs)))
    ax.set_yticklabels([r.spec.label for r in rs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_title("ratios of medians (black tick = goal; green meets, red misses)", fontsize=10)


def _rss_panel(ax, rows: List[Series]) -> None:  # type: ignore[no-untyped-def]
    for i, s in enumerate(rows):
        peak = s.peak_rss_mb or 0.0
        ax.barh(i, peak, color="#2ca02c" if peak <= RSS_GOAL_MB else "#d62728")
        ax.text(peak, i, f" {peak:.0f} MB", va="center", fontsize=7)
    ax.axvline(RSS_GOAL_MB, color="black", lw=1.2, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([s.label for s in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("MB (max over runs); dashed = 150 MB goal")
    ax.set_title("peak RSS of lamina processes", fontsize=10)
