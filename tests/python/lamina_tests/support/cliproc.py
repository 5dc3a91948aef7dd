"""Running the lamina CLI in a child process and reporting what it wrote to disk (/proc/self/io)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

# Runs lamina's main in this interpreter, then prints the process's own I/O counters as the last
# line of stderr. write_bytes counts the bytes the process caused to be written to storage (page
# cache dirtied by it), not what it sent over sockets: a push or a load that writes no layer to
# disk first stays far below one layer's size.
_WRAPPER = """
import json, sys
from lamina.cli import main
rc = main(sys.argv[1:])
io = dict(line.split(": ", 1) for line in open("/proc/self/io").read().splitlines())
print("LAMINA-IO " + json.dumps({k: int(v) for k, v in io.items()}), file=sys.stderr)
sys.exit(rc)
"""


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str  # without the counters line
    write_bytes: int
    read_bytes: int


def run_cli(argv: Sequence[str], cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
            timeout: float = 600) -> CliRun:
    child_env = dict(os.environ if env is None else env)
    # this interpreter's path, made absolute: the child runs in another directory (Pants' test
    # sandboxes put relative source roots on sys.path)
    child_env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], cwd=cwd, env=child_env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = proc.stderr.splitlines()
    counters = {"write_bytes": -1, "read_bytes": -1}
    if lines and lines[-1].startswith("LAMINA-IO "):
        counters = json.loads(lines.pop()[len("LAMINA-IO "):])
    return CliRun(proc.returncode, proc.stdout, "\n".join(lines), counters["write_bytes"], counters["read_bytes"])
