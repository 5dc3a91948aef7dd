"""Where a lamina process spends its time: one run under cProfile, summarized by own (tottime) time."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

from lamina_bench.context import Bench
from lamina_bench.measure import run

_SUMMARY = r"""
import os, pstats, sys
stats = pstats.Stats(sys.argv[1])
total = stats.total_tt
print(f"total {total:.2f}s under cProfile")
rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: int(sys.argv[2])]
for (path, line, name), (_, calls, own, cum, _) in rows:
    where = f"{os.path.basename(path)}:{line}({name})" if line else name
    print(f"{own:6.2f}s {100 * own / total:3.0f}%  cum {cum:6.2f}s  {calls:>7} calls  {where}")
"""


def profile_compose(bench: Bench, spec: dict, work: Path, top: int = 10) -> List[str]:
    """Run `lamina compose` once under cProfile; the `top` functions by own time, as text lines."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path, prof, out = work / "spec.json", work / "compose.prof", work / "out.tar"
    spec_path.write_text(json.dumps(spec))
    cli = bench.cli
    run([bench.tools.core_python, "-m", "cProfile", "-o", str(prof), "-m", "lamina", "compose", str(spec_path),
         f"--out={out}"], cwd=str(work), env=cli.env)
    summary = run([bench.tools.core_python, "-c", _SUMMARY, str(prof), str(top)], cwd=str(work), env=cli.env)
    out.unlink()
    return summary.stdout.splitlines()
