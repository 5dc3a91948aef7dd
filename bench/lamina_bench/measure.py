"""Running a command with wall time and peak RSS, and collecting repeated samples into series."""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

TIME_BIN = "/usr/bin/time"


class CommandFailed(RuntimeError):
    pass


@dataclass
class Run:
    argv: List[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    max_rss_kib: Optional[int] = None  # peak RSS of the command (with /usr/bin/time -v)
    started: float = 0.0  # time.time() at start, to place the command's own log timestamps

    def tail(self, lines: int = 25) -> str:
        text = (self.stdout.strip() + "\n" + self.stderr.strip()).strip()
        return "\n".join(text.splitlines()[-lines:])


def have_time_bin() -> bool:
    return os.access(TIME_BIN, os.X_OK)


_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def run(argv: Sequence[str], *, cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
        rss: bool = False, check: bool = True, timeout: float = 1800) -> Run:
    """Run `argv` to completion; wall time around the process, peak RSS via /usr/bin/time -v.

    Output goes to temp files (not pipes), so large outputs never block the child.
    """
    argv = [str(a) for a in argv]
    with tempfile.TemporaryDirectory(prefix="lamina-bench-run-") as tmp:
        rss_file = os.path.join(tmp, "rusage")
        full = [TIME_BIN, "-v", "-o", rss_file, *argv] if rss and have_time_bin() else argv
        with open(os.path.join(tmp, "out"), "w+b") as out, open(os.path.join(tmp, "err"), "w+b") as err:
            started, start = time.time(), time.perf_counter()
            proc = subprocess.Popen(full, cwd=cwd, env=dict(env) if env is not None else None,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                _, status, usage = _wait4(proc, timeout)
            finally:
                seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            result = Run(argv, seconds, proc.returncode, out.read().decode(errors="replace"),
                         err.read().decode(errors="replace"), started=started)
        if rss:
            result.max_rss_kib = _read_rss(rss_file) if have_time_bin() else usage.ru_maxrss
    if check and result.returncode != 0:
        raise CommandFailed(f"`{' '.join(argv)}` exited {result.returncode}:\n{result.tail()}")
    return result


def _wait4(proc: "subprocess.Popen[bytes]", timeout: float):  # type: ignore[no-untyped-def]
    """os.wait4 that kills the child after `timeout` s; blocking (exact wall time), not polling."""
    import threading

    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        return os.wait4(proc.pid, 0)
    finally:
        timer.cancel()


def _read_rss(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            m = _MAX_RSS.search(f.read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


@dataclass
class Series:
    """Repeated samples of one measurement."""

    key: str
    label: str
    group: str
    seconds: List[float] = field(default_factory=list)
    rss_kib: List[int] = field(default_factory=list)
    na: Optional[str] = None  # why the measurement could not be made
    note: str = ""

    def add(self, seconds: float, rss_kib: Optional[int] = None) -> None:
        self.seconds.append(seconds)
        if rss_kib is not None:
            self.rss_kib.append(rss_kib)

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def peak_rss_mb(self) -> Optional[float]:
        return max(self.rss_kib) * 1024 / 1e6 if self.rss_kib else None

    def to_json(self) -> dict:
        return {"label": self.label, "group": self.group, "seconds": [round(s, 4) for s in self.seconds],
                "median_s": None if self.median is None else round(self.median, 4),
                "min_s": round(min(self.seconds), 4) if self.seconds else None,
                "max_s": round(max(self.seconds), 4) if self.seconds else None,
                "rss_kib": self.rss_kib, "peak_rss_mb": self.peak_rss_mb, "na": self.na, "note": self.note}


@dataclass
class Results:
    series: Dict[str, Series] = field(default_factory=dict)
    counts: Dict[str, List[int]] = field(default_factory=dict)  # e.g. extraction processes per run
    info: Dict[str, object] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)  # anything that did not go as expected
    phases: Dict[str, List[Dict[str, float]]] = field(default_factory=dict)  # where a Pants run's time went
    profiles: Dict[str, List[str]] = field(default_factory=dict)  # cProfile summaries of lamina processes
    load: Dict[str, float] = field(default_factory=dict)  # 1-minute load average at the start of each run
    # per measured step: (process, bytes read, bytes written) of each lamina process, and the
    # bytes of layers the step had to handle (what "read once" is measured against)
    io: Dict[str, Tuple[List[Tuple[str, int, int]], int]] = field(default_factory=dict)

    def series_for(self, key: str, label: str, group: str, note: str = "") -> Series:
        if key not in self.series:
            self.series[key] = Series(key, label, group, note=note)
        return self.series[key]

    def record(self, key: str, label: str, group: str, seconds: float, rss_kib: Optional[int] = None,
               note: str = "") -> None:
        self.series_for(key, label, group, note).add(seconds, rss_kib)
        rss = f", peak RSS {rss_kib / 1024:.0f} MiB" if rss_kib else ""
        log(f"  {label}: {seconds:.2f} s{rss}")

    def not_available(self, key: str, label: str, group: str, why: str) -> None:
        self.series_for(key, label, group).na = why
        log(f"  {label}: n/a ({why})")

    def count(self, key: str, value: int) -> None:
        self.counts.setdefault(key, []).append(value)

    def note_load(self, scenario: str, run: int) -> None:
        self.load[f"{scenario} run {run + 1}"] = round(os.getloadavg()[0], 2)

    def add_io(self, key: str, rows: List[Tuple[str, int, int]], layer_bytes: int) -> None:
        """The newest run's I/O of each lamina process of a step (kept: the last one measured)."""
        if rows:
            self.io[key] = (rows, layer_bytes)

    def add_phases(self, key: str, phases: Dict[str, float]) -> None:
        if phases:
            self.phases.setdefault(key, []).append(phases)

    def attempt(self, what: str, step: "Callable[[], None]") -> None:
        """Run one measurement step; a failed command is reported as a problem, not fatal."""
        try:
            step()
        except CommandFailed as e:
            lines = [l.strip() for l in str(e).splitlines() if l.strip()]
            detail = next((l for l in reversed(lines) if "Error" in l or "error" in l), lines[-1] if lines else "")
            self.problem(f"{what} failed: {detail[:300]}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        log(f"  PROBLEM: {text}")


def pair(i: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """A/B interleaving: A then B on even runs, B then A on odd runs."""
    for step in ((first, second) if i % 2 == 0 else (second, first)):
        step()


_START = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - _START:6.0f}s] {text}", file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.monotonic() - _START


def rmtree(path: "os.PathLike[str] | str") -> None:
    shutil.rmtree(path, ignore_errors=True)
