"""Running the lamina CLI from this checkout, with wall time and peak RSS."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Sequence

from lamina_bench.env import Tools
from lamina_bench.measure import Run, run


class LaminaCli:
    def __init__(self, tools: Tools, pycache: Path) -> None:
        self.tools = tools
        self.env = tools.core_env(pycache)

    def __call__(self, *args: str, cwd: Path) -> Run:
        return run([self.tools.core_python, "-m", "lamina", *args], cwd=str(cwd), env=self.env, rss=True)

    def compose(self, spec: dict, workdir: Path, out: Path) -> Run:
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2, sort_keys=True))
        return self("compose", str(spec_path), f"--out={out}", cwd=workdir)

    def extract(self, source: str, selector: str, out: Path, name: str, cwd: Path, index: bool = False) -> Run:
        return self("extract", source, f"--layer={selector}", f"--out={out}", f"--name={name}",
                    *(("--index",) if index else ()), cwd=cwd)

    def diff_ids(self, image: Path) -> List[str]:
        doc = json.loads(self("layers", str(image), "--json", cwd=image.parent).stdout)
        return [row["diff_id"] for row in doc["layers"]]


def floor_command(tools: Tools, layers: Sequence[Path], out_dir: Path) -> List[str]:
    """One sha256 pass over the layer bytes, then one copy of them: what any composer must do."""
    names = " ".join(f"'{p}'" for p in layers)
    sha = " ".join(tools.sha256_cmd)
    return ["bash", "-c", f"{sha} {names} >/dev/null && cp {names} '{out_dir}/'"]


def remove_output(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        os.unlink(path)
