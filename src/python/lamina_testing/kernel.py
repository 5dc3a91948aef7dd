"""Spies on the kernel-side copy (os.copy_file_range) for tests of the fast paths."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: importing the helpers needs no pytest
    import pytest


def count_kernel_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Let os.copy_file_range run, recording the byte count each call asked for (in the list returned)."""
    asked: list[int] = []
    real = os.copy_file_range

    def counting(*args):  # type: ignore[no-untyped-def]
        asked.append(args[2])
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", counting)
    return asked
