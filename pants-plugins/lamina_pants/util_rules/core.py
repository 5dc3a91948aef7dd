"""The lamina core as a PEX, and running it as a sandboxed, cacheable process."""
from __future__ import annotations

import logging
from dataclasses import dataclass
import hashlib
from typing import Iterable, Optional

from pants.backend.python.target_types import EntryPoint, PythonSourceField, PythonTestSourceField
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.goals import lockfile as python_lockfile
from pants.backend.python.goals.lockfile import GeneratePythonLockfile, GeneratePythonToolLockfileSentinel
from pants.backend.python.target_types import PexLayout
from pants.backend.python.util_rules.pex import Pex, PexRequest
from pants.backend.python.util_rules.pex_environment import PythonExecutable
from pants.backend.python.util_rules.pex_requirements import EntireLockfile, Lockfile, PexRequirements
from pants.core.goals.generate_lockfiles import GenerateToolLockfileSentinel
from pants.core.util_rules.lockfile_metadata import calculate_invalidation_digest
from pants.core.util_rules.subprocess_environment import SubprocessEnvironmentVars
from pants.core.target_types import FileSourceField, ResourceSourceField
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.core.util_rules.stripped_source_files import StrippedSourceFiles
from pants.engine.addresses import Address, Addresses, UnparsedAddressInputs
from pants.engine.fs import Digest
from pants.engine.internals.session import RunId
from pants.engine.process import (
    FallibleProcessResult,
    Process,
    ProcessCacheScope,
    ProcessExecutionFailure,
    ProcessResult,
    ProcessResultMetadata,
)
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.unions import UnionRule
from pants.engine.target import SourcesField, Target, TransitiveTargets, TransitiveTargetsRequest
from pants.util.ordered_set import FrozenOrderedSet
from pants.util.logging import LogLevel

from lamina import __version__ as lamina_version
from lamina_pants.subsystem import (
    BUILTIN_LOCKFILE,
    DEFAULT_INTERPRETER_CONSTRAINTS,
    DEFAULT_LOCKFILE,
    DEFAULT_REQUIREMENTS,
    NO_LOCKFILE,
    LaminaSubsystem,
)


logger = logging.getLogger(__name__)


class LaminaBuildError(Exception):
    """A lamina process failed on user input; the message names the target and the problem."""


@dataclass(frozen=True)
class LaminaCore:
    """The core's PEX, the interpreter that runs it, and where processes find the two.

    Every lamina process's cache key holds the PEX, so it must be the same bytes on every machine
    that shares a remote cache: a plain (packed) PEX is, while Pants' venv PEX scripts name the
    machine's PATH and interpreter path. The processes name neither: they run the PEX's venv
    through `link`, a symlink in a Pants named cache (never part of a key) that a small
    per-session step points at the venv it made with the interpreter this machine found."""

    pex: Pex
    python: PythonExecutable
    link: str  # the symlink to the venv's entry script, relative to a sandbox
    link_cache: tuple[str, str]  # the named cache holding it: (name, LINK_DIR)
    # `[subprocess-environment].env_vars`, which every process Pants runs gets (as its PEXes do)
    subprocess_env: tuple[tuple[str, str], ...] = ()


# The module the PEX runs (`lamina.cli:main`), by its path relative to its source root.
CORE_ENTRY_FILE = "lamina/cli.py"


class LaminaCoreConfigError(Exception):
    """`[lamina].core_target` names no target holding the core."""


def _core_source_fields(targets: Iterable[Target]) -> tuple[SourcesField, ...]:
    """The sources fields of the core's targets; tests (`python_tests`) are never runtime files."""
    return tuple(
        tgt[SourcesField]
        for tgt in targets
        if tgt.has_field(SourcesField) and not tgt.has_field(PythonTestSourceField)
    )


