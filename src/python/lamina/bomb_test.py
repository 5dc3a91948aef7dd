"""Tests that a decompression bomb after a layer's last tar header keeps every tar-reading route in bounded memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lamina import cli
from lamina_testing.big import write_bomb_oci

INFLATED = 400 << 20  # zeros after the end-of-archive blocks: ~400 KB of gzip
LIMIT_MB = 150

# Runs argv[1:] as its only child and prints that child's exit status, output and peak RSS. A
# fresh, small process per measurement: RUSAGE_CHILDREN keeps the largest child of a process,
# and a child forked from a big parent (pytest) would count the parent's pages.
_MEASURE = (
    "import json, resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "print(json.dumps({'rc': r.returncode, 'kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,\n"
    "                  'stdout': r.stdout.decode(), 'stderr': r.stderr.decode()}))\n"
)
_LAMINA = f"import sys; from {cli.__name__} import main; sys.exit(main())"


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("bomb") / "oci")
    write_bomb_oci(path, {"usr": None, "usr/bin": None, "usr/bin/tool": b"#!/bin/sh\n", "etc/os-release": b"ID=bomb\n"},
                   INFLATED)
    return "oci:" + path


def _lamina(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-c", _LAMINA, *args],
                         env=env, capture_output=True, check=True, text=True, timeout=300)
    result: dict = json.loads(out.stdout)
    result["mb"] = result["kb"] / 1024
    return result


def test_path_selector_reads_a_bomb_layer_in_bounded_memory(bomb: str, tmp_path) -> None:
    r = _lamina("extract", bomb, "--layer", "path=/usr/bin/tool", "--out", str(tmp_path / "out"))
    assert r["rc"] == 0, r["stderr"]
    assert json.loads(r["stdout"])["layers"][0]["index"] == 0
    assert r["mb"] < LIMIT_MB, f"extract --layer path= peaked at {r['mb']:.0f} MB"


def test_path_selector_matching_nothing_fails_in_one_line_and_bounded_memory(bomb: str, tmp_path) -> None:
    r = _lamina("extract", bomb, "--layer", "path=/no/such/file", "--out", str(tmp_path / "out"))
    assert r["rc"] == 2
    assert r["stderr"].count("\n") == 1 and "matches no layer" in r["stderr"], r["stderr"]
    assert r["mb"] < LIMIT_MB, f"extract --layer path= (no match) peaked at {r['mb']:.0f} MB"


def test_layers_files_lists_a_bomb_layer_in_bounded_memory(bomb: str) -> None:
    r = _lamina("layers", bomb, "--files", "--json")
    assert r["rc"] == 0, r["stderr"]
    assert json.loads(r["stdout"])["layers"][0]["files"] == ["etc/os-release", "usr/", "usr/bin/", "usr/bin/tool"]
    assert r["mb"] < LIMIT_MB, f"layers --files peaked at {r['mb']:.0f} MB"


def test_scan_indexes_a_bomb_layer_in_bounded_memory(bomb: str, tmp_path) -> None:
    out = tmp_path / "index.json"
    r = _lamina("scan", bomb, "--out", str(out))
    assert r["rc"] == 0, r["stderr"]
    assert json.loads(r["stdout"])["layers"][0]["entries"] == 4
    assert r["mb"] < LIMIT_MB, f"scan peaked at {r['mb']:.0f} MB"
