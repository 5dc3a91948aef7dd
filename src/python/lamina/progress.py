"""A one-line progress indication on stderr for long copies, shown only when stderr is a terminal."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    def __init__(self, label: str, total: int, stream: Optional[TextIO] = None) -> None:
        self._label = label
        self._total = max(total, 1)
        self._done = 0
        stream = stream or sys.stderr
        self._stream = stream
        self._enabled = stream.isatty()
        self._last = 0.0

    def add(self, n: int) -> None:
        self._done += n
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last >= 0.25 or self._done >= self._total:
            self._last = now
            pct = min(100, self._done * 100 // self._total)
            self._stream.write(f"\r{self._label}: {self._done >> 20} / {self._total >> 20} MiB ({pct}%)")
            self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()


class NoProgress(Progress):
    def __init__(self) -> None:
        super().__init__("", 1)
        self._enabled = False
