"""A BuildGrid REAPI server (CAS + action cache on disk) on 127.0.0.1, for remote-cache tests."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from lamina_tests.support.services import free_port

CONFIG = """
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
storages:
  - !disk-storage &cas
    path: {cas}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


def require_bgd() -> str:
    bgd = os.environ.get("LAMINA_BGD", "")
    if bgd and os.access(bgd, os.X_OK):
        return bgd
    message = "LAMINA_BGD is not set to BuildGrid's bgd; run `source .ci/services.sh && lamina_services_up`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


class BuildGrid:
    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "bgd.log"
        self._proc: Optional[subprocess.Popen] = None
        for _ in range(3):  # the free port may be taken before bgd binds it: try another
            if self._start(workdir):
                return
        raise RuntimeError(f"bgd exited early three times:\n{self.log_tail()}")

    def _start(self, workdir: Path) -> bool:
        """True once bgd listens; False if it exited early; raises if it never listens."""
        self.port = free_port()
        self.address = f"grpc://127.0.0.1:{self.port}"
        config = workdir / "bgd.yml"
        config.write_text(CONFIG.format(port=self.port, cas=workdir / "cas"))
        self._proc = subprocess.Popen(
            [require_bgd(), "server", "start", str(config)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"bgd did not listen within 180 s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for a failing test's message."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(no bgd log: {e})"

    def __enter__(self) -> "BuildGrid":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
