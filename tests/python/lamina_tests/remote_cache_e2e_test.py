"""Team scale: two checkouts share extracted layers and composed images through a real REAPI server."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lamina_testing.big import write_big_docker_archive
from lamina_tests.support.buildgrid import BuildGrid, require_bgd
from lamina_tests.support.sample_repo import SampleRepo, completed_processes

BUILD = """
docker_layer(name="big", image="big.tar", layer=-1)
docker_layer(name="small", image="big.tar", layer=0)
composed_image(name="img", base="scratch", platform="linux/amd64", layers=[":small", ":big"],
               repository="lamina-remote/img")
"""


def _stats(output: str) -> dict:
    return {k: int(v) for k, v in re.findall(r"^\s+(remote_cache_\w+|local_\w+): (\d+)$", output, re.MULTILINE)}


def _warnings(output: str) -> list:
    return [line for line in output.splitlines() if "[WARN]" in line or "[ERROR]" in line]


def _repo(root: Path, archive: Path) -> SampleRepo:
    repo = SampleRepo(root)
    repo.write("images/BUILD", BUILD)
    os.link(archive, root / "images" / "big.tar")
    return repo


def _remote_flags(address: str, *, read: bool, write: bool, cache_dir: Path, named_caches: Path,
                  stats: bool = True) -> list:
    return [
        f"--remote-store-address={address}",
        "--remote-instance-name=",
        f"--remote-cache-read={read}",
        f"--remote-cache-write={write}",
        "--remote-cache-warnings=first_only",
        # the README's timeouts: on a 2-core CI machine, BuildGrid (Python) storing the 200 MB layer can answer an
        # action-cache write after Pants' 1.5 s default, which counts as a write error (seen once in CI)
        "--remote-store-rpc-timeout-millis=120000",
        "--remote-store-chunk-upload-timeout-seconds=600",
        "--remote-cache-rpc-timeout-millis=30000",
        # Pants gives the cache writes still running when it is done 3 s by default, then drops them silently; the
        # last process (compose) writes a 200 MB image
        "--session-end-tasks-timeout=600",
        # a cache hit needs only the blobs to exist: no race between fetching 200 MB and the local process Pants
        # starts beside the lookup (the image written to dist/ is fetched either way)
        "--cache-content-behavior=validate",
        f"--local-store-dir={cache_dir / 'store'}",
        f"--named-caches-dir={named_caches}",  # pip's downloads; not part of any process's cache key
        *(["--stats-log", "--plugins=[]"] if stats else []),
    ]


def _interpreter_copy(dest: Path) -> Path:
    """This interpreter's installation at another path (hard links where the file system allows):
    what another machine's interpreter looks like to Pants. Returns its `python3.9`."""
    import shutil
    import sys

    prefix = Path(sys.base_prefix)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(prefix, dest, symlinks=True, copy_function=link)
    exe = dest / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert exe.exists(), sorted(p.name for p in (dest / "bin").iterdir())
    return exe


def _machine_env(root: Path) -> dict:
    """PATH (system directories only), HOME and TMPDIR of another machine."""
    for name in ("home", "tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(root / "home"), "TMPDIR": str(root / "tmp")}


@pytest.fixture(scope="module")
def named_caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("named-caches")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "big.tar"
    write_big_docker_archive(str(path), [1 << 20, 200 << 20])
    return path


def test_second_checkout_runs_no_lamina_process_and_gets_identical_image(
    tmp_path: Path, archive: Path, named_caches: Path
) -> None:
    require_bgd()
    with BuildGrid(tmp_path / "bgd") as server:
        a = _repo(tmp_path / "checkout-a", archive)
        # Under a loaded CI machine BuildGrid (Python) once failed one write (seen once in ~40 runs, the
        # server logged nothing). That is the server's or the transport's hiccup, not a property of
        # lamina's processes; the run is repeated once with a fresh local store, so that every
        # process runs and is written again, and the assertions hold for that run.
        for attempt in (1, 2):
            first = a.pants("package", "images:img",
                            *_remote_flags(server.address, read=False, write=True,
                                           cache_dir=tmp_path / f"cache-a{attempt}", named_caches=named_caches))
            stats_a = _stats(first.stderr)
            if stats_a.get("remote_cache_write_errors", 0) == 0 or attempt == 2:
                break
            print(f"attempt {attempt}: remote cache write errors: " + "; ".join(_warnings(first.stderr)))
        ran_a = completed_processes(first.stderr)
        # two extractions (each indexes its layer for the check in the same pass), one check, one compose
        assert sorted(p.split(" ")[1] for p in ran_a) == ["check", "compose", "extract", "extract"], ran_a
        # the warnings first: pytest cuts a long message, and they say what failed
        assert stats_a["remote_cache_write_errors"] == 0 and stats_a["remote_cache_write_successes"] > 0, (
            "\n".join(_warnings(first.stderr)), stats_a, server.log_tail())
        # every write finished (one cut off at the end of the session counts as neither success nor error)
        assert stats_a["remote_cache_write_attempts"] == stats_a["remote_cache_write_successes"], stats_a

        # Another machine: another checkout path, PATH, HOME and TMPDIR, and the interpreter at another path.
        b = _repo(tmp_path / "checkout-b", archive)
        elsewhere = tmp_path / "machine-b"
        python_b = _interpreter_copy(elsewhere / "python")
        env_b = _machine_env(elsewhere)
        second = b.pants("package", "images:img",
                         *_remote_flags(server.address, read=True, write=False, cache_dir=tmp_path / "cache-b",
                                        named_caches=named_caches),
                         f"--python-bootstrap-search-path=['{python_b.parent}']", env=env_b)
        # the run used the copy: Pants names the interpreter it chose at debug level only, so this
        # checks the option took (no interpreter on B's PATH could have been found instead)
        assert not any(Path(d, "python3.9").exists() for d in env_b["PATH"].split(":")), env_b["PATH"]
        stats_b = _stats(second.stderr)
        print(f"peak RSS of pants (engine in-process): A {a.last_max_rss_kib >> 10} MiB, "
              f"B {b.last_max_rss_kib >> 10} MiB")
        assert completed_processes(second.stderr) == [], second.stderr
        assert stats_b["remote_cache_requests_cached"] == stats_b["remote_cache_requests"] > 0, stats_b
        assert stats_b["remote_cache_read_errors"] == 0, stats_b
        assert stats_b.get("remote_cache_speculation_local_completed_first", 0) == 0, stats_b
        assert "Failed to read from remote cache" not in second.stderr, second.stderr
        out_a = (a.root / "dist" / "images" / "img.tar").read_bytes()
        out_b = (b.root / "dist" / "images" / "img.tar").read_bytes()
        assert len(out_a) > 200 << 20
        assert out_a == out_b
        # A 200 MB layer passes through the remote cache without the engine holding it in memory.
        assert b.last_max_rss_kib < 1_000_000, b.last_max_rss_kib


def test_server_down_builds_locally_with_one_warning(tmp_path: Path, archive: Path, named_caches: Path) -> None:
    require_bgd()
    with BuildGrid(tmp_path / "bgd") as server:
        address = server.address
    repo = _repo(tmp_path / "checkout", archive)
    result = repo.pants("package", "images:img",
                        *_remote_flags(address, read=True, write=False, cache_dir=tmp_path / "cache",
                                      named_caches=named_caches, stats=False))
    warnings = [l for l in result.stderr.splitlines() if "[WARN]" in l]
    assert len(warnings) == 1 and "remote cache" in warnings[0], warnings
    assert "Traceback" not in result.stderr
    assert (repo.root / "dist" / "images" / "img.tar").is_file()
