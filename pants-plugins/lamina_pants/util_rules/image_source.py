"""An `image`/`base` field value -> the files a lamina process needs and the core's source argument."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Optional

from pants.core.goals.package import BuiltPackage, EnvironmentAwarePackageRequest, PackageFieldSet
from pants.engine.addresses import Address, UnparsedAddressInputs
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import EMPTY_DIGEST, Digest, GlobExpansionConjunction, GlobMatchErrorBehavior, PathGlobs
from pants.engine.process import Process, ProcessCacheScope, ProcessResult
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import FieldSetsPerTarget, FieldSetsPerTargetRequest, Targets
from pants.util.frozendict import FrozenDict
from pants.util.logging import LogLevel

from lamina.registry.where import locations

from lamina_pants.subsystem import LaminaSubsystem
from lamina_pants.target_types import ComposedImageOutputFormatField
from lamina_pants.util_rules.core import LaminaBuildError, LaminaRun, LaminaRunResult, cache_suffix

logger = logging.getLogger(__name__)

_PATH_TRANSPORTS = ("docker-archive", "oci", "oci-archive")


@dataclass(frozen=True)
class ImageSourceRequest:
    value: str
    address: Address
    field_alias: str


@dataclass(frozen=True)
class ResolvedImageSource:
    digest: Digest  # the image's files, at their paths relative to the build root
    reference: str  # what the lamina CLI is given
    label: str  # how the source is recorded in the image (stable across machines)
    # For registry sources, which the extracting process itself reads over the network:
    extra_argv: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    cache_scope: ProcessCacheScope = ProcessCacheScope.SUCCESSFUL
    append_only_caches: tuple[tuple[str, str], ...] = ()
    # For sources in `digest`: the text of `reference` before the path into the digest (the
    # transport, e.g. "docker-archive:", or ""). None when the reference names no files.
    path_at: Optional[int] = None

    def reference_under(self, root: str) -> str:
        """`reference` for a process that sees `digest` under the directory `root`."""
        if self.path_at is None:
            return self.reference
        return f"{self.reference[:self.path_at]}{root}/{self.reference[self.path_at:]}"


@dataclass(frozen=True)
class DaemonImageRequest:
    value: str
    address: Address


@dataclass(frozen=True)
class RegistryImageRequest:
    value: str
    address: Address
    field_alias: str


# Where the session's credentials step writes the paths of the user's Docker config and certs.d
# (and the PATH their credential helpers are on), for cached registry processes, which name it in
# LAMINA_CREDENTIALS_FROM (lamina/registry/where.py): a file in a Pants named cache, which is no
# part of any process's key. The cache is named after what it holds, so sessions with other
# locations (another repository, another DOCKER_CONFIG) each have their own; the path a process
# sees it at is the same for all.
CREDENTIALS_DIR = ".cache/lamina_credentials"
CREDENTIALS_FILE = f"{CREDENTIALS_DIR}/where.json"
_LOCATION_VARS = {"HOME", "DOCKER_CONFIG", "XDG_CONFIG_HOME", "LAMINA_CERTS_D"}
# Writes "$1" to the file "$2" (in one rename) unless it holds that already.
_WRITE_SCRIPT = (
    'set -e; if [ "$(cat "$2" 2>/dev/null || true)" = "$1" ]; then exit 0; fi; '
    'mkdir -p "$(dirname "$2")"; printf %s "$1" > "$2.$$"; mv -f "$2.$$" "$2"'
)


@dataclass(frozen=True)
class CredentialLocationsRequest:
    env: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CredentialLocations:
    cache: tuple[str, str]  # the named cache holding CREDENTIALS_FILE: (name, CREDENTIALS_DIR)


@rule(desc="Note where the Docker config and certs.d are", level=LogLevel.DEBUG)
async def credential_locations(request: CredentialLocationsRequest) -> CredentialLocations:
    """Once a session (a shell, for every registry source): write where the user's Docker config,
    certs.d and credential helpers are, paths only, so that cached processes find them."""
    path = await Get(EnvironmentVars, EnvironmentVarsRequest(("PATH",)))
    environ = {k: v for k, v in request.env if k in _LOCATION_VARS}
    environ.update(path)
    text = json.dumps(locations(environ), sort_keys=True)
    cache = (f"lamina_credentials_{cache_suffix(text)}", CREDENTIALS_DIR)
    await Get(
        ProcessResult,
        Process(
            argv=("/bin/sh", "-c", _WRITE_SCRIPT, "sh", text, CREDENTIALS_FILE),
            description="lamina: note where the Docker config and certs.d are",
            level=LogLevel.DEBUG,
            append_only_caches=dict((cache,)),
            env={"PATH": "/usr/bin:/bin"},
            cache_scope=ProcessCacheScope.PER_SESSION,
        ),
    )
    return CredentialLocations(cache)


@dataclass(frozen=True)
class EngineImagesRequest:
    env: tuple[tuple[str, str], ...]  # DOCKER_HOST and its TLS settings


@dataclass(frozen=True)
class EngineImages:
    ids: FrozenDict[str, str]  # tag or full ID -> the image ID it means now


@rule(desc="List the Docker engine's images", level=LogLevel.DEBUG)
async def engine_images(request: EngineImagesRequest) -> EngineImages:
    """Once a session, one list of the engine's images answers every `docker-daemon:` name a build
    has that is a tag or a full ID: one process instead of one per name (each 0.1-0.2 s, two at a
    time on two cores). If the list fails, it answers nothing, and each name is looked up alone,
    whose error names its target."""
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=None,
            argv=("daemon-ids",),
            input_digest=EMPTY_DIGEST,
            output_directory="__none",
            description="lamina: list the images in the Docker engine",
            extra_env=request.env,
            cache_scope=ProcessCacheScope.PER_SESSION,
            may_fail=True,
        ),
    )
    if result.exit_code != 0:
        logger.debug(f"lamina: the list of the Docker engine's images failed (exit {result.exit_code}); each name is looked up alone")
    try:
        listed = json.loads(result.stdout) if result.exit_code == 0 else {}
    except ValueError:
        listed = {}
    ids = {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}
    return EngineImages(FrozenDict(ids))


@rule
async def image_from_daemon(request: DaemonImageRequest) -> ResolvedImageSource:
    """Ask the engine (once per session) which image ID the name means; reads are keyed on that ID."""
    value, address = request.value, request.address
    name = value[len("docker-daemon:"):]
    env_vars = await Get(EnvironmentVars, EnvironmentVarsRequest(("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")))
    env = tuple(sorted(env_vars.items()))
    image_id = (await Get(EngineImages, EngineImagesRequest(env))).ids.get(name)
    if image_id is None:  # not a tag or full ID the list holds: the engine parses the name
        resolved = await Get(
            LaminaRunResult,
            LaminaRun(
                address=address,
                argv=("daemon-id", name),
                input_digest=EMPTY_DIGEST,
                output_directory="__none",
                description=f"lamina: look up {name} in the Docker engine",
                extra_env=env,
                cache_scope=ProcessCacheScope.PER_SESSION,
            ),
        )
        image_id = resolved.stdout.decode().strip()
    # The processes that read the image (extract, scan) stream it from the engine themselves, by
    # its ID, and keep only what they make of it: no copy of the whole image enters Pants' store.
    # They are keyed on the ID, so a rebuilt image is read again and an unchanged one is not.
    return ResolvedImageSource(EMPTY_DIGEST, f"docker-daemon:{image_id}", value, extra_env=env)


@rule
async def image_from_registry(request: RegistryImageRequest, lamina: LaminaSubsystem) -> ResolvedImageSource:
    """A digest is read as it is. A tag is looked up once per session (one manifest GET, a small
    PER_SESSION process) and read pinned to the digest it names now (`HOST/REPO:TAG@sha256:...`),
    so the extraction is keyed on that digest: an unchanged tag downloads nothing in the next
    session, a moved one is extracted again. The image records the source as written."""
    value, address = request.value, request.address
    env_vars = await Get(EnvironmentVars, EnvironmentVarsRequest(tuple(lamina.registry_env_vars)))
    env = tuple(sorted(env_vars.items()))
    reference = value
    if "@sha256:" not in value:
        if lamina.require_pinned_sources:
            raise LaminaBuildError(
                f"{address}: `{request.field_alias}`={value!r} names a registry image by tag, and "
                "`[lamina].require_pinned_sources` is set (a tag can move). Pin it by digest: "
                f"{request.field_alias}=\"{value.rsplit(':', 1)[0] if _has_tag(value) else value}@sha256:<digest>\" "
                f"(`lamina resolve {value}` prints the digest it names now)"
            )
        # not cached: it gets the user's PATH, where their credential helpers are
        user_path = await Get(EnvironmentVars, EnvironmentVarsRequest(("PATH",)))
        resolved = await Get(
            LaminaRunResult,
            LaminaRun(
                address=address,
                argv=("resolve", value, *(a for a in lamina.registry_args() if a != "--require-pinned")),
                input_digest=EMPTY_DIGEST,
                output_directory="__none",
                description=f"lamina: look up {value} in its registry",
                extra_env=tuple(sorted({**dict(env), **user_path}.items())),
                cache_scope=ProcessCacheScope.PER_SESSION,
            ),
        )
        reference = resolved.stdout.decode().strip()
    # The extraction reads fixed bytes, so it is cached (locally and remotely) on the digest. Its
    # environment is part of its cache key, which Pants keeps in its caches and sends to a remote
    # one: a proxy URL reaches it without credentials, and where the user's credentials are
    # (HOME, DOCKER_CONFIG, XDG_CONFIG_HOME: another machine's are other paths) reaches it in a
    # file this session's own small step writes, outside the key.
    where = await Get(CredentialLocations, CredentialLocationsRequest(env))
    return ResolvedImageSource(EMPTY_DIGEST, reference, value, extra_argv=lamina.registry_args(),
                               extra_env=cacheable_env(env, address),
                               append_only_caches=(where.cache,))


_PROXY_VARS = {"https_proxy", "http_proxy"}


def cacheable_env(env: tuple[tuple[str, str], ...], address: Address) -> tuple[tuple[str, str], ...]:
    """`env` for a process whose results are cached: proxy URLs without their user:password, and
    instead of the variables that say where credentials are (another machine's are other paths), the
    file the session's credentials-where step writes them to."""
    out = [("LAMINA_CREDENTIALS_FROM", CREDENTIALS_FILE)]
    for name, value in env:
        if name in _LOCATION_VARS or name == "PATH":
            continue
        if name.lower() in _PROXY_VARS and "@" in value:
            scheme, sep, rest = value.rpartition("://")
            host = rest.rpartition("@")[2]
            value = f"{scheme}{sep}{host}"
            logger.warning(
                f"{address}: {name} holds proxy credentials; lamina's cached registry extractions get the proxy "
                "without them (a process's environment is stored in Pants' caches and sent to a remote cache), so "
                "they work only through a proxy that needs none for them. Lookups and `pants publish` use them."
            )
        out.append((name, value))
    return tuple(sorted(out))


def _has_tag(value: str) -> bool:
    """Whether `docker://HOST[:PORT]/REPO[:TAG]` ends in a tag (a colon after the last slash)."""
    return value.rfind(":") > value.rfind("/")


def split_path_value(value: str, spec_path: str) -> tuple[str, str, str]:
    """(transport prefix, repo-relative path, ref) of an `image`/`base` value naming files."""
    transport, sep, rest = value.partition(":")
    if sep and transport in _PATH_TRANSPORTS:
        path, _, ref = rest.partition(":")
        prefix = f"{transport}:"
    else:
        path, ref, prefix = value, "", ""
    return prefix, os.path.normpath(os.path.join(spec_path, path)), ref


def names_files(value: str) -> bool:
    """Whether an `image`/`base` value names files in the repository (not an engine or registry
    image, a target, or scratch)."""
    return not (value == "scratch" or value.startswith(("docker-daemon:", "docker://")) or is_address(value))


def is_address(value: str) -> bool:
    return value.startswith(":") or value.startswith("//")


@rule
async def resolve_image_source(request: ImageSourceRequest) -> ResolvedImageSource:
    value, address = request.value, request.address
    origin = f"the `{request.field_alias}` field of {address}"
    if value.startswith("docker-daemon:"):
        return await Get(ResolvedImageSource, DaemonImageRequest(value, address))
    if value.startswith("docker://"):
        return await Get(ResolvedImageSource, RegistryImageRequest(value, address, request.field_alias))
    if is_address(value):
        targets = await Get(
            Targets, UnparsedAddressInputs([value], owning_address=address, description_of_origin=origin)
        )
        target = targets[0]
        if target.has_field(ComposedImageOutputFormatField) and target[ComposedImageOutputFormatField].value in (
            "docker-daemon", "registry"):
            fmt = target[ComposedImageOutputFormatField].value
            where = ("loads it into the engine" if fmt == "docker-daemon" else "leaves it for `pants publish`")
            raise LaminaBuildError(
                f"{address}: {request.field_alias}={value!r} names {target.address}, whose "
                f"output_format=\"{fmt}\" {where} and writes no image file; give it a file output_format "
                "(\"oci\" is the cheapest)"
                + (", or name it as `docker-daemon:REPOSITORY:TAG` after packaging it" if fmt == "docker-daemon" else "")
            )
        field_sets = await Get(FieldSetsPerTarget, FieldSetsPerTargetRequest(PackageFieldSet, targets))
        if not field_sets.collection or not field_sets.collection[0]:
            raise LaminaBuildError(
                f"{address}: {request.field_alias}={value!r} names {targets[0].address}, which does not "
                "package an image; name a composed_image target or an image archive"
            )
        package = await Get(BuiltPackage, EnvironmentAwarePackageRequest(field_sets.collection[0][0]))
        # A target that builds an image into the engine (Pants' own `docker_image`) says which, by
        # ID: read as `docker-daemon:ID`, the export keyed on that ID. (Duck-typed: the docker
        # backend need not be enabled for lamina to load.)
        engine_id = next((str(a.image_id) for a in package.artifacts if getattr(a, "image_id", "")), "")
        if engine_id:
            daemon = await Get(ResolvedImageSource, DaemonImageRequest(f"docker-daemon:{engine_id}", address))
            return dataclasses.replace(daemon, label=target.address.spec)
        relpath = next((a.relpath for a in package.artifacts if a.relpath), None)
        if relpath is None:
            raise LaminaBuildError(f"{address}: {targets[0].address} produced no image")
        return ResolvedImageSource(package.digest, relpath, targets[0].address.spec, path_at=0)

    prefix, full, ref = split_path_value(value, address.spec_path)
    if full.startswith(".."):
        raise LaminaBuildError(f"{address}: {request.field_alias}={value!r} points outside the repository")
    digest = await Get(
        Digest,
        PathGlobs(
            [full, f"{full}/**"],
            glob_match_error_behavior=GlobMatchErrorBehavior.error,
            conjunction=GlobExpansionConjunction.any_match,
            description_of_origin=origin,
        ),
    )
    reference = f"{prefix}{full}" + (f":{ref}" if ref else "")
    return ResolvedImageSource(digest, reference, reference, path_at=len(prefix))


def rules() -> Iterable:
    return collect_rules()