def _core_resolve_error(stderr: str, subsystem: LaminaSubsystem) -> str:
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    why = next((l for l in lines if "ERROR" in l or "No matching distribution" in l), lines[-1] if lines else "")
    return (
        f"`[lamina].core_target` is not set, so lamina builds its core's PEX from the requirement "
        f"`{core_requirement()}` (the plugin's own version) and `[lamina].requirements` "
        f"({', '.join(subsystem.requirements) or 'none'}), but they could not be resolved: {why}\n"
        f"Make the `lamina` {lamina_version} wheel reachable (the lamina-pants plugin's wheels are "
        'released together: e.g. `[python-repos]` `find_links = ["file:///path/to/wheels"]` in '
        "pants.toml), or set `[lamina].core_target` to a target holding the core's modules, e.g. "
        'src/python/BUILD: `files(name="core_files", sources=["lamina/**/*.py", "!lamina/**/*_test.py"])` '
        'and `[lamina]` `core_target = "src/python:core_files"` (see `pants help-advanced lamina`).'
    )


def core_requirement() -> str:
    """The core distribution at the plugin's own version: the plugin (`lamina-pants`) requires
    `lamina` at exactly its version, so the `lamina` package it imports carries that version."""
    return f"lamina=={lamina_version}"


def core_requirements(subsystem: LaminaSubsystem) -> "PexRequirements | EntireLockfile":
    """`[lamina].requirements`, installed from `[lamina].lockfile` (pinned, with hashes) unless that
    is `<none>`. Pants checks that the lockfile was made from these requirements and for
    interpreter constraints that cover `[lamina].interpreter_constraints`."""
    requirements = tuple(subsystem.requirements)
    if subsystem.lockfile == NO_LOCKFILE:
        return PexRequirements(requirements, description_of_origin="[lamina].requirements")
    if subsystem.lockfile == DEFAULT_LOCKFILE:
        url = f"resource://{BUILTIN_LOCKFILE[0]}/{BUILTIN_LOCKFILE[1]}"
        origin = "the lockfile built into the lamina-pants plugin (`[lamina].lockfile`)"
    else:
        url, origin = subsystem.lockfile, "the option `[lamina].lockfile`"
    lockfile = Lockfile(
        url=url,
        url_description_of_origin=origin,
        resolve_name=LaminaSubsystem.options_scope,
        lockfile_hex_digest=calculate_invalidation_digest(requirements),
    )
    return EntireLockfile(lockfile, complete_req_strings=requirements)


class LaminaLockfileSentinel(GeneratePythonToolLockfileSentinel):
    resolve_name = LaminaSubsystem.options_scope


@rule(desc="The lamina core's lockfile request", level=LogLevel.DEBUG)
async def lamina_lockfile_request(_: LaminaLockfileSentinel, subsystem: LaminaSubsystem) -> GeneratePythonLockfile:
    """`pants generate-lockfiles --resolve=lamina` writes `[lamina].lockfile` (a path; Pants refuses
    the built-in `<default>` and `<none>` with a message saying to set one)."""
    return GeneratePythonLockfile(
        requirements=FrozenOrderedSet(subsystem.requirements),
        interpreter_constraints=InterpreterConstraints(subsystem.interpreter_constraints),
        resolve_name=LaminaSubsystem.options_scope,
        lockfile_dest=subsystem.lockfile,
        diff=False,
    )


CORE_PEX = "lamina.pex"
# The PEX makes a venv of itself in PEX_ROOT on its first run: processes run that venv's entry
# script directly (no PEX bootstrap per process).
_VENV_ARGS = ("--venv", "--venv-site-packages-copies")
# Named caches: the symlink to the core's venv (one cache per interpreter path, see _core, all
# seen at the same path), and PEX_ROOT (Pants' own, which its PEXes use too).
LINK_DIR = ".cache/lamina_core"
PEX_ROOT_CACHE = ("pex_root", ".cache/pex_root")
# Where the core's PEX is linked (read-only) into each process's sandbox: part of its key, not copied.
CORE_DIR = "__lamina_core"
# A fixed PATH (the credential helpers `docker-credential-*` are looked up on it): the machine's
# own would be part of every key.
PROCESS_PATH = "/usr/local/bin:/usr/bin:/bin"
# Makes the PEX's venv with the interpreter "$1" and points the symlink "$2" at the venv's entry
# script, unless "$2" already works (then it only costs a shell). The link is replaced in one rename.
_LINK_SCRIPT = (
    'set -e; if [ -x "$2" ]; then exit 0; fi; root=$(pwd); '
    'prefix=$(cd ' + CORE_DIR + ' && PEX_ROOT="$root/.cache/pex_root" PEX_INTERPRETER=1 "$1" ' + CORE_PEX
    + " -c 'import sys; print(sys.prefix)'); "
    'target=$(cd "$prefix" && pwd -P)/pex; test -x "$target"; '
    'mkdir -p "$(dirname "$2")"; ln -sfn "$target" "$2.$$"; mv -f "$2.$$" "$2"'
)


