"""Owns the external services tests talk to: the Docker engine (probe and CLI wrapper) and throwaway registries."""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

__all__ = [
    "AccessLogEntry",
    "DockerError",
    "Registry",
    "RegistryError",
    "docker",
    "docker_available",
    "docker_env",
    "free_port",
    "require_docker",
    "start_registry",
]

# The Docker CLI on these machines has no buildx plugin; BuildKit would fail outright and the
# default path prints a deprecation banner. Ask for the classic builder explicitly, so a machine
# that does have buildx behaves the same as one that doesn't.
_DOCKER_ENV_DEFAULTS: Dict[str, str] = {"DOCKER_BUILDKIT": "0"}

DOCKER_TIMEOUT_S = 600.0
REGISTRY_START_TIMEOUT_S = 30.0
REGISTRY_STOP_TIMEOUT_S = 10.0


class DockerError(RuntimeError):
    """A `docker` command failed; the message carries the command, exit code and stderr."""

    def __init__(self, args: List[str], returncode: Optional[int], stderr: str, stdout: str = "") -> None:
        self.cmd = args
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        what = "timed out" if returncode is None else f"exited {returncode}"
        detail = stderr.strip() or stdout.strip()[-2000:] or "(no output)"
        super().__init__(f"`{' '.join(args)}` {what}:\n{detail}")


class RegistryError(RuntimeError):
    """A test registry could not be started."""


# --------------------------------------------------------------------------------------------
# Docker engine
# --------------------------------------------------------------------------------------------


def docker_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment `docker` commands run with: os.environ + lamina's defaults + `extra`."""
    env = dict(os.environ)
    for key, value in _DOCKER_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    if extra:
        env.update(extra)
    return env


def docker(
    *args: str,
    check: bool = True,
    input: Optional[Union[str, bytes]] = None,
    timeout: Optional[float] = DOCKER_TIMEOUT_S,
    env: Optional[Mapping[str, str]] = None,
) -> "subprocess.CompletedProcess[str]":
    """Run `docker ARGS...`, capturing output (decoded as UTF-8, errors replaced).

    With check=True (the default) a non-zero exit, or running past `timeout`, raises DockerError
    whose message includes stderr. Binary output belongs in files (`docker save -o PATH`), not stdout.
    `env` entries are added to the inherited environment (e.g. {"DOCKER_CONFIG": ...}).
    """
    exe = shutil.which("docker")
    if exe is None:
        raise DockerError(["docker", *args], 127, "the `docker` CLI is not on PATH")
    argv = [exe, *args]
    shown = ["docker", *args]
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            argv,
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=docker_env(env),
        )
    except subprocess.TimeoutExpired as e:
        raise DockerError(shown, None, _decode(e.stderr), _decode(e.stdout)) from None
    result = subprocess.CompletedProcess(shown, proc.returncode, _decode(proc.stdout), _decode(proc.stderr))
    if check and result.returncode != 0:
        raise DockerError(shown, result.returncode, result.stderr, result.stdout)
    return result


def _decode(data: Optional[Union[str, bytes]]) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode("utf-8", errors="replace")


def _docker_problem() -> Optional[str]:
    """None if a Docker engine answers; otherwise a one-paragraph reason."""
    if shutil.which("docker") is None:
        return "the `docker` CLI is not on PATH (apt-get install docker.io)"
    try:
        docker("info", "--format", "{{.ServerVersion}}", timeout=120)
    except DockerError as e:
        return str(e)
    return None


def docker_available() -> bool:
    """True if `docker info` reaches an engine."""
    return _docker_problem() is None


def require_docker() -> None:
    """Fail (under CI) or skip (elsewhere) the calling test unless a Docker engine answers."""
    problem = _docker_problem()
    if problem is None:
        return
    import pytest  # Imported here so the rest of this module works without pytest.

    message = (
        "This test needs a Docker engine, and none answers `docker info`.\n"
        "Start one with: source .ci/services.sh && lamina_services_up\n"
        f"({problem})"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# --------------------------------------------------------------------------------------------
# Registries
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AccessLogEntry(NamedTuple):
    """One request as the registry's access log recorded it."""

    method: str
    path: str  # Request target, query string included, e.g. "/v2/foo/manifests/latest".
    status: int
    user_agent: str


# Apache "combined" format, as docker-registry's access log writes it (to its stdout):
# 127.0.0.1 - - [28/Nov/2026:01:44:46 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) \S+'
    r'(?: "(?P<referer>[^"]*)" "(?P<ua>[^"]*)")?'
)


