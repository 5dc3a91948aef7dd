"""Scenario `memory`: lamina's peak RSS composing ~1 GiB of layers (synthetic archives, no Docker)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

from lamina_bench.config import MIB
from lamina_bench.context import Bench
from lamina_bench.images import layer_diff_ids
from lamina_bench.lamina_cli import floor_command, remove_output
from lamina_bench.measure import log, pair, rmtree, run
from lamina_bench.synth import Synthetic, write_archive, write_layer


def make_archives(work: Path, layers_mib: Sequence[int], small_files: int) -> Tuple[Synthetic, Synthetic]:
    """base.tar (one small layer) and big.tar (that layer + the big ones, the last with many
    small files)."""
    start = time.monotonic()
    layer_dir = work / "layers"
    layer_dir.mkdir(parents=True, exist_ok=True)
    base_layer = layer_dir / "base.tar"
    write_layer(base_layer, "base", 64 * 1024, small_files=8)
    big_layers = []
    for n, size in enumerate(layers_mib, 1):
        path = layer_dir / f"big{n}.tar"
        write_layer(path, f"big{n}", size * MIB, small_files=small_files if n == len(layers_mib) else 0)
        big_layers.append(path)
    base = write_archive(work / "base.tar", [base_layer], "synthetic/base:latest")
    big = write_archive(work / "big.tar", [base_layer, *big_layers], "synthetic/big:latest")
    log(f"memory: wrote {sum(p.stat().st_size for p in big_layers) / MIB:.0f} MiB of synthetic layers "
        f"in {time.monotonic() - start:.0f} s")
    return base, big


@dataclass
class MemoryScenario:
    bench: Bench
    work: Path
    base: Synthetic
    big: Synthetic
    size: str  # "1.00 GiB", for labels

    @property
    def group(self) -> str:
        return f"memory: {self.size} of layers"

    def spec(self) -> dict:
        n = len(self.big.layers) - 1
        # One selector of each kind, so every way of finding a layer runs on big inputs.
        selectors = ["1", "created_by=synthetic layer 2", f"path=/big{n}/d000/f00000.bin"][:n]
        return {"base": {"source": str(self.base.archive)},
                "layers": [{"source": str(self.big.archive), "layer": s} for s in selectors],
                "tags": ["synthetic/composed:latest"], "format": "docker-archive"}

    def compose(self) -> None:
        r, out = self.bench.results, self.work / "out.tar"
        result = self.bench.cli.compose(self.spec(), self.work, out)
        r.record("mem_compose", f"lamina compose, {self.size} of layers", self.group, result.seconds,
                 result.max_rss_kib)
        got = layer_diff_ids(out)
        if got != self.big.diff_ids:
            r.problem(f"memory: composed diff_ids {got} are not the sources' {self.big.diff_ids}")
        remove_output(out)

    def floor(self) -> None:
        out = self.work / "floor-out"
        rmtree(out)
        out.mkdir()
        result = run(floor_command(self.bench.tools, self.big.layers, out))
        self.bench.results.record("mem_floor", f"floor: {self.bench.tools.sha256_cmd[0]} sha256 + cp, {self.size}",
                                  self.group, result.seconds)
        rmtree(out)

    def scan_and_check(self, bundle: Path) -> None:
        r, index = self.bench.results, self.work / "index.json"
        result = self.bench.cli("scan", str(bundle), f"--out={index}", cwd=self.work)
        r.record("mem_scan", f"lamina scan, {self.size} of layers", self.group, result.seconds, result.max_rss_kib)
        result = self.bench.cli("check", f"--index={index}", "--on-conflict=warn", cwd=self.work)
        r.record("mem_check", "lamina check of that index", self.group, result.seconds, result.max_rss_kib)

    def extract_and_validate(self) -> None:
        r, out = self.bench.results, self.work / "bundle"
        rmtree(out)
        result = self.bench.cli.extract(str(self.big.archive), "1:", out, "big.tar", cwd=self.work)
        r.record("mem_extract", f"lamina extract, {self.size} of layers", self.group, result.seconds,
                 result.max_rss_kib)
        r.attempt("lamina scan/check of the big bundle", lambda: self.scan_and_check(out))
        result = self.bench.cli("validate", str(self.big.archive), cwd=self.work)
        r.record("mem_validate", f"lamina validate, {self.size} of layers", self.group, result.seconds,
                 result.max_rss_kib)
        rmtree(out)


def run_memory(bench: Bench) -> None:
    work = bench.work / "memory"
    rmtree(work)
    work.mkdir(parents=True)
    try:
        sizes = bench.cfg.sizes
        base, big = make_archives(work, sizes.memory_layers_mib, sizes.memory_small_files)
        total = sum(p.stat().st_size for p in big.layers[1:])
        bench.results.info["memory_layer_bytes"] = total
        size = f"{total / 2**30:.2f} GiB" if total >= 2**29 else f"{total / 2**20:.0f} MiB"
        scenario = MemoryScenario(bench, work, base, big, size)
        for i in range(bench.cfg.runs):
            log(f"memory: run {i + 1}/{bench.cfg.runs}")
            bench.results.note_load("memory", i)
            pair(i, scenario.compose, scenario.floor)
            scenario.extract_and_validate()
    finally:
        rmtree(work)
