"""Extraction: a source image + selector -> a bundle (sparse OCI layout) by one cached lamina process."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

from pants.engine.addresses import Address
from pants.engine.fs import EMPTY_DIGEST, AddPrefix, CreateDigest, Digest, FileContent, MergeDigests, RemovePrefix
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import WrappedTarget, WrappedTargetRequest

from lamina_pants.subsystem import LaminaSubsystem
from lamina_pants.target_types import DockerLayerImageField, DockerLayerSelectorField
from lamina_pants.util_rules.core import LaminaBuildError, LaminaRun, LaminaRunResult, read_only_dir
from lamina_pants.util_rules.image_source import ImageSourceRequest, ResolvedImageSource

BUNDLE_DIR = "__bundle"


@dataclass(frozen=True)
class BundleRequest:
    """Take the layers `selector` picks out of `source`; `address` is the target it is for."""

    source: ResolvedImageSource
    selector: str
    address: Address
    what: str
    platform: Optional[str] = None  # picks the image of a multi-platform index
    # For a registry source: keep no layer bytes (`lamina extract --shallow`); a push mounts them
    # and anything else that needs them reads them from the registry.
    shallow: bool = False


@dataclass(frozen=True)
class Download:
    """What the extraction of a registry source received: `size` bytes of manifests and blobs,
    in the run `ran_in` (None: the extraction was a cache hit, and downloaded nothing then)."""

    what: str  # e.g. "layer of images:top from docker://host/repo:tag"
    size: int
    ran_in: Optional[int]


@dataclass(frozen=True)
class Bundle:
    digest: Digest  # a sparse OCI layout at the digest's root
    # Whether it holds INDEX_FILE, the scan index of its layers, made in the pass that copied them.
    indexed: bool = False
    from_registry: bool = False  # its source is a `docker://` image
    shallow: bool = False  # it holds no layer bytes (a registry source's, left there)
    download: Optional[Download] = None  # for a registry source
    # Whether its layers hold a package database (dpkg status, apk installed, os-release, rpm, or a
    # whiteout of one), as its indexing extraction said; None when it was not indexed.
    package_databases: Optional[bool] = None


def _summary(result: LaminaRunResult) -> dict:
    """What `lamina extract` printed about its bundle (a JSON object)."""
    try:
        found = json.loads(result.stdout.decode() or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _download(result: LaminaRunResult, what: str) -> Optional[Download]:
    """The `downloaded` figure `lamina extract` prints for a registry source, None for other sources."""
    size = _summary(result).get("downloaded")
    return Download(what, size, result.ran_in) if isinstance(size, int) else None


INDEX_FILE = "lamina-index.json"  # lamina.extract.INDEX_FILE


@rule
async def extract_bundle(request: BundleRequest, lamina: LaminaSubsystem) -> Bundle:
    # Only the source's files and the selector go in, so the process is cached on their content.
    # The source (often a large archive) is linked into the sandbox read-only, not copied, and
    # shared by the extractions of several layers of one image. When compositions are checked,
    # the same pass indexes the layers for the check, so no process reads them again to scan.
    source = request.source
    from_registry = source.reference.startswith("docker://")
    shallow = request.shallow and from_registry
    index = lamina.check_compositions and not shallow
    source_dir = read_only_dir("source", source.digest)
    for_platform = f" for {request.platform}" if request.platform else ""
    what = f"{request.what} of {request.address}{for_platform} from {request.source.label}"
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=request.address,
            argv=(
                "extract",
                source.reference_under(source_dir),
                f"--layer={request.selector}",
                f"--out={BUNDLE_DIR}",
                f"--name={request.source.label}",
                *request.source.extra_argv,
                *((f"--platform={request.platform}",) if request.platform else ()),
                *(("--index",) if index else ()),
                *(("--shallow",) if shallow else ()),
            ),
            input_digest=EMPTY_DIGEST,
            read_only_inputs=((source_dir, source.digest),) if source.path_at is not None else (),
            output_directory=BUNDLE_DIR,
            description=f"lamina: extract {what}",
            context=f" (as {request.what} of a {request.platform} image)" if request.platform else "",
            extra_env=request.source.extra_env,
            append_only_caches=request.source.append_only_caches,
            cache_scope=request.source.cache_scope,
        ),
    )
    databases = _summary(result).get("package_databases") if index else None
    return Bundle(await Get(Digest, RemovePrefix(result.output_digest, BUNDLE_DIR)), indexed=index,
                  from_registry=from_registry, shallow=shallow, download=_download(result, what),
                  package_databases=databases if isinstance(databases, bool) else None)


@dataclass(frozen=True)
class DockerLayerRequest:
    address: Address
    wanted_by: Address
    platform: Optional[str] = None  # the composed image's, when it names one
    shallow: bool = False  # see BundleRequest.shallow


@rule
async def extract_docker_layer(request: DockerLayerRequest) -> Bundle:
    wrapped = await Get(
        WrappedTarget,
        WrappedTargetRequest(request.address, description_of_origin=f"the `layers` field of {request.wanted_by}"),
    )
    target = wrapped.target
    if not target.has_field(DockerLayerSelectorField):
        raise LaminaBuildError(
            f"{request.wanted_by}: `layers` names {request.address}, which is a `{target.alias}`, "
            "not a `docker_layer`"
        )
    source = await Get(
        ResolvedImageSource,
        ImageSourceRequest(target[DockerLayerImageField].for_platform(request.platform, target.address), target.address, "image"),
    )
    return await Get(
        Bundle,
        BundleRequest(source, target[DockerLayerSelectorField].value, target.address, "layer", request.platform,
                      request.shallow),
    )


FILES_LAYER_DIR = "__files_layer"
BELOW_DIR = "__below"


@dataclass(frozen=True)
class FilesLayerRequest:
    """The layer a composed image makes of its own files: `input_digest` holds the files and
    `files_spec`, which says where each goes; `below` the scan indexes (digest, and the index
    file's name at its root) of the layers it goes on, base first, so that it is laid on them as a
    Dockerfile's COPY writes (through their symlinks, into their directories)."""

    address: Address
    input_digest: Digest
    files_spec: str
    below: Tuple[Tuple[Digest, str], ...] = ()


@dataclass(frozen=True)
class FilesLayer:
    """files-layer.tar.gz, its description files-layer.json (for compose) and its scan index.json
    (for check) at the digest's root."""

    digest: Digest


@rule
async def make_files_layer(request: FilesLayerRequest) -> FilesLayer:
    # Made once, keyed on the files, their destinations and the scans of the layers below (what
    # they hold, never their bytes): compose takes it as it is and the check reads its index.
    below = await MultiGet(
        Get(Digest, AddPrefix(index, f"{BELOW_DIR}/{i}")) for i, (index, _) in enumerate(request.below)
    )
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=request.address,
            argv=("files-layer", request.files_spec, f"--out={FILES_LAYER_DIR}", f"--name=files of {request.address}",
                  *(f"--below={BELOW_DIR}/{i}/{name}" for i, (_, name) in enumerate(request.below))),
            input_digest=await Get(Digest, MergeDigests([request.input_digest, *below])),
            output_directory=FILES_LAYER_DIR,
            description=f"lamina: files layer of {request.address}",
        ),
    )
    return FilesLayer(await Get(Digest, RemovePrefix(result.output_digest, FILES_LAYER_DIR)))


