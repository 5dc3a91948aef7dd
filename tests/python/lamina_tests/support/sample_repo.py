"""A throwaway Pants repo that uses the lamina plugin from this checkout (or its wheels), and running Pants in it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

# The plugin and core sources reach the test sandbox as `files` targets at their repo paths. The
# plugin (which imports the core to check BUILD fields) is on the sample repo's pythonpath.
PLUGIN_DIRS = ("pants-plugins", "src/python")
# The core's PEX is built from a target in the sample repo (`[lamina].core_target`), so the core's
# runtime modules are copied in under the same source root and address as in this repo.
CORE_BUILD = 'files(name="core_files", sources=["lamina/**/*.py", "!lamina/**/*_test.py"])\n'
CORE_TARGET = "src/python:core_files"


OWN_FILES_BUILD = 'files(name="test_files", sources=["**/*", "!**/BUILD", "!pants.toml", "!BUILD_ROOT", "!src/**"])\n'


def _checkout_dir(name: str) -> Path:
    for base in (Path.cwd(), *Path.cwd().parents):
        if (base / name).is_dir():
            return (base / name).resolve()
    raise RuntimeError(f"{name}/ is not in the test sandbox; the test needs a dependency on its files")


def copy_core(root: Path) -> None:
    """The core's runtime modules (`lamina/**/*.py` but tests) into `root`/src/python, with their target."""
    src = _checkout_dir("src/python") / "lamina"
    dest = root / "src" / "python"
    for path in sorted(src.rglob("*.py")):
        if path.name.endswith("_test.py") or "__pycache__" in path.parts:
            continue
        target = dest / "lamina" / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (dest / "BUILD").write_text(CORE_BUILD)


def pants_pex_section() -> str:
    pex = os.environ.get("LAMINA_PEX_PATH")
    if not pex or not os.path.isfile(pex):
        raise RuntimeError("LAMINA_PEX_PATH is not set to the pex tool; run the tests through ./pants")
    import hashlib

    with open(pex, "rb") as f:
        data = f.read()
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    versions = ",\n".join(
        f'  "v2.1.137|{plat}|{sha}|{size}"' for plat in ("macos_arm64", "macos_x86_64", "linux_x86_64", "linux_arm64")
    )
    return f'[pex-cli]\nversion = "v2.1.137"\nurl_template = "file://{pex}"\nknown_versions = [\n{versions}\n]\n'