def cache_suffix(text: str) -> str:
    """16 hex digits of `text`'s sha256 written with the letters a-p: Pants' named cache names may
    hold only lowercase letters and underscores (digits are not lowercase)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16].translate(str.maketrans("0123456789", "ghijklmnop"))


async def _core(pex: Pex, interpreter_constraints: InterpreterConstraints,
                subprocess_env: SubprocessEnvironmentVars) -> LaminaCore:
    python = await Get(PythonExecutable, InterpreterConstraints, interpreter_constraints)
    # The link is named after the PEX (the same name on every machine, another for another core).
    # Its named cache is named after the interpreter's path, which is no part of a key: repositories
    # on one machine that found other interpreters each keep their own link.
    # (and its fingerprint: another interpreter installed at the same path gets another venv)
    cache = (f"lamina_core_{cache_suffix(python.path + chr(0) + (python.fingerprint or ''))}", LINK_DIR)
    return LaminaCore(pex, python, f"{LINK_DIR}/{pex.digest.fingerprint[:24]}/pex", cache,
                      tuple(sorted(subprocess_env.vars.items())))


def _check_builtin_lockfile(subsystem: LaminaSubsystem) -> None:
    """The built-in lockfile was made for the default requirements and constraints only; Pants' own
    message for a mismatch names options lamina does not have, so this one comes first."""
    if subsystem.lockfile != DEFAULT_LOCKFILE:
        return
    changed = [name for name, default in (("requirements", DEFAULT_REQUIREMENTS),
                                          ("interpreter_constraints", DEFAULT_INTERPRETER_CONSTRAINTS))
               if sorted(getattr(subsystem, name)) != sorted(default)]
    if changed:
        options = " and ".join(f"`[lamina].{name}`" for name in changed)
        raise LaminaCoreConfigError(
            f"{options} differ from the defaults the lockfile built into the lamina-pants plugin was made "
            "for. Make a lockfile of your own: set `[lamina].lockfile` to a path, e.g. "
            'lockfile = "3rdparty/lamina.lock", and run `pants generate-lockfiles --resolve=lamina` '
            '(or set lockfile = "<none>" to resolve without one).'
        )


@rule(desc="Build the lamina core", level=LogLevel.DEBUG)
async def lamina_core(subsystem: LaminaSubsystem, subprocess_env: SubprocessEnvironmentVars) -> LaminaCore:
    _check_builtin_lockfile(subsystem)
    interpreter_constraints = InterpreterConstraints(subsystem.interpreter_constraints)
    requirements = core_requirements(subsystem)
    if not subsystem.core_target:
        # The installed plugin: the core is the `lamina` distribution of the plugin's version
        # (which requires nothing itself; its requirements are `[lamina].requirements`), resolved
        # like any third-party requirement (`[python-repos]` indexes and find_links), beside a
        # PEX of the locked requirements.
        try:
            locked = await Get(
                Pex,
                PexRequest(
                    output_filename="lamina-requirements.pex",
                    internal_only=True,
                    requirements=requirements,
                    interpreter_constraints=interpreter_constraints,
                    description="Building the lamina core's requirements",
                ),
            )
            pex = await Get(
                Pex,
                PexRequest(
                    output_filename=CORE_PEX,
                    internal_only=True,
                    layout=PexLayout.PACKED,
                    additional_args=_VENV_ARGS,
                    requirements=PexRequirements(
                        (core_requirement(),),
                        description_of_origin="the lamina core (`[lamina].core_target` unset)",
                    ),
                    interpreter_constraints=interpreter_constraints,
                    main=EntryPoint("lamina.cli", "main"),
                    pex_path=(locked,),
                    description=f"Building the lamina core ({core_requirement()})",
                ),
            )
        except ProcessExecutionFailure as e:
            raise LaminaCoreConfigError(_core_resolve_error(e.stderr.decode(errors="replace"), subsystem)) from None
        return await _core(pex, interpreter_constraints, subprocess_env)
    origin = "the option `[lamina].core_target`"
    addresses = await Get(
        Addresses, UnparsedAddressInputs([subsystem.core_target], owning_address=None, description_of_origin=origin)
    )
    transitive = await Get(TransitiveTargets, TransitiveTargetsRequest(addresses))
    files = await Get(
        SourceFiles,
        SourceFilesRequest(
            _core_source_fields(transitive.closure),
            for_sources_types=(PythonSourceField, FileSourceField, ResourceSourceField),
        ),
    )
    # Every file is placed relative to its source root, also those of `files` targets (which
    # Pants otherwise keeps at their repo paths): the PEX imports them as modules.
    stripped = await Get(StrippedSourceFiles, SourceFiles(files.snapshot, unrooted_files=()))
    held = stripped.snapshot.files
    if CORE_ENTRY_FILE not in held:
        found = ", ".join(held[:5]) + (" ..." if len(held) > 5 else "") if held else "no Python, files or resources sources"
        raise LaminaCoreConfigError(
            f"{origin} is {subsystem.core_target!r}, but that target and its dependencies do not "
            f"hold {CORE_ENTRY_FILE} (relative to a source root); they hold {found}. Point the "
            "option at a target whose sources are the `lamina` package's modules, under a source "
            f"root, or unset it to use the `{core_requirement()}` distribution."
        )
    pex = await Get(
        Pex,
        PexRequest(
            output_filename=CORE_PEX,
            internal_only=True,
            layout=PexLayout.PACKED,
            additional_args=_VENV_ARGS,
            requirements=requirements,
            interpreter_constraints=interpreter_constraints,
            main=EntryPoint("lamina.cli", "main"),
            sources=stripped.snapshot.digest,
            description="Building the lamina core",
        ),
    )
    return await _core(pex, interpreter_constraints, subprocess_env)


@dataclass(frozen=True)
class InterpreterLinked:
    pass


@rule(desc="Find the interpreter for lamina", level=LogLevel.DEBUG)
async def link_interpreter(core: LaminaCore) -> InterpreterLinked:
    """Once a session: make the core's venv with the interpreter this machine found, and point the
    core's link at it."""
    await Get(
        ProcessResult,
        Process(
            argv=("/bin/sh", "-c", _LINK_SCRIPT, "sh", core.python.path, core.link),
            description=f"lamina: set up the core with {core.python.path}",
            level=LogLevel.DEBUG,
            immutable_input_digests={CORE_DIR: core.pex.digest},
            append_only_caches=dict((core.link_cache, PEX_ROOT_CACHE)),
            env={"PATH": PROCESS_PATH, "PEX_ROOT": PEX_ROOT_CACHE[1], "PEX_IGNORE_RCFILES": "true"},
            cache_scope=ProcessCacheScope.PER_SESSION,
        ),
    )
    return InterpreterLinked()