@dataclass
class Registry:
    """A running `docker-registry serve` on 127.0.0.1, owned by the test that started it.

    Use as a context manager, or call stop() (idempotent). Any registry still running when the
    interpreter exits is stopped then too.
    """

    port: int
    root: Path  # Directory with config.yml, storage/, access.log and registry.log.
    process: "subprocess.Popen[bytes]"
    credentials: Optional[Tuple[str, str]] = None

    @property
    def host(self) -> str:
        """'127.0.0.1:PORT', as used in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """'http://127.0.0.1:PORT'."""
        return f"http://{self.host}"

    @property
    def access_log_path(self) -> Path:
        return self.root / "access.log"

    @property
    def log_path(self) -> Path:
        """The registry's application log (its stderr)."""
        return self.root / "registry.log"

    def access_log_lines(self) -> List[AccessLogEntry]:
        """Every request served so far, oldest first (401 challenges included)."""
        try:
            text = self.access_log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        entries: List[AccessLogEntry] = []
        for line in text.splitlines():
            m = _ACCESS_LINE.match(line)
            if m:
                entries.append(AccessLogEntry(m["method"], m["path"], int(m["status"]), m["ua"] or ""))
        return entries

    def clear_access_log(self) -> None:
        """Forget requests logged so far (the file is opened in append mode by the registry)."""
        self.access_log_path.write_bytes(b"")

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the registry: SIGTERM, then SIGKILL after a bounded wait. Safe to call twice."""
        _stop_process(self.process, REGISTRY_STOP_TIMEOUT_S)
        _LIVE_REGISTRIES.discard(self.process)

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_LIVE_REGISTRIES: "set[subprocess.Popen[bytes]]" = set()


def _stop_process(proc: "subprocess.Popen[bytes]", timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@atexit.register
def _stop_leftover_registries() -> None:
    for proc in list(_LIVE_REGISTRIES):
        _stop_process(proc, REGISTRY_STOP_TIMEOUT_S)
    _LIVE_REGISTRIES.clear()


def _htpasswd_line(user: str, password: str) -> str:
    exe = shutil.which("htpasswd")
    if exe is None:
        raise RegistryError("`htpasswd` is not on PATH (apt-get install apache2-utils)")
    proc = subprocess.run(
        [exe, "-Bbn", user, password],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RegistryError(f"htpasswd -Bbn failed (exit {proc.returncode}): {_decode(proc.stderr).strip()}")
    return _decode(proc.stdout).strip() + "\n"


def _config_yaml(storage: Path, port: int, htpasswd_file: Optional[Path]) -> str:
    # JSON strings are valid YAML scalars; use them for anything path-like.
    import json

    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {json.dumps(str(storage))}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if htpasswd_file is not None:
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: lamina-test",
            f"    path: {json.dumps(str(htpasswd_file))}",
        ]
    return "\n".join(lines) + "\n"


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def _wait_ready(proc: "subprocess.Popen[bytes]", url: str, deadline: float) -> Optional[str]:
    """Poll GET url until it answers 200 or 401. Returns None when ready, else why not."""
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"docker-registry exited with code {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return None
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return None
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.1)
    return f"not ready after {REGISTRY_START_TIMEOUT_S:.0f}s ({last})"


def start_registry(
    tmpdir: Union[str, "os.PathLike[str]"],
    htpasswd: Optional[Tuple[str, str]] = None,
    *,
    timeout: float = REGISTRY_START_TIMEOUT_S,
) -> Registry:
    """Start a fresh `docker-registry serve` on 127.0.0.1 at a free port, storing under `tmpdir`.

    With htpasswd=(user, password) the registry requires basic auth (bcrypt htpasswd file made with
    `htpasswd -Bbn`). Returns once GET /v2/ answers (200, or 401 with auth). The Docker engine treats
    127.0.0.0/8 registries as insecure (plain HTTP) by default, so `docker push` to `.host` works.
    """
    exe = shutil.which("docker-registry")
    if exe is None:
        raise RegistryError("`docker-registry` is not on PATH (apt-get install docker-registry)")
    base = Path(tmpdir)
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="registry-", dir=base))
    storage = root / "storage"
    storage.mkdir()
    htpasswd_file: Optional[Path] = None
    if htpasswd is not None:
        htpasswd_file = root / "htpasswd"
        htpasswd_file.write_text(_htpasswd_line(*htpasswd))

    problems: List[str] = []
    # The port is picked free then handed to the registry; another process may grab it in between,
    # so retry a couple of times on "address already in use".
    for _attempt in range(3):
        port = free_port()
        config = root / "config.yml"
        config.write_text(_config_yaml(storage, port, htpasswd_file))
        access_log = root / "access.log"
        app_log = root / "registry.log"
        with open(access_log, "ab") as out, open(app_log, "ab") as err:
            proc = subprocess.Popen(
                [exe, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,  # the access log (Apache combined format)
                stderr=err,  # the application log (logrus)
                start_new_session=True,
                cwd=str(root),
            )
        _LIVE_REGISTRIES.add(proc)
        try:
            why = _wait_ready(proc, f"http://127.0.0.1:{port}/v2/", time.monotonic() + timeout)
        except BaseException:
            _stop_process(proc, REGISTRY_STOP_TIMEOUT_S)
            _LIVE_REGISTRIES.discard(proc)
            raise
        if why is None:
            return Registry(port=port, root=root, process=proc, credentials=htpasswd)
        _stop_process(proc, REGISTRY_STOP_TIMEOUT_S)
        _LIVE_REGISTRIES.discard(proc)
        log = _tail(app_log)
        problems.append(f"port {port}: {why}\n{log}")
        if "address already in use" not in log:
            break
    raise RegistryError("could not start docker-registry:\n" + "\n".join(problems))
