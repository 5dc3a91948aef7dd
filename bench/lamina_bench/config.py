"""What a bench run does: scenarios, sizes, number of runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

SCENARIOS = ("compose", "engine", "large", "memory", "scale", "examples")
MB = 1000 * 1000
MIB = 1024 * 1024
RSS_GOAL_MB = 150.0


@dataclass(frozen=True)
class Sizes:
    layer_mb: Tuple[int, int, int]  # the three source images' payloads (MB, random bytes)
    small_files: int  # extra small files in the third image's layer
    small_file_bytes: int
    memory_layers_mib: Tuple[int, ...]  # the memory scenario's synthetic layers (MiB)
    memory_small_files: int  # small files in the memory scenario's last layer
    scale_targets: int


FULL = Sizes(layer_mb=(200, 200, 100), small_files=5000, small_file_bytes=1024,
             memory_layers_mib=(512, 384, 128), memory_small_files=20000, scale_targets=20)
# The large scenario: 2 GB of layers, the changed third image the same 100 MB as in FULL.
LARGE = Sizes(layer_mb=(950, 950, 100), small_files=5000, small_file_bytes=1024,
              memory_layers_mib=FULL.memory_layers_mib, memory_small_files=FULL.memory_small_files, scale_targets=20)
QUICK = Sizes(layer_mb=(20, 20, 10), small_files=500, small_file_bytes=1024,
              memory_layers_mib=(64, 32, 32), memory_small_files=2000, scale_targets=20)


@dataclass(frozen=True)
class Config:
    runs: int
    scenarios: Tuple[str, ...]
    sizes: Sizes
    workdir: Path
    keep_workdir: bool
    quick: bool
    large_sizes: Sizes = LARGE  # the large scenario's images
    noop_pairs: int = 3  # no-op / `list ::` pairs per run (they are cheap; more samples)

    @property
    def scale_runs(self) -> int:
        """Cold `package ::` of 20 targets writes GBs: at most 2 runs (1 with --quick)."""
        return 1 if self.quick else min(self.runs, 2)

    @property
    def examples_runs(self) -> int:
        """Cold runs of the examples scenario (1 with --quick: a smoke run, not a claim; its
        no-op / list pairs still give several samples)."""
        return 1 if self.quick else self.runs


QUICK_LARGE = Sizes(layer_mb=(80, 80, 10), small_files=500, small_file_bytes=1024,
                    memory_layers_mib=QUICK.memory_layers_mib, memory_small_files=QUICK.memory_small_files,
                    scale_targets=20)
