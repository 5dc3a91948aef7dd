"""The contract every fuzz target checks: a result or a one-line LaminaError, and no file outside `out`."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from lamina.errors import LaminaError


class ContractViolation(AssertionError):
    """A reader broke the contract on some input (the fuzzer reports it as a crash)."""


class Run:
    """One execution of a target: a fresh directory for its inputs (`root`) and outputs (`out`).

    A target writes its input files under `root`, then calls `inputs_written()`; from then on
    only `out` may change."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.out = os.path.join(root, "out")
        os.mkdir(self.out)
        self._before: Optional[frozenset[str]] = None

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def inputs_written(self) -> None:
        self._before = _tree(self.root, skip=self.out)

    def check_files(self) -> None:
        if self._before is None:
            return
        after = _tree(self.root, skip=self.out)
        if after != self._before:
            added = sorted(after - self._before)
            removed = sorted(self._before - after)
            raise ContractViolation(f"files changed outside the output directory: added {added}, removed {removed}")


def _tree(root: str, skip: str) -> frozenset[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == skip:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if full != skip:
                out.add(os.path.relpath(full, root))
    return frozenset(out)


def check_error(e: LaminaError) -> None:
    """A LaminaError's message must be one non-empty line."""
    message = str(e)
    if len(message.splitlines()) != 1 or message != message.strip("\r\n"):
        raise ContractViolation(f"{type(e).__name__} message is not one line: {message!r}") from e


@contextmanager
def fresh_run(parent: Optional[str] = None) -> Iterator[Run]:
    root = tempfile.mkdtemp(prefix="lamina-fuzz-", dir=parent)
    try:
        yield Run(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if os.path.exists(root):  # a read-only directory inside: make it writable and retry
            for dirpath, dirnames, _ in os.walk(root):
                for d in dirnames:
                    os.chmod(os.path.join(dirpath, d), 0o700)
            shutil.rmtree(root, ignore_errors=True)


def check(target: Callable[[bytes, Run], object], data: bytes, parent: Optional[str] = None) -> Optional[LaminaError]:
    """Run `target` on `data` under the contract; the LaminaError it raised, if any.

    Any other exception propagates (it is the finding), as does ContractViolation."""
    with fresh_run(parent) as run:
        error: Optional[LaminaError] = None
        try:
            target(data, run)
        except LaminaError as e:
            check_error(e)
            error = e
        run.check_files()
        leftovers = sorted(p for p in _tree(run.out, skip="") if os.path.basename(p).startswith(".lamina-"))
        if leftovers:
            raise ContractViolation(f"temporary files left behind in the output directory: {leftovers}")
        return error
