"""The lamina core as a PEX, and running it as a sandboxed, cacheable process."""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Iterable

from pants.backend.python.target_types import EntryPoint
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.util_rules.pex import PexRequest, VenvPex, VenvPexProcess
from pants.backend.python.util_rules.pex_requirements import PexRequirements
from pants.engine.addresses import Address
from pants.engine.fs import CreateDigest, Digest, FileContent
from pants.engine.process import FallibleProcessResult, Process, ProcessCacheScope
from pants.engine.rules import Get, collect_rules, rule
from pants.util.frozendict import FrozenDict
from pants.util.logging import LogLevel

import lamina
from lamina_pants.subsystem import LaminaSubsystem


logger = logging.getLogger(__name__)


class LaminaBuildError(Exception):
    """A lamina process failed on user input; the message names the target and the problem."""


@dataclass(frozen=True)
class LaminaCore:
    pex: VenvPex


def _core_files() -> list[FileContent]:
    """The core's modules (tests and test helpers left out), as files relative to the source root."""
    root = os.path.dirname(lamina.__file__)
    out = []
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "testing"))
        for name in sorted(names):
            if name.endswith(".py") and not name.endswith("_test.py"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    rel = os.path.relpath(path, os.path.dirname(root))
                    out.append(FileContent(rel.replace(os.sep, "/"), f.read()))
    return out


@rule(desc="Build the lamina core", level=LogLevel.DEBUG)
async def lamina_core(subsystem: LaminaSubsystem) -> LaminaCore:
    sources = await Get(Digest, CreateDigest(_core_files()))
    pex = await Get(
        VenvPex,
        PexRequest(
            output_filename="lamina.pex",
            internal_only=True,
            requirements=PexRequirements(subsystem.requirements, description_of_origin="[lamina].requirements"),
            interpreter_constraints=InterpreterConstraints(subsystem.interpreter_constraints),
            main=EntryPoint("lamina.cli", "main"),
            sources=sources,
            description="Building the lamina core",
        ),
    )
    return LaminaCore(pex)


@dataclass(frozen=True)
class LaminaRun:
    """One run of the lamina CLI for a target."""

    address: Address
    argv: tuple[str, ...]
    input_digest: Digest
    output_directory: str
    description: str
    extra_env: tuple[tuple[str, str], ...] = ()
    # PER_SESSION for what asks a daemon or registry for its current state; everything keyed
    # on content stays SUCCESSFUL (cached locally and remotely).
    cache_scope: ProcessCacheScope = ProcessCacheScope.SUCCESSFUL
    # Large inputs the process only reads (layer bundles, source archives), by the directory name
    # the process sees them under. Pants materializes each digest once and symlinks it into every
    # sandbox that needs it, instead of copying its bytes into each sandbox; they are part of the
    # cache key like `input_digest`.
    read_only_inputs: tuple[tuple[str, Digest], ...] = ()


def read_only_dir(role: str, digest: Digest) -> str:
    """The directory a read-only input is linked at: named after its content, so that two runs
    that differ only in such an input also differ in their argv (Pants 2.17 otherwise shows
    one's description for the other)."""
    return f"__{role}-{digest.fingerprint[:16]}"


@dataclass(frozen=True)
class LaminaRunResult:
    output_digest: Digest
    stdout: bytes


@rule
async def run_lamina(request: LaminaRun, core: LaminaCore) -> LaminaRunResult:
    process = await Get(
        Process,
        VenvPexProcess(
            core.pex,
            argv=request.argv,
            input_digest=request.input_digest,
            output_directories=(request.output_directory,),
            description=request.description,
            level=LogLevel.INFO,
            cache_scope=request.cache_scope,
            # Pants takes the outputs over into its store; an fsync in the sandbox only costs.
            extra_env={"LAMINA_NO_FSYNC": "1", **dict(request.extra_env)},
        ),
    )
    if request.read_only_inputs:
        process = dataclasses.replace(
            process,
            immutable_input_digests=FrozenDict(
                {**process.immutable_input_digests, **dict(request.read_only_inputs)}
            ),
        )
    result = await Get(FallibleProcessResult, Process, process)
    for line in result.stderr.decode(errors="replace").splitlines():
        if line.startswith("lamina: warning: "):
            logger.warning(f"{request.address}: {line[len('lamina: warning: '):]}")
    if result.exit_code != 0:
        lines = [l for l in result.stderr.decode(errors="replace").splitlines() if l.strip()]
        # The error is the last "lamina: error: " line and what follows it (a failed check lists
        # its findings there); anything else, the last line.
        starts = [i for i, l in enumerate(lines) if l.startswith("lamina: error: ")]
        if starts:
            detail = "\n".join(lines[starts[-1]:])[len("lamina: error: "):]
        else:
            detail = lines[-1] if lines else f"lamina exited with code {result.exit_code}"
        raise LaminaBuildError(f"{request.address}: {detail}")
    return LaminaRunResult(result.output_digest, result.stdout)


def rules() -> Iterable:
    return collect_rules()