class SampleRepo:
    def __init__(self, root: Path, extra_toml: str = "", lamina_toml: str = "",
                 installed_plugin: Optional[Tuple[str, Path]] = None, own_files: bool = True) -> None:
        """`extra_toml` is appended to pants.toml; `lamina_toml` are lines of its `[lamina]` table.
        `own_files`: a root BUILD file's `files` target owns every file the test writes (but BUILD
        files, the core's copy and pants.toml).

        By default the plugin and core come from this checkout (pythonpath, a copy of the core
        for `[lamina].core_target`). `installed_plugin=(requirement, wheel_dir)` installs them as a
        user's repository does: `[GLOBAL].plugins = [requirement]` found in `wheel_dir`
        (`[python-repos].find_links`), no pythonpath, no core sources, `[lamina].core_target` unset.
        """
        self.root = root
        self.last_max_rss_kib = 0
        root.mkdir(parents=True, exist_ok=True)
        if installed_plugin is None:
            pythonpath = ", ".join(f'"{_checkout_dir(d)}"' for d in PLUGIN_DIRS)
            plugin_toml = f"pythonpath = [{pythonpath}]\n"
            core_toml = f'core_target = "{CORE_TARGET}"\n'
        else:
            requirement, wheels = installed_plugin
            # Pants keys the plugin's and the core's resolves on the requirement strings, not on the
            # wheels' bytes: no local process cache, so rebuilt wheels of one version are used.
            plugin_toml = f'plugins = ["{requirement}"]\nlocal_cache = false\n'
            core_toml = ""
            extra_toml = f'[python-repos]\nfind_links = ["file://{wheels}"]\n\n{extra_toml}'
        (root / "pants.toml").write_text(
            f"""
[GLOBAL]
pants_version = "2.17.1"
backend_packages = ["lamina_pants"]
{plugin_toml}ca_certs_path = "/etc/ssl/certs/ca-certificates.crt"
pantsd = false
dynamic_ui = false
colors = false

[anonymous-telemetry]
enabled = false

[subprocess-environment]
env_vars = ["PIP_CONFIG_FILE=/dev/null"]

{pants_pex_section()}
[lamina]
{core_toml}{lamina_toml}

{extra_toml}
"""
        )
        (root / "BUILD_ROOT").write_text("")
        if own_files:
            # Every file the test puts in the repo (archives, layouts) is owned by a target, as
            # `[lamina].unowned_archive_behavior` wants; tests of that option pass own_files=False.
            (root / "BUILD").write_text(OWN_FILES_BUILD)
        if installed_plugin is None:
            copy_core(root)

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PANTS_")}
        full_env.update({"NO_SCIE_WARNING": "1", "PANTS_BUILDROOT_OVERRIDE": str(self.root)})
        full_env.update(extra or {})
        return full_env

    def pants_argv(self, *args: str) -> List[str]:
        venv = os.environ.get("LAMINA_PANTS_VENV")
        if not venv:
            raise RuntimeError("LAMINA_PANTS_VENV is not set; run the tests through ./pants")
        return [os.path.join(venv, "bin", "pants"), *args]

    def pants(self, *args: str, check: bool = True, env: Optional[Dict[str, str]] = None,
              timeout: float = 600) -> "subprocess.CompletedProcess[str]":
        proc = self._pants_once(args, env, timeout)
        if proc.returncode != 0 and _SPAWN_FLAKE in proc.stderr:
            # Pants' engine could not start one of its processes (its own ETXTBSY retry failed: a
            # known Pants problem on loaded machines, pantsbuild/pants#19318), so that process never
            # ran; the run is repeated once (what did finish is a cache hit), and says so. The two
            # runs' logs (stderr) are returned together: a process the first run completed is a cache
            # hit in the second, so tests that count completed processes see it once, in the first
            # part. The goal's output (stdout) is the second run's.
            print(f"sample repo: `pants {' '.join(args)}` hit Pants' process-spawn failure; running it again")
            first = proc
            proc = self._pants_once(args, env, timeout)
            proc = subprocess.CompletedProcess(
                proc.args, proc.returncode, proc.stdout, first.stderr + proc.stderr
            )
            # Two sessions ran: per-session work (tag lookups, engine queries) happened twice, and what
            # the first did before it failed (a download) is a cache hit in the second. Tests that count
            # such things per run read `attempts`.
            proc.attempts = 2  # type: ignore[attr-defined]
        else:
            proc.attempts = 1  # type: ignore[attr-defined]
        if check and proc.returncode != 0:
            raise AssertionError(f"pants {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def _pants_once(self, args: "tuple[str, ...]", env: Optional[Dict[str, str]],
                    timeout: float) -> "subprocess.CompletedProcess[str]":
        venv = os.environ.get("LAMINA_PANTS_VENV")
        if not venv:
            raise RuntimeError("LAMINA_PANTS_VENV is not set; run the tests through ./pants")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PANTS_")}
        full_env.update({"NO_SCIE_WARNING": "1", "PANTS_BUILDROOT_OVERRIDE": str(self.root)})
        full_env.update(env or {})
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            child = subprocess.Popen(
                [os.path.join(venv, "bin", "pants"), *args],
                cwd=self.root, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            )
            try:
                _, status, usage = _wait4(child.pid, timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise
            child.returncode = os.waitstatus_to_exitcode(status)
            self.last_max_rss_kib = usage.ru_maxrss  # the Pants process (its engine runs in it)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(
                list(args), child.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace")
            )


def _wait4(pid: int, timeout: float):  # type: ignore[no-untyped-def]
    """os.wait4 with a deadline: (pid, status, rusage) of that one child."""
    deadline = time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return got, status, usage
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(str(pid), timeout)
        time.sleep(0.05)


_SPAWN_FLAKE = "Error launching process after 1 retry for ETXTBSY"


def completed_processes(output: str, prefix: str = "lamina: ") -> List[str]:
    """Descriptions of the processes Pants ran (not cache hits): its 'Completed: ...' log lines."""
    return re.findall(rf"Completed: ({re.escape(prefix)}.*)$", output, flags=re.MULTILINE)
