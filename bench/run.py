#!/usr/bin/env python3
"""lamina benchmark: lamina vs. the `ADD layer.tar /` recipe, side by side, in one run.

Usage (from anywhere; needs the Docker engine on /var/run/docker.sock and `./pants` bootstrapped):

    python3 bench/run.py                     # everything (~11 min): compose, memory, scale, examples
    python3 bench/run.py --quick             # small smoke run (< 3 min): same scenarios, tiny sizes
    python3 bench/run.py --runs 5            # more runs per measurement (default 3, --quick 2)
    python3 bench/run.py --scenario memory   # one scenario: compose | engine | memory | scale | examples | all
    python3 bench/run.py --scenario compose,engine   # several, side by side in one run

Scenarios (each measurement is repeated --runs times, A/B interleaved; medians and ratios of
medians are reported, never single timings):

  compose   Three source images on a busybox base with incompressible layers (200, 200 and
            100 MB, the last also holding 5,000 small files), `docker save`d to archives. Measures
            (a) the seed's recipe (bench/seed_recipe.sh: untar, copy the layer tars, `ADD` them,
                `docker build --network none`), cold (no build cache) and warm (same inputs);
            (b) `pants package` of the equivalent composed_image in a sample repo: cold (fresh
                local store, named caches and pantsd), no-op re-run and `pants list ::` with a
                warm pantsd, and after one source image was rebuilt and re-saved (incremental,
                also done for (a));
            (c) the lamina CLI alone (`python -m lamina compose` over the archives);
            (d) Pants' own `docker_image` target building the seed's Dockerfile;
            (e) the floor: one sha256 pass (openssl) and one copy (cp) of the layer bytes the
                output holds;
            plus the peak RSS (/usr/bin/time -v) of every kind of lamina process Pants runs
            (extract, scan, check, compose), run through the CLI; where each cold/incremental
            Pants run spent its time (from its log); and, if lamina CLI / floor misses its goal,
            a cProfile summary of one `lamina compose`. The seed's build-cache hits are checked
            (0 cold, 3 warm, 2 incremental), as are the digests of the composed images.
            Every lamina process reports the bytes it read and wrote ([lamina].report_io, from
            its own /proc/self/io); the summary lists them for a cold package, with the total
            against the layers' size (goal: read <= 2x). Also: `pants package` after all three
            sources changed, warm pantsd, minus a no-op, against one `lamina compose`.
  engine    The same three images, named in the local engine (`docker-daemon:`), new content
            every trial, warm pantsd: the seed's recipe starting from `docker save` (its image
            ends in the engine) against `pants package` with docker-archive output and with
            output_format="docker-daemon" (loaded into the engine, only missing layers sent);
            then after one source changed (the seed re-saves only that image), also with
            output_format="oci". The docker-daemon trials run before the seed's: its image in
            the engine can hold the same layers, and a load after it would send nothing.
  large     The engine scenario's incremental trials (oci and docker-daemon outputs) with 2 GB
            of layers (950, 950 and 100 MB), the same 100 MB image changing: with `engine`,
            how lamina's incremental time grows from 500 MB to 2 GB (goal <= 1.3x), and the
            seed's recipe against it there (goal >= 5x).
  memory    `lamina compose`/`extract`/`scan`/`check`/`validate` over 1 GiB of synthetic
            layers (written streaming, no Docker): peak RSS must stay under 150 MB.
  scale     20 composed_image targets sharing those layers in one `pants package ::`: time and
            the number of extraction processes (each distinct layer should be extracted once).
  examples  A copy of examples/ in a sample repo: cold `pants package examples::`, no-op re-run,
            and no-op / `pants list ::` with a warm pantsd.

Prints a table of medians (min, max, n), ratios of medians against the goals, and peak RSS;
exits 1 if something did not go as expected (listed under PROBLEMS). Results go to
bench/results/<timestamp>.json and .png (git-ignored). The bench runs in its own
venv bench/.venv (created on first use; matplotlib from the package index), keeps its scratch
files in a temp dir (--workdir to choose) and removes them, its Docker images and its pantsd
processes at the end. Pants runs offline: the sample repos resolve the lamina core's
requirements ([lamina].requirements) from a local wheel directory (bench/.venv/wheels, filled
once by pip), and the CLI runs on bench/.venv/core (./pants' CPython 3.9 + those wheels).
"""
from __future__ import annotations

import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(BENCH_DIR, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")


def _in_bench_venv() -> bool:
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def _ensure_venv() -> None:
    """Re-exec under bench/.venv (created with matplotlib on first use) unless already there."""
    if _in_bench_venv() or "--help" in sys.argv or "-h" in sys.argv:
        return
    import subprocess

    if not os.path.exists(VENV_PYTHON):
        print(f"bench: creating {VENV} (matplotlib from the package index)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    probe = subprocess.run([VENV_PYTHON, "-c", "import matplotlib"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([VENV_PYTHON, "-m", "pip", "install", "--quiet", "matplotlib"], check=True)
    os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])


if __name__ == "__main__":
    _ensure_venv()
    sys.path.insert(0, BENCH_DIR)
    from lamina_bench.cli import main

    sys.exit(main(sys.argv[1:], doc=__doc__))
