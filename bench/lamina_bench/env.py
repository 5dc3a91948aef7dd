"""The machine the bench runs on: this checkout, the Pants bootstrap, interpreters, tools, wheels."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lamina_bench.measure import have_time_bin, log

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
WHEELS_DIR = BENCH_DIR / ".venv" / "wheels"
SEED_RECIPE = BENCH_DIR / "seed_recipe.sh"
CORE_VENV = BENCH_DIR / ".venv" / "core"
PEX_VERSION = "2.1.137"
# The sample repos' Pants resolves offline (find_links = WHEELS_DIR, no index): the lamina core's
# requirements ([lamina].requirements) and the Dockerfile parser of pants.backend.docker.
DOCKERFILE_REQUIREMENT = "dockerfile==3.2.0"


@dataclass(frozen=True)
class Tools:
    pants_venv: Path  # ./pants' bootstrap venv (Pants 2.17.1)
    pex_path: Path  # the pex tool ./pants built
    core_python: str  # bench/.venv/core's python: CPython 3.9 + the core's requirements
    sha256_cmd: List[str]  # the fastest sha256 tool here, for the floor
    time_bin: bool  # /usr/bin/time present (peak RSS of lamina processes)

    @property
    def pants_bin(self) -> str:
        return str(self.pants_venv / "bin" / "pants")

    def export(self) -> None:
        """What ./pants exports, for the support code that runs nested Pants (SampleRepo)."""
        os.environ["LAMINA_PANTS_VENV"] = str(self.pants_venv)
        os.environ["LAMINA_PEX_PATH"] = str(self.pex_path)
        os.environ.setdefault("DOCKER_BUILDKIT", "0")

    def core_env(self, pycache: Path) -> Dict[str, str]:
        """Environment for `python -m lamina` from this checkout (bytecode kept out of the checkout)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "src" / "python")
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
        return env


def _bootstrap_cache() -> Path:
    if os.environ.get("LAMINA_BOOTSTRAP_CACHE"):
        return Path(os.environ["LAMINA_BOOTSTRAP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lamina" / "bootstrap"


def _find_pants_venv() -> Optional[Path]:
    """The venv ./pants execs: $LAMINA_PANTS_VENV, else the newest complete bootstrap."""
    if os.environ.get("LAMINA_PANTS_VENV"):
        return Path(os.environ["LAMINA_PANTS_VENV"])
    candidates = [Path(p) for p in glob.glob(str(_bootstrap_cache() / "*" / "venv"))
                  if os.access(os.path.join(p, "bin", "pants"), os.X_OK)
                  and os.path.isfile(os.path.join(os.path.dirname(p), f"pex-{PEX_VERSION}.pex"))]
    return max(candidates, key=lambda p: p.lstat().st_mtime) if candidates else None


def find_tools() -> Tools:
    """Everything the bench runs: Pants (bootstrapped by ./pants if needed), the offline wheels,
    and a CPython 3.9 venv with the lamina core's requirements for the CLI."""
    venv = _find_pants_venv()
    if venv is None:
        log("bench: bootstrapping Pants with `./pants --version` (first use on this machine)")
        subprocess.run([str(REPO / "pants"), "--version"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        venv = _find_pants_venv()
        if venv is None:
            raise SystemExit("bench: ./pants ran but no bootstrap venv was found under " + str(_bootstrap_cache()))
    pex = Path(os.environ.get("LAMINA_PEX_PATH") or venv.parent / f"pex-{PEX_VERSION}.pex")
    if not pex.is_file():
        pex = REPO / ".lamina" / f"pex-{PEX_VERSION}.pex"
    requirements = core_requirements(venv)
    ensure_wheels([*requirements, DOCKERFILE_REQUIREMENT])
    return Tools(pants_venv=venv, pex_path=pex, core_python=ensure_core_venv(venv, requirements),
                 sha256_cmd=_sha256_cmd(), time_bin=have_time_bin())


def core_requirements(pants_venv: Path) -> List[str]:
    """The plugin's `[lamina].requirements` default: what the core's PEX holds inside Pants."""
    code = ("import sys; sys.path[:0] = ['pants-plugins', 'src/python']; "
            "from lamina_pants.subsystem import LaminaSubsystem as L; "
            "print('\\n'.join(L.requirements.flag_options['default']))")
    out = subprocess.run([str(pants_venv / "bin" / "python"), "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def _stamp_ok(stamp: Path, text: str) -> bool:
    return stamp.is_file() and stamp.read_text() == text


# What Pants' pex (2.1.137) installs into the venv it resolves with; with no package index, the
# sample repos' resolves find them in the wheel directory too, or fail on a machine whose pex cache
# is new ("No matching distribution found for pip==23.1.2").
PEX_RESOLVER_PINS = ("pip==23.1.2", "setuptools==67.7.2", "wheel==0.40.0")


def ensure_wheels(requirements: Sequence[str]) -> Path:
    """CPython 3.9 manylinux wheels of `requirements` and their dependencies (and pex's own
    resolver pins), fetched once with pip (the package index); the sample repos' Pants then
    resolves from them with no index."""
    requirements = [*requirements, *PEX_RESOLVER_PINS]
    stamp, text = WHEELS_DIR / ".requirements", "\n".join(sorted(requirements)) + "\n"
    if not _stamp_ok(stamp, text):
        log(f"bench: fetching wheels of {', '.join(requirements)} (CPython 3.9) into {WHEELS_DIR}")
        WHEELS_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                        "--python-version", "3.9", "--implementation", "cp", "--abi", "cp39",
                        "--platform", "manylinux2014_x86_64", "-d", str(WHEELS_DIR), *requirements], check=True)
        stamp.write_text(text)
    return WHEELS_DIR


def ensure_core_venv(pants_venv: Path, requirements: Sequence[str]) -> str:
    """bench/.venv/core: the CPython 3.9 under ./pants' venv plus the core's requirements (from the
    local wheels), so `python -m lamina` runs what the Pants processes run, on the same Python."""
    python = CORE_VENV / "bin" / "python"
    stamp, text = CORE_VENV / ".requirements", "\n".join(sorted(requirements)) + "\n"
    if not _stamp_ok(stamp, text):
        base = os.environ.get("LAMINA_PYTHON") or subprocess.run(
            [str(pants_venv / "bin" / "python"), "-c", "import sys; print(sys._base_executable)"],
            capture_output=True, text=True, check=True).stdout.strip()
        log(f"bench: creating {CORE_VENV} ({base} + {', '.join(requirements)})")
        subprocess.run([base, "-m", "venv", "--clear", str(CORE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(WHEELS_DIR),
                        *requirements], check=True, env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"})
        stamp.write_text(text)
    return str(python)


def _sha256_cmd() -> List[str]:
    """openssl when present: it uses the CPU's SHA extensions like Python's hashlib does, while
    coreutils' sha256sum is ~3x slower here, which would flatter lamina against the floor."""
    if shutil.which("openssl"):
        return ["openssl", "dgst", "-sha256"]
    return ["sha256sum"]


def machine_info() -> Dict[str, object]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load],
            "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": sys.version.split()[0]}