PACKAGE_DB_DIR = "__package_db"
PACKAGE_DB_INDEXES = "__package_db_indexes"
PACKAGE_DB_SPEC = "__package_db_spec.json"


@dataclass(frozen=True)
class PackageDbLayerRequest:
    """The package database merge of a composed image's stack: `spec_json` is a compose spec of
    its base and layers (the bundles in `read_only`, at the directories it names), `indexes` their
    scan indexes (digest, and the index file's name at its root), so that only the layers that
    hold a database are read."""

    address: Address
    spec_json: str
    read_only: Tuple[Tuple[str, Digest], ...]
    indexes: Tuple[Tuple[Digest, str], ...] = ()
    merge: bool = True  # False: only what each layer's databases list (packages.json, for the SBOM)


@dataclass(frozen=True)
class PackageDbLayer:
    """package-db-layer.json (the merge report, and the layer's description or null when no merge
    was needed), the layer's blob, its index.json and packages.json (what each layer's databases
    list, for the SBOM) at the digest's root."""

    digest: Digest
    has_layer: bool
    lines: Tuple[str, ...] = ()  # what the merge did, for the package's summary
    merged: bool = True  # it is the merge (not only packages.json)


@rule
async def make_package_db_layer(request: PackageDbLayerRequest) -> PackageDbLayer:
    # Keyed on the bundles and their scans: made once per stack, read by compose and the check.
    indexes = await MultiGet(
        Get(Digest, AddPrefix(index, f"{PACKAGE_DB_INDEXES}/{i}")) for i, (index, _) in enumerate(request.indexes)
    )
    spec = await Get(Digest, CreateDigest([FileContent(PACKAGE_DB_SPEC, request.spec_json.encode())]))
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=request.address,
            argv=("package-db-layer", PACKAGE_DB_SPEC, f"--out={PACKAGE_DB_DIR}",
                  f"--name=package databases of {request.address}",
                  *(f"--index={PACKAGE_DB_INDEXES}/{i}/{name}" for i, (_, name) in enumerate(request.indexes)),
                  *(() if request.merge else ("--no-merge",))),
            input_digest=await Get(Digest, MergeDigests([spec, *indexes])),
            read_only_inputs=request.read_only,
            output_directory=PACKAGE_DB_DIR,
            description=(f"lamina: merge the package databases of {request.address}" if request.merge
                         else f"lamina: list the packages of {request.address}"),
        ),
    )
    summary = json.loads(result.stdout.decode() or "{}")
    return PackageDbLayer(
        await Get(Digest, RemovePrefix(result.output_digest, PACKAGE_DB_DIR)),
        bool(summary.get("layer")),
        tuple(str(line) for line in summary.get("lines") or ()),
        request.merge,
    )


def rules() -> Iterable:
    return collect_rules()