async def core_process(
    core: LaminaCore,
    argv: tuple[str, ...],
    *,
    input_digest: Digest,
    description: str,
    env: "dict[str, str]",
    cache_scope: ProcessCacheScope,
    output_directories: tuple[str, ...] = (),
    read_only_inputs: tuple[tuple[str, Digest], ...] = (),
    append_only_caches: tuple[tuple[str, str], ...] = (),
    level: LogLevel = LogLevel.INFO,
) -> Process:
    """A process running the lamina CLI with `argv`: nothing in it names this machine (see LaminaCore).
    The PEX is a read-only input (in the key, linked into the sandbox, never copied); the process
    runs its venv through the link."""
    await Get(InterpreterLinked, LaminaCore, core)
    return Process(
        argv=(core.link, *argv),
        description=description,
        level=level,
        input_digest=input_digest,
        immutable_input_digests={CORE_DIR: core.pex.digest, **dict(read_only_inputs)},
        append_only_caches=dict((core.link_cache, PEX_ROOT_CACHE, *append_only_caches)),
        env={"PATH": PROCESS_PATH, "PEX_ROOT": PEX_ROOT_CACHE[1], "PEX_IGNORE_RCFILES": "true",
             **dict(core.subprocess_env), **env},
        output_directories=output_directories,
        cache_scope=cache_scope,
    )


