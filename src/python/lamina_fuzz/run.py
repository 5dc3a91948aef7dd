"""Run fuzz targets for a given time, one process each, and report inputs, coverage edges and crashes.

    python -m lamina_fuzz.run [--seconds N] [--target NAME ...] [--corpus DIR] [--artifacts DIR]

Each target starts from its seeds (seeds.py, written into its corpus directory) under libFuzzer's
limits: `--rss-mb` of memory for the whole process, `--timeout` seconds per input. A crash (an
exception other than a one-line LaminaError, a contract violation, an input over the memory or
time limit) stops that target; its input is kept in the artifacts directory. The exit status is 1
if any target crashed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from lamina_fuzz.seeds import SEEDS, write_dictionary, write_seeds

RSS_LIMIT_MB = 512
INPUT_TIMEOUT_S = 30
MAX_LEN = 1 << 16
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_ARTIFACT = re.compile(r"(?:crash|timeout|oom|leak|slow-unit)-[0-9a-f]+$")


@dataclass(frozen=True)
class Outcome:
    target: str
    inputs: int
    edges: int
    features: int
    corpus: int
    peak_rss_mb: int
    crashes: tuple[str, ...]  # paths of the inputs that crashed (or hung, or ran out of memory)
    seconds: float
    returncode: int
    log: str
    error: str = ""  # the first lines of the crash's report

    def line(self) -> str:
        text = (f"{self.target:18} inputs={self.inputs:<9} edges={self.edges:<6} features={self.features:<6} "
                f"corpus={self.corpus:<5} rss={self.peak_rss_mb}MB crashes={len(self.crashes)}  ({self.seconds:.0f}s)")
        for path in self.crashes:
            text += f"\n    crash input: {path}"
        if self.error:
            text += "\n    " + self.error.replace("\n", "\n    ")
        return text


def _child_env(tmp: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["TMPDIR"] = tmp  # what the readers write to temp directories stays in this run's directory
    env["LAMINA_NO_FSYNC"] = "1"
    return env


def _crash_report(log: str) -> str:
    """The exception (its type and message, and the innermost frame) or libFuzzer's error line."""
    at = log.find("=== Uncaught Python exception: ===")
    if at >= 0:
        block = log[at:].split("\n\n", 1)[0].splitlines()
        return "\n".join(block[:2] + block[-3:-1])
    for marker in ("==ERROR: libFuzzer:", "ALARM: working on the last Unit"):
        at = log.find(marker)
        if at >= 0:
            return log[at:].splitlines()[0]
    return ""


def run_target(name: str, seconds: int, corpus: str, artifacts: str, rss_mb: int = RSS_LIMIT_MB,
               timeout: int = INPUT_TIMEOUT_S, max_len: int = MAX_LEN, runs: Optional[int] = None) -> Outcome:
    """Fuzz one target for `seconds` (or `runs` inputs), its corpus in `corpus` (seeded first)."""
    write_seeds(name, corpus)
    os.makedirs(artifacts, exist_ok=True)
    before = set(os.listdir(artifacts))
    args = [sys.executable, "-m", "lamina_fuzz.child", name, f"-max_total_time={seconds}", f"-rss_limit_mb={rss_mb}",
            f"-malloc_limit_mb={rss_mb}", f"-timeout={timeout}", f"-max_len={max_len}", "-print_final_stats=1",
            f"-artifact_prefix={artifacts.rstrip(os.sep)}{os.sep}"]
    if runs is not None:
        args.append(f"-runs={runs}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lamina-fuzz-tmp-") as tmp:
        dictionary = os.path.join(tmp, "dictionary.txt")
        write_dictionary(name, dictionary)
        args += [f"-dict={dictionary}", corpus]
        proc = subprocess.run(args, env=_child_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=seconds + 2 * timeout + 300, check=False)
    log = proc.stdout.decode(errors="replace")
    statuses = _STATUS.findall(log)
    stats = dict(_STAT.findall(log))
    last = statuses[-1] if statuses else ("0", "0", "0", "0")
    crashes = tuple(os.path.join(artifacts, n) for n in sorted(set(os.listdir(artifacts)) - before) if _ARTIFACT.match(n))
    error = _crash_report(log) if (crashes or proc.returncode) else ""
    if proc.returncode and not crashes and not error:
        error = f"the fuzzer exited with status {proc.returncode}:\n" + "\n".join(log.splitlines()[-10:])
    return Outcome(name, int(stats.get("number_of_executed_units", last[0])), int(last[1]), int(last[2]), int(last[3]),
                   int(stats.get("peak_rss_mb", 0)),
                   crashes if crashes or not proc.returncode else ("(no input kept)",), time.monotonic() - start,
                   proc.returncode, log, error)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamina_fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument("--target", action="append", choices=sorted(SEEDS), help="a target to run (default: all)")
    parser.add_argument("--corpus", help="keep each target's corpus in DIR/TARGET (default: a temporary directory)")
    parser.add_argument("--artifacts", default="fuzz-crashes", help="where crashing inputs go, DIR/TARGET (default fuzz-crashes)")
    parser.add_argument("--rss-mb", type=int, default=RSS_LIMIT_MB, help=f"memory bound per process (default {RSS_LIMIT_MB})")
    parser.add_argument("--timeout", type=int, default=INPUT_TIMEOUT_S, help=f"seconds per input (default {INPUT_TIMEOUT_S})")
    parser.add_argument("--log", help="write each target's libFuzzer output to DIR/TARGET.log")
    args = parser.parse_args(argv)
    failed = 0
    print(f"fuzzing {len(args.target or SEEDS)} target(s), {args.seconds}s each, {args.rss_mb} MB, {args.timeout}s per input",
          flush=True)
    for name in args.target or list(SEEDS):
        scratch = tempfile.mkdtemp(prefix="lamina-fuzz-corpus-")
        corpus = os.path.join(args.corpus, name) if args.corpus else scratch
        try:
            outcome = run_target(name, args.seconds, corpus, os.path.join(args.artifacts, name), args.rss_mb, args.timeout)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if args.log:
            os.makedirs(args.log, exist_ok=True)
            with open(os.path.join(args.log, name + ".log"), "w") as f:
                f.write(outcome.log)
        print(outcome.line(), flush=True)
        failed += bool(outcome.crashes)
    print(f"{failed} target(s) crashed" if failed else "no crashes", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
