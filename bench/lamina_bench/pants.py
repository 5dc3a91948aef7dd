"""A sample Pants repo (lamina's SampleRepo) run offline, with pantsd and its own caches."""
from __future__ import annotations

import glob
import os
import re
import signal
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from lamina_bench.env import Tools
from lamina_bench.measure import Run, log, rmtree, run
from lamina_tests.support.sample_repo import SampleRepo, completed_processes


def offline_toml(wheels: Path) -> str:
    """No package index: the lamina core's requirement comes from a local wheel directory, so a
    cold run measures Pants and lamina, not the network (and sends nothing off the machine)."""
    return f"""
[python-repos]
indexes = []
find_links = ["file://{wheels}"]
"""


# Lines of the sample repo's `[lamina]` table (SampleRepo writes the table, with its core_target).
# report_io: every lamina process logs the bytes it read and wrote (io_per_process).
LAMINA_TOML = 'interpreter_constraints = ["CPython==3.9.*"]\nreport_io = true'


class PantsRepo:
    """Runs `pants --pantsd` in a sample repo whose local store and named caches are the bench's."""

    def __init__(self, tools: Tools, root: Path, caches: Path, wheels: Path, extra_toml: str = "",
                 extra_flags: Sequence[str] = ()) -> None:
        self.tools = tools
        self.sample = SampleRepo(root, extra_toml=offline_toml(wheels) + extra_toml, lamina_toml=LAMINA_TOML)
        self.root = root
        self.caches = caches
        self.extra_flags = list(extra_flags)

    def write(self, relpath: str, text: str) -> Path:
        return self.sample.write(relpath, text)

    def _flags(self) -> List[str]:
        return ["--pantsd", f"--local-store-dir={self.caches / 'store'}",
                f"--named-caches-dir={self.caches / 'named'}", *self.extra_flags]

    def _env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PANTS_")}
        env.update({"NO_SCIE_WARNING": "1", "PANTS_BUILDROOT_OVERRIDE": str(self.root), "DOCKER_BUILDKIT": "0"})
        return env

    def pants(self, *args: str, check: bool = True) -> Run:
        return run([self.tools.pants_bin, *self._flags(), *args], cwd=str(self.root), env=self._env(),
                   check=check, timeout=1800)

    def make_cold(self) -> None:
        """Fresh local store, named caches, workdir and dist/, and no pantsd."""
        self.stop_pantsd()
        for path in (self.caches, self.root / ".pants.d", self.root / "dist"):
            rmtree(path)

    def stop_pantsd(self) -> None:
        """Stop the pantsd this repo started (by the pid in its .pids dir), and wait for it."""
        for pid_file in glob.glob(str(self.root / ".pids" / "*" / "pantsd" / "pid")):
            try:
                pid = int(Path(pid_file).read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if b"pantsd" not in cmdline:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                log(f"bench: pantsd {pid} did not exit on SIGTERM; SIGKILL")
                os.kill(pid, signal.SIGKILL)

    def pantsd_rss_mib(self) -> float:
        """Current RSS of this repo's pantsd (informational)."""
        for pid_file in glob.glob(str(self.root / ".pids" / "*" / "pantsd" / "pid")):
            try:
                pid = int(Path(pid_file).read_text().strip())
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
            except (OSError, ValueError):
                continue
        return 0.0


_LOG_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d(?:\.\d+)?) \[\w+\] (Starting|Completed): (.*)$", re.MULTILINE)


def phases(result: Run) -> Dict[str, float]:
    """Where a `pants package` run's wall time went, from its log timestamps: start-up (daemon,
    BUILD files, capturing sources) until the first lamina process or the core's PEX build, that
    build, the extract/scan processes, the compose process(es), and the rest (dist/, exit)."""
    local = time.localtime(result.started)
    midnight = result.started - (local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec) - (result.started % 1)
    events = []
    for h, m, sec, kind, what in _LOG_LINE.findall(result.stderr):
        t = (int(h) * 3600 + int(m) * 60 + float(sec) + midnight - result.started) % 86400
        events.append((min(t, result.seconds), kind, what))

    def find(kind: str, prefix: str, last: bool = False) -> Optional[float]:
        hits = [t for t, k, w in events if k == kind and w.startswith(prefix)]
        return (hits[-1] if last else hits[0]) if hits else None

    core_start, core_end = find("Starting", "Building the lamina core"), find("Completed", "Building the lamina core", True)
    first = find("Starting", "lamina: ")
    compose_start, compose_end = find("Starting", "lamina: compose"), find("Completed", "lamina: compose", True)
    if first is None or compose_start is None or compose_end is None:
        return {}
    work_start = core_end if core_end is not None else first
    out = {"start-up": core_start if core_start is not None else first}
    if core_start is not None and core_end is not None:
        out["core PEX"] = core_end - core_start
    out.update({"extract/scan": compose_start - work_start, "compose": compose_end - compose_start,
                "dist/ + exit": result.seconds - compose_end})
    return {k: round(max(v, 0.0), 2) for k, v in out.items()}


_IO_LINE = re.compile(r"lamina: io of (.*?): rchar=(\d+) wchar=(\d+)")


def io_per_process(result: Run) -> List[Tuple[str, int, int]]:
    """(description, bytes read, bytes written) of every lamina process the run started, as each
    process reported its own /proc/self/io counters (rchar/wchar: page cache and kernel copies
    included) with `[lamina].report_io`."""
    return [(what, int(r), int(w)) for what, r, w in _IO_LINE.findall(result.stderr)]


def lamina_processes(result: Run, kind: str = "") -> List[str]:
    """The lamina processes Pants ran (not cache hits) in one invocation, e.g. kind="extract"."""
    return [p for p in completed_processes(result.stderr) if p.startswith(f"lamina: {kind}")]