@dataclass(frozen=True)
class LaminaRun:
    """One run of the lamina CLI for a target (None: for the build, as the engine's image list)."""

    address: Optional[Address]
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
    # Pants named caches (name, path in the sandbox): shared across runs and never part of the
    # cache key, whatever they hold (see image_source.CREDENTIALS_CACHE).
    append_only_caches: tuple[tuple[str, str], ...] = ()
    context: str = ""  # after the address in an error, e.g. " (for linux/arm64)"
    # A run whose failure is an answer (LaminaRunResult.exit_code), not an error of the build.
    may_fail: bool = False


def read_only_dir(role: str, digest: Digest) -> str:
    """The directory a read-only input is linked at: named after its content, so that two runs
    that differ only in such an input also differ in their argv (Pants 2.17 otherwise shows
    one's description for the other)."""
    return f"__{role}-{digest.fingerprint[:16]}"


@dataclass(frozen=True)
class LaminaRunResult:
    output_digest: Digest
    stdout: bytes
    # The run (RunId) in which the process really ran, None if Pants took it from a cache: a rule
    # that reports what a process did compares it with the current RunId, so a result served from
    # a cache or from pantsd's memory is not reported as work done now.
    ran_in: Optional[int] = None
    exit_code: int = 0  # not 0 only for a LaminaRun that may fail


def ran_in(metadata: ProcessResultMetadata) -> Optional[int]:
    """The RunId a process result was made in if it was made by running the process, else None."""
    made_in = RunId(metadata.source_run_id)
    return metadata.source_run_id if metadata.source(made_in) == ProcessResultMetadata.Source.RAN else None


@rule
async def run_lamina(request: LaminaRun, core: LaminaCore, subsystem: LaminaSubsystem) -> LaminaRunResult:
    process = await core_process(
        core,
        request.argv,
        input_digest=request.input_digest,
        description=request.description,
        cache_scope=request.cache_scope,
        output_directories=(request.output_directory,),
        read_only_inputs=request.read_only_inputs,
        append_only_caches=request.append_only_caches,
        # Pants takes the outputs over into its store; an fsync in the sandbox only costs.
        # LAMINA_TMPDIR: temporary files (an engine image's export) go in the sandbox, not /tmp
        env={"LAMINA_NO_FSYNC": "1", "LAMINA_TMPDIR": ".",
             **({"LAMINA_REPORT_IO": "1"} if subsystem.report_io else {}),
             **dict(request.extra_env)},
    )
    result = await Get(FallibleProcessResult, Process, process)
    for line in result.stderr.decode(errors="replace").splitlines():
        if line.startswith("lamina: warning: "):
            logger.warning(f"{request.address or 'lamina'}: {line[len('lamina: warning: '):]}")
        elif line.startswith("lamina: io: ") and subsystem.report_io:
            logger.info(f"lamina: io of {request.description}: {line[len('lamina: io: '):]}")
    if result.exit_code != 0 and request.may_fail:
        return LaminaRunResult(result.output_digest, result.stdout, ran_in(result.metadata), result.exit_code)
    if result.exit_code != 0:
        lines = [l for l in result.stderr.decode(errors="replace").splitlines() if l.strip()]
        # The error is the last "lamina: error: " line and what follows it (a failed check lists
        # its findings there); anything else, the last line.
        starts = [i for i, l in enumerate(lines) if l.startswith("lamina: error: ")]
        if starts:
            detail = "\n".join(lines[starts[-1]:])[len("lamina: error: "):]
        else:
            detail = lines[-1] if lines else f"lamina exited with code {result.exit_code}"
        raise LaminaBuildError(f"{request.address or 'lamina'}{request.context}: {detail}")
    return LaminaRunResult(result.output_digest, result.stdout, ran_in(result.metadata))


def rules() -> Iterable:
    return (
        *collect_rules(),
        # the Python lockfile rules, also in repos that do not enable Pants' Python backend
        *python_lockfile.rules(),
        UnionRule(GenerateToolLockfileSentinel, LaminaLockfileSentinel),
    )
