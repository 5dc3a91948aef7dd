"""`pants package` for `composed_image`: extract (cached per layer), then compose in one lamina process."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Tuple

from pants.core.goals.package import BuiltPackage, BuiltPackageArtifact, EnvironmentAwarePackageRequest, PackageFieldSet
from pants.core.target_types import FileSourceField, ResourceSourceField
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.engine.addresses import Address, Addresses, UnparsedAddressInputs
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import (
    AddPrefix,
    CreateDigest,
    Digest,
    DigestContents,
    DigestSubset,
    FileContent,
    MergeDigests,
    PathGlobs,
    RemovePrefix,
    Snapshot,
)
from pants.engine.internals.session import RunId
from pants.engine.process import ProcessCacheScope
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import FieldSetsPerTarget, FieldSetsPerTargetRequest, SourcesField, Targets
from pants.engine.unions import UnionRule

from lamina.model import Platform

from lamina_pants.subsystem import LaminaSubsystem
from lamina_pants.target_types import (
    FILE_FORMATS,
    FORMAT_ENDINGS,
    ComposedImageAllowedConflictsField,
    ComposedImageAllowPlatformMismatchField,
    ComposedImageCheckDependenciesField,
    ComposedImageOnConflictField,
    ComposedImageOnStartFailureField,
    ComposedImageBaseField,
    ComposedImageCmdField,
    ComposedImageEntrypointField,
    ComposedImageEnvField,
    ComposedImageExposedPortsField,
    ComposedImageFilesDestField,
    ComposedImageFilesField,
    ComposedImageLabelsField,
    ComposedImageLayersField,
    ComposedImageMergePackageDatabasesField,
    ComposedImageOutputFormatField,
    ComposedImageOutputPathField,
    ComposedImagePackagesField,
    ComposedImagePlatformField,
    ComposedImagePlatformsField,
    ComposedImageRepositoryField,
    ComposedImageSbomField,
    ComposedImageScanRegistryLayersField,
    ComposedImageStopSignalField,
    ComposedImageTagsField,
    ComposedImageUserField,
    ComposedImageVolumesField,
    ComposedImageWorkdirField,
)
from lamina_pants.util_rules.analysis import CheckReport, CheckRequest, LayerIndex, ScanRequest, StartCheck, finding_lines
from lamina_pants.util_rules.core import LaminaBuildError, LaminaRun, LaminaRunResult, read_only_dir
from lamina_pants.util_rules.image_source import ImageSourceRequest, ResolvedImageSource
from lamina_pants.util_rules.layers import (
    Bundle,
    BundleRequest,
    DockerLayerRequest,
    FilesLayer,
    FilesLayerRequest,
    PackageDbLayer,
    PackageDbLayerRequest,
)

logger = logging.getLogger(__name__)

OUT_DIR = "__out"
# What a process that talks to the local Docker engine gets of the environment.
DOCKER_ENV_VARS = ("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")


@dataclass(frozen=True)
class ComposedImageFieldSet(PackageFieldSet):
    required_fields = (ComposedImageBaseField,)

    base: ComposedImageBaseField
    layers: ComposedImageLayersField
    files: ComposedImageFilesField
    packages: ComposedImagePackagesField
    files_dest: ComposedImageFilesDestField
    env: ComposedImageEnvField
    entrypoint: ComposedImageEntrypointField
    cmd: ComposedImageCmdField
    workdir: ComposedImageWorkdirField
    user: ComposedImageUserField
    labels: ComposedImageLabelsField
    exposed_ports: ComposedImageExposedPortsField
    volumes: ComposedImageVolumesField
    stop_signal: ComposedImageStopSignalField
    platform: ComposedImagePlatformField
    platforms: ComposedImagePlatformsField
    allow_platform_mismatch: ComposedImageAllowPlatformMismatchField
    on_conflict: ComposedImageOnConflictField
    allowed_conflicts: ComposedImageAllowedConflictsField
    check_dependencies: ComposedImageCheckDependenciesField
    on_start_failure: ComposedImageOnStartFailureField
    merge_package_databases: ComposedImageMergePackageDatabasesField
    repository: ComposedImageRepositoryField
    image_tags: ComposedImageTagsField
    output_format: ComposedImageOutputFormatField
    output_path: ComposedImageOutputPathField
    scan_registry_layers: ComposedImageScanRegistryLayersField
    sbom: ComposedImageSbomField

    def image_refs(self) -> list[str]:
        repository = self.repository.value or self.address.target_name
        return [f"{repository}:{tag}" for tag in (self.image_tags.value or ())]

    def format(self) -> str:
        """output_format, or its default: "oci" for a multi-platform image, else "docker-archive"."""
        return self.output_format.value or ("oci" if self.platforms.value else "docker-archive")

    def output_relpath(self) -> str:
        return self.output_path.value_or_default(file_ending=FORMAT_ENDINGS[self.format()])

    def sbom_relpath_of(self, platform: str) -> str:
        """`<name>.linux-arm64.cdx.json`: one platform's SBOM, of a multi-platform image."""
        return f"{self._stem()}.{Platform.parse(platform).slug()}.cdx.json"  # as `compose --sbom` names it

    def _stem(self) -> str:
        relpath = self.output_relpath()
        ending = "." + FORMAT_ENDINGS[self.format()]
        return relpath[: -len(ending)] if relpath.endswith(ending) else relpath

    def audit_relpath(self) -> str:
        """`<name>.layers.json` beside the image: where each of its layers came from."""
        return f"{self._stem()}.layers.json"

    def sbom_relpath(self) -> str:
        """`<name>.cdx.json` beside the image: its SBOM (CycloneDX JSON)."""
        return f"{self._stem()}.cdx.json"

    def config(self) -> dict:
        config: dict = {}
        for key, field in (
            ("env", self.env), ("labels", self.labels),
        ):
            if field.value:
                config[key] = dict(field.value)
        for key, field in (("entrypoint", self.entrypoint), ("cmd", self.cmd)):
            if field.value is not None:
                config[key] = list(field.value)
        for key, field in (("exposed_ports", self.exposed_ports), ("volumes", self.volumes)):
            if field.value:
                config[key] = list(field.value)
        for key, field in (("workdir", self.workdir), ("user", self.user), ("stop_signal", self.stop_signal)):
            if field.value is not None:
                config[key] = field.value
        return config


def platform_variants(fs: ComposedImageFieldSet, chosen: Optional[str], why: str = "--lamina-platform") -> Tuple[ComposedImageFieldSet, ...]:
    """The single-platform field sets a `composed_image` is built from: one per platform of its
    `platforms` (only `chosen`, when given), each with that `platform`; else `fs` itself."""
    platforms = fs.platforms.value
    if not platforms:
        return (fs,)
    if chosen:
        try:
            wanted = Platform.parse(chosen)
        except ValueError as e:
            raise LaminaBuildError(f"{fs.address}: {why} {chosen!r}: {e}") from None
        picked = [p for p in platforms if wanted.matches(Platform.parse(p)) and Platform.parse(p).matches(wanted)]
        if not picked:
            raise LaminaBuildError(
                f"{fs.address}: {why} {chosen} is not one of its `platforms` ({', '.join(platforms)}); "
                f"pick one of those, e.g. --lamina-platform={platforms[0]}"
            )
        platforms = tuple(picked[:1])
    # each keeps the image's output format (its default is "oci" for `platforms`)
    return tuple(
        replace(fs, platform=ComposedImagePlatformField(p, fs.address), platforms=ComposedImagePlatformsField(None, fs.address),
                output_format=ComposedImageOutputFormatField(fs.format(), fs.address))
        for p in platforms
    )


def _file_destinations(fs: ComposedImageFieldSet, files: Iterable[str]) -> list[dict]:
    out = []
    base = fs.address.spec_path
    for path in sorted(files):
        rel = os.path.relpath(path, base) if base else path
        if rel.startswith(".."):
            raise LaminaBuildError(
                f"{fs.address}: file {path} from `files` is outside {base or 'the root'}/, the directory of "
                "the BUILD file; files land at their path relative to it. Move the file, or wrap it in a "
                "`relocated_files` target"
            )
        out.append({"src": path, "dest": os.path.join(fs.files_dest.value or "/", rel)})
    return out


@dataclass(frozen=True)
class ComposedStack:
    """What a composed image is made of, resolved: its base (None for scratch), the bundles of its
    `layers` (with their targets), the layer of its own `files` (None without files) and the
    package database merge of the stack (None when merging is off or there is nothing to merge)."""

    layer_addresses: Tuple[Address, ...]
    layers: Tuple[Bundle, ...]
    base: Optional[Bundle]
    files_layer: Optional[FilesLayer]
    package_db: Optional[PackageDbLayer] = None
    # Every bundle's extraction said its layers hold no package database: no merge process, and
    # compose is told so (spec `package_databases` false: an SBOM lists no packages, no layer read).
    no_package_databases: bool = False

    def lists_packages(self) -> bool:
        """Whether compose knows the stack's packages without reading its layers (for the SBOM)."""
        return self.package_db is not None or self.no_package_databases

    def scan_requests(self, address: Address) -> Tuple[ScanRequest, ...]:
        """One cached scan per bundle of the stack below the files layer, base first: read by the
        check, and by the files layer to lay itself on them."""
        names = ([f"base image of {address}"] if self.base is not None else []) + [
            f"layer {a}" for a in self.layer_addresses
        ]
        stack = ([self.base] if self.base is not None else []) + list(self.layers)
        return tuple(ScanRequest(b, address, name) for b, name in zip(stack, names))

    def check_request(self, fs: ComposedImageFieldSet) -> CheckRequest:
        """The composition check of this stack under the target's policy: one cached scan per
        layer, and the files layer's own index on top. With `scan_registry_layers=False` the
        layers of registry sources are left out (and, for a registry base, the start check)."""
        policy = fs.on_start_failure.value or "warn"
        start = None
        skip_registry = not fs.scan_registry_layers.value
        scans = self.scan_requests(fs.address)
        if skip_registry:
            stack = ([self.base] if self.base is not None else []) + list(self.layers)
            scans = tuple(scan for scan, b in zip(scans, stack) if not b.from_registry)
        base_unscanned = self.base is not None and self.base.from_registry and skip_registry
        if policy != "ignore" and not base_unscanned:  # the config compose writes: the base's, with this target's overrides
            config = json.dumps(fs.config(), sort_keys=True)
            start = StartCheck(policy, config, fs.platform.value, self.base)
        return CheckRequest(
            fs.address,
            scans,
            fs.on_conflict.value or "warn",
            tuple(fs.allowed_conflicts.value or ()),
            fs.check_dependencies.value,
            files=self.files_layer,
            start=start,
            package_db=self.package_db if self.package_db is not None and self.package_db.merged else None,
        )


async def _built_packages(fs: ComposedImageFieldSet, targets: Targets) -> Tuple[BuiltPackage, ...]:
    """What `pants package` builds of each target in `packages`; an error names one it cannot."""
    if not targets:
        return ()
    field_sets = await Get(FieldSetsPerTarget, FieldSetsPerTargetRequest(PackageFieldSet, targets))
    for target, found in zip(targets, field_sets.collection):
        if not found:
            raise LaminaBuildError(
                f"{fs.address}: `packages` names {target.address}, a `{target.alias}`, which `pants package` "
                "cannot build; name a target it can (pex_binary, archive, python_distribution, composed_image, ...), "
                "or put plain files in `files`"
            )
    return tuple(await MultiGet(
        Get(BuiltPackage, EnvironmentAwarePackageRequest(found[0])) for found in field_sets.collection
    ))


def stack_spec(fs: ComposedImageFieldSet, stack: ComposedStack) -> Tuple[dict, list]:
    """The compose spec of the stack's base and layers (no files, no config), and the bundles it
    names as (directory, digest), linked read-only into the process."""
    bundles = [(read_only_dir(f"layer{i}", b.digest), b.digest) for i, b in enumerate(stack.layers)]
    spec: dict = {"layers": [{"source": d, "target": str(a), "verified": True}
                             for (d, _), a in zip(bundles, stack.layer_addresses)]}
    if fs.platform.value:
        spec["platform"] = fs.platform.value
    if stack.base is None:
        spec["base"] = "scratch"
    else:
        base_dir = read_only_dir("base", stack.base.digest)
        bundles.append((base_dir, stack.base.digest))
        spec["base"] = {"source": base_dir, "verified": True}
    return spec, bundles


async def _package_db_layer(fs: ComposedImageFieldSet, stack: ComposedStack, indexed: bool,
                            merge: bool = True) -> PackageDbLayer:
    """The package database merge of the stack (with `merge` False only what each layer's
    databases list, for the SBOM), made once in its own process; with the scans the check reads
    too (`indexed`), only the layers that hold a database are read."""
    spec, bundles = stack_spec(fs, stack)
    indexes: Tuple = ()
    if indexed:
        found = await MultiGet(Get(LayerIndex, ScanRequest, scan) for scan in stack.scan_requests(fs.address))
        indexes = tuple((index.digest, index.name) for index in found)
    return await Get(
        PackageDbLayer,
        PackageDbLayerRequest(fs.address, json.dumps(spec, sort_keys=True), tuple(bundles), indexes, merge),
    )


@rule(desc="Resolve a composed image's base, layers and files")
async def composed_stack(fs: ComposedImageFieldSet, lamina: LaminaSubsystem) -> ComposedStack:
    layer_addresses, file_targets, package_targets = await MultiGet(
        Get(Addresses, UnparsedAddressInputs, fs.layers.to_unparsed_address_inputs()),
        Get(Targets, UnparsedAddressInputs, fs.files.to_unparsed_address_inputs()),
        Get(Targets, UnparsedAddressInputs, fs.packages.to_unparsed_address_inputs()),
    )
    packages = await _built_packages(fs, package_targets)
    # Registry layers stay in the registry when nothing here needs their bytes: no image file, no
    # engine load, no check scan, no files layer to lay on them.
    shallow = (
        fs.output_format.value == "registry"
        and not file_targets
        and not package_targets
        and not (fs.scan_registry_layers.value and lamina.check_compositions)
    )
    base_request: Optional[BundleRequest] = None
    base_value = fs.base.for_platform(fs.platform.value, fs.address)
    if base_value != "scratch":
        source = await Get(ResolvedImageSource, ImageSourceRequest(base_value, fs.address, "base"))
        base_request = BundleRequest(source, ":", fs.address, "base image", fs.platform.value, shallow)
    # The base and the layers are extracted side by side.
    bundles = await MultiGet(
        [
            *(Get(Bundle, DockerLayerRequest(a, fs.address, fs.platform.value, shallow)) for a in layer_addresses),
            *((Get(Bundle, BundleRequest, base_request),) if base_request is not None else ()),
        ]
    )
    layer_bundles = bundles[: len(layer_addresses)]
    base: Optional[Bundle] = bundles[-1] if base_request is not None else None
    files = await Get(
        SourceFiles,
        SourceFilesRequest(
            [t.get(SourcesField) for t in file_targets],
            for_sources_types=(FileSourceField, ResourceSourceField),
            enable_codegen=True,
        ),
    )
    # The image's own files become one layer, made once in its own process: compose takes it as it
    # is and the check reads its index. It is laid on the layers below as COPY writes, so it reads
    # their scans (the ones the check reads too).
    if file_targets:
        each = await MultiGet(
            Get(SourceFiles, SourceFilesRequest([t.get(SourcesField)], for_sources_types=(FileSourceField, ResourceSourceField),
                                                enable_codegen=True))
            for t in file_targets
        )
        for target, found in zip(file_targets, each):
            if not found.snapshot.files:
                raise LaminaBuildError(
                    f"{fs.address}: `files` names {target.address}, a `{target.alias}`, which provides no files; "
                    "name `files`/`resources`/`relocated_files` targets there, and targets to build (pex_binary, "
                    "archive, ...) in `packages`"
                )
    destinations = _file_destinations(fs, files.snapshot.files)
    package_files = await MultiGet(Get(Snapshot, Digest, p.digest) for p in packages)
    for snapshot in package_files:
        destinations.extend(
            {"src": path, "dest": os.path.join(fs.files_dest.value or "/", path)} for path in snapshot.files
        )
    files_digest = await Get(Digest, MergeDigests([files.snapshot.digest, *(p.digest for p in packages)]))
    files_layer: Optional[FilesLayer] = None
    if destinations:
        below = ComposedStack(tuple(layer_addresses), tuple(layer_bundles), base, None).scan_requests(fs.address)
        indexes = await MultiGet(Get(LayerIndex, ScanRequest, scan) for scan in below)
        files_spec = await Get(
            Digest, CreateDigest([FileContent("__files.json", json.dumps({"files": destinations}, sort_keys=True).encode())])
        )
        files_layer = await Get(
            FilesLayer,
            FilesLayerRequest(
                fs.address,
                await Get(Digest, MergeDigests([files_digest, files_spec])),
                "__files.json",
                tuple((index.digest, index.name) for index in indexes),
            ),
        )
    package_db: Optional[PackageDbLayer] = None
    stack = ([base] if base is not None else []) + list(layer_bundles)
    # The same process lists each layer's packages for the SBOM (packages.json): compose writes
    # the SBOM from that, reading no layer for it. Without the merge it only lists them.
    merge = bool(fs.merge_package_databases.value) and len(stack) > 1
    # A stack none of whose layers holds a database (their extractions said so) has nothing to
    # merge or list: no process for it on the way to the compose and the check.
    none = bool(stack) and all(b.package_databases is False for b in stack)
    if (merge or fs.sbom.value) and stack and not shallow and not none:
        package_db = await _package_db_layer(fs, ComposedStack(tuple(layer_addresses), tuple(layer_bundles), base, None),
                                             lamina.check_compositions, merge)
    return ComposedStack(tuple(layer_addresses), tuple(layer_bundles), base, files_layer, package_db, none)


@dataclass(frozen=True)
class ComposeInputs:
    """What a lamina process needs to make the image: `__spec.json` (in `spec`) and the bundles
    and files layer it names, which reach the process read-only (linked, never copied, into its
    sandbox). `lamina compose`, `push` and `load` all take these, so `pants publish` and `pants run`
    read the layers from where Pants already keeps them, not from the packaged archive."""

    spec: Digest
    read_only: Tuple[Tuple[str, Digest], ...]
    stack: ComposedStack  # a multi-platform image's: its first platform's
    spec_json: str = ""  # the text of SPEC_FILE, for a goal that adds to it
    # A multi-platform image's platforms: (field set of that platform, its inputs); SPEC_FILE is
    # then an index spec (lamina.index) holding each platform's compose spec.
    platforms: Tuple[Tuple[ComposedImageFieldSet, "ComposeInputs"], ...] = ()

    def bundles(self) -> Tuple[Bundle, ...]:
        """The stack's bundles, base first (every platform's, for a multi-platform image)."""
        if self.platforms:
            return tuple(b for _, inputs in self.platforms for b in inputs.bundles())
        return ((self.stack.base,) if self.stack.base is not None else ()) + self.stack.layers

    def each_platform(self) -> Tuple[Tuple[Optional[str], ComposedImageFieldSet, "ComposeInputs"], ...]:
        """(platform, its field set, its inputs) of each platform; one (None, ...) for an image of one."""
        return tuple((v.platform.value, v, i) for v, i in self.platforms)


@dataclass(frozen=True)
class OnePlatform:
    """The compose inputs of one platform's image (a field set with no `platforms`)."""

    fs: ComposedImageFieldSet


# What `lamina compose --placed-blobs` writes beside an oci layout: the layer blobs it left out.
PLACED_FILE = "lamina-placed-blobs.json"
SPEC_FILE = "__spec.json"


@rule(desc="Write a composed image's compose spec")
async def one_platform_inputs(request: OnePlatform) -> ComposeInputs:
    fs = request.fs
    composed = await Get(ComposedStack, ComposedImageFieldSet, fs)
    # The bundles (layer bytes) reach the process read-only: linked, not copied, into its sandbox.
    # They are this build's own `lamina extract` outputs, which verified every blob they hold: the
    # spec vouches for them ("verified"), so compose does not hash them again.
    bundles = [(read_only_dir(f"layer{i}", b.digest), b.digest) for i, b in enumerate(composed.layers)]
    fmt = fs.format()
    spec: dict = {
        "layers": [{"source": d, "target": str(a), "verified": True}
                   for (d, _), a in zip(bundles, composed.layer_addresses)],
        "config": fs.config(),
        "tags": fs.image_refs(),
        "format": fmt if fmt in FILE_FORMATS else "oci",  # docker-daemon, registry: never written
        "allow_platform_mismatch": fs.allow_platform_mismatch.value,
        "target": str(fs.address),  # named in the audit trail for the base and files layers
    }
    if fs.platform.value:
        spec["platform"] = fs.platform.value
    if composed.files_layer is not None:
        files_dir = read_only_dir("files", composed.files_layer.digest)
        bundles.append((files_dir, composed.files_layer.digest))
        spec["files_layer"] = files_dir
    if composed.base is None:
        spec["base"] = "scratch"
    else:
        base_dir = read_only_dir("base", composed.base.digest)
        bundles.append((base_dir, composed.base.digest))
        spec["base"] = {"source": base_dir, "verified": True}
    if composed.package_db is not None:
        # merged once, in its own cached process: compose takes the layer (if any) as it is
        package_db_dir = read_only_dir("package_db", composed.package_db.digest)
        bundles.append((package_db_dir, composed.package_db.digest))
        spec["package_db_layer"] = package_db_dir
    else:
        spec["merge_package_databases"] = False  # off, or nothing to merge: compose reads no layer for it
        if composed.no_package_databases:
            spec["package_databases"] = False  # nor for the SBOM's packages
    text = json.dumps(spec, sort_keys=True)
    digest = await Get(Digest, CreateDigest([FileContent(SPEC_FILE, text.encode())]))
    return ComposeInputs(digest, tuple(bundles), composed, text)


@rule(desc="Write a composed image's compose spec")
async def compose_inputs(fs: ComposedImageFieldSet, lamina: LaminaSubsystem) -> ComposeInputs:
    variants = platform_variants(fs, lamina.platform)
    each = await MultiGet(Get(ComposeInputs, OnePlatform(v)) for v in variants)
    if not fs.platforms.value or lamina.platform:  # one platform, or the one --lamina-platform picked
        return each[0]
    if fs.packages.value:
        logger.warning(f"{fs.address}: `packages` are built once, for this machine, and the same files go into "
                       f"every platform's image ({', '.join(fs.platforms.value)}); a package with native code "
                       "runs on one of them only")
    # A multi-platform image: each platform's spec (its own extractions, checks, package
    # database merge), composed in one process under one index.
    spec = {"platforms": [json.loads(i.spec_json) for i in each], "format": "oci-archive" if fs.format() == "oci-archive" else "oci",
            "tags": fs.image_refs(), "target": str(fs.address)}
    text = json.dumps(spec, sort_keys=True)
    digest = await Get(Digest, CreateDigest([FileContent(SPEC_FILE, text.encode())]))
    read_only = tuple(dict(ro for i in each for ro in i.read_only).items())
    return ComposeInputs(digest, read_only, each[0].stack, text, tuple(zip(variants, each)))


def download_line(stack: ComposedStack, run_id: RunId) -> Optional[str]:
    """What this run downloaded for the image's registry sources, by extraction; an extraction
    taken from a cache (or from pantsd's memory) downloaded nothing now, and is counted as cached."""
    downloads = [b.download for b in (stack.base, *stack.layers) if b is not None and b.download is not None]
    if not downloads:
        return None
    ran = [d for d in downloads if d.ran_in == run_id]
    cached = len(downloads) - len(ran)
    cached_text = f"{cached} extraction{'s' if cached != 1 else ''} cached"
    if not ran:
        return f"registry sources: nothing downloaded this run ({cached_text})"
    total = sum(d.size for d in ran)
    each = ", ".join(f"{d.size} for the {d.what}" for d in ran)
    return (f"registry sources: downloaded {total} bytes ({total / (1 << 20):.1f} MiB) this run: {each}"
            + (f"; {cached_text}" if cached else ""))


async def _place_blobs(fs: ComposedImageFieldSet, digest: Digest, layout: str,
                       read_only: Tuple[Tuple[str, Digest], ...]) -> Digest:
    """The compose's output with the layer blobs it left out of the layout at `layout` (see
    `lamina compose --placed-blobs`) merged in from the read-only bundles that hold them."""
    (listed,) = await Get(DigestContents, DigestSubset(digest, PathGlobs([PLACED_FILE])))
    mounts = dict(read_only)
    wanted: dict = {}
    for blob in json.loads(listed.content)["blobs"]:
        mount, _, inner = blob["path"].partition("/")
        if mount not in mounts or inner != "blobs/" + blob["digest"].replace(":", "/", 1):
            raise LaminaBuildError(f"{fs.address}: the compose listed {blob['path']!r} for {blob['digest']}, "
                                   "which is no bundle's blob (a bug in lamina)")
        wanted.setdefault(mount, set()).add(inner)
    subsets = await MultiGet(Get(Digest, DigestSubset(mounts[m], PathGlobs(sorted(paths)))) for m, paths in wanted.items())
    found = await MultiGet(Get(Snapshot, Digest, d) for d in subsets)
    for (mount, paths), snapshot in zip(wanted.items(), found):
        missing = sorted(paths - set(snapshot.files))
        if missing:  # a subset ignores globs that match nothing: never a layout without a blob
            raise LaminaBuildError(f"{fs.address}: {mount} holds no {missing[0]} (a bug in lamina)")
    placed = await MultiGet(Get(Digest, AddPrefix(d, layout)) for d in subsets)
    rest = await Get(Digest, DigestSubset(digest, PathGlobs(["**", f"!{PLACED_FILE}"])))
    return await Get(Digest, MergeDigests([rest, *placed]))


def _findings(fs: ComposedImageFieldSet, stack: ComposedStack, report: CheckReport, lamina: LaminaSubsystem,
              run_id: RunId) -> Tuple[str, ...]:
    """The package's summary lines after its first: what this run downloaded, the package
    database merge's lines, then the check's findings."""
    downloaded = download_line(stack, run_id)
    merged = stack.package_db.lines if stack.package_db is not None else ()
    if lamina.check_compositions:  # the check reports the conflicts, graded by on_conflict
        merged = tuple(line for line in merged if not line.startswith("conflict:"))
    return (*((downloaded,) if downloaded else ()), *merged, *finding_lines(fs.address, report))


async def _package_index(fs: ComposedImageFieldSet, inputs: ComposeInputs, lamina: LaminaSubsystem,
                         run_id: RunId) -> BuiltPackage:
    """A multi-platform image: every platform checked on its own, then one compose of the index."""
    fmt = fs.format()  # not docker-archive or docker-daemon: package_composed_image refused those
    platforms = [p for p, _, _ in inputs.each_platform()]
    relpath = fs.output_relpath()
    with_sbom = bool(fs.sbom.value) and all(i.stack.lists_packages() for _, _, i in inputs.each_platform())
    sbom_argv = (f"--sbom={OUT_DIR}/{fs._stem()}.{{platform}}.cdx.json",) if with_sbom else ()
    sbom_artifacts = tuple(BuiltPackageArtifact(fs.sbom_relpath_of(str(p))) for p in platforms) if with_sbom else ()
    out_argv = () if fmt == "registry" else (f"--out={OUT_DIR}/{relpath}",)
    run = LaminaRun(
        address=fs.address,
        argv=("compose", SPEC_FILE, *out_argv, f"--audit={OUT_DIR}/{fs.audit_relpath()}", *sbom_argv),
        input_digest=inputs.spec,
        read_only_inputs=inputs.read_only,
        output_directory=OUT_DIR,
        description=f"lamina: compose {fs.address} ({len(platforms)} platforms)",
    )
    checks = [
        Get(CheckReport, CheckRequest,
            i.stack.check_request(v) if lamina.check_compositions else CheckRequest(v.address, (), "ignore", (), False))
        for _, v, i in inputs.each_platform()
    ]
    # the checks side by side with the compose (a list: Pants runs Gets of mixed types together)
    *reports, result = await MultiGet([*checks, Get(LaminaRunResult, LaminaRun, run)])  # type: ignore[list-item]
    findings: list = []
    for (platform, _, each), report in zip(inputs.each_platform(), reports):
        findings += [f"{platform}: {line}" for line in _findings(fs, each.stack, report, lamina, run_id)]
    digest = await Get(Digest, RemovePrefix(result.output_digest, OUT_DIR))
    summary = json.loads(result.stdout.decode() or "{}")
    each_line = ", ".join(f"{p.get('platform')} {p.get('manifest')} ({p.get('layers')} layers)"
                          for p in summary.get("platforms", ()))
    lines = (f"index {summary.get('index', '?')}: {each_line}; tags {', '.join(fs.image_refs())}", *findings)
    if fmt == "registry":
        lines = (f"{lines[0]} (no image file: `pants publish` pushes it)", *lines[1:])
        return BuiltPackage(digest, (BuiltPackageArtifact(fs.audit_relpath(), extra_log_lines=lines), *sbom_artifacts))
    return BuiltPackage(
        digest,
        (BuiltPackageArtifact(relpath, extra_log_lines=lines), BuiltPackageArtifact(fs.audit_relpath()), *sbom_artifacts),
    )


@rule(desc="Package a composed image")
async def package_composed_image(fs: ComposedImageFieldSet, lamina: LaminaSubsystem, run_id: RunId) -> BuiltPackage:
    # run_id: this rule runs again in every run (pantsd or not), so that its summary says what this
    # run downloaded; everything it asks for is memoized or cached.
    if fs.platforms.value and not lamina.platform and fs.format() in ("docker-archive", "docker-daemon"):
        raise LaminaBuildError(
            f"{fs.address}: output_format=\"{fs.format()}\" holds one platform, and `platforms` names "
            f"{len(fs.platforms.value)} ({', '.join(fs.platforms.value)}); use output_format=\"oci\" or "
            f"\"oci-archive\" for the index, or build one platform with --lamina-platform={fs.platforms.value[0]}"
        )
    inputs = await Get(ComposeInputs, ComposedImageFieldSet, fs)
    if inputs.platforms:
        return await _package_index(fs, inputs, lamina, run_id)
    if fs.platforms.value:  # --lamina-platform picked one: built as that platform's image
        (fs,) = platform_variants(fs, lamina.platform)
    relpath = fs.output_relpath()
    into_engine = fs.output_format.value == "docker-daemon"
    places_blobs = fs.format() == "oci"  # see _place_blobs
    # The SBOM is written from the packages the package database process listed (no layer is read
    # for it); a registry image whose layers stay in the registry has none.
    with_sbom = bool(fs.sbom.value) and inputs.stack.lists_packages()
    sbom_argv = (f"--sbom={OUT_DIR}/{fs.sbom_relpath()}",) if with_sbom else ()
    sbom_artifacts = (BuiltPackageArtifact(fs.sbom_relpath()),) if with_sbom else ()
    if into_engine and not fs.image_refs():
        raise LaminaBuildError(
            f"{fs.address}: output_format=\"docker-daemon\" loads the image into the engine under its "
            "`image_tags`, and `image_tags` is empty; give it one, e.g. image_tags=[\"latest\"]"
        )
    if into_engine:
        # Into the local engine, sending only the layers it lacks; it is asked what it has now, so
        # this runs afresh every session. dist/ gets the audit trail only.
        env = await Get(EnvironmentVars, EnvironmentVarsRequest(DOCKER_ENV_VARS))
        run = LaminaRun(
            address=fs.address,
            argv=("load", SPEC_FILE, *(f"--tag={r}" for r in fs.image_refs()), f"--audit={OUT_DIR}/{fs.audit_relpath()}",
                  *sbom_argv),
            input_digest=inputs.spec,
            read_only_inputs=inputs.read_only,
            output_directory=OUT_DIR,
            description=f"lamina: load {fs.address} into the Docker engine",
            extra_env=tuple(sorted(env.items())),
            cache_scope=ProcessCacheScope.PER_SESSION,
        )
    elif fs.output_format.value == "registry":
        # For `pants publish` only: the audit trail, composed from metadata; no layer byte is read.
        run = LaminaRun(
            address=fs.address,
            argv=("compose", SPEC_FILE, f"--audit={OUT_DIR}/{fs.audit_relpath()}", *sbom_argv),
            input_digest=inputs.spec,
            read_only_inputs=inputs.read_only,
            output_directory=OUT_DIR,
            description=f"lamina: compose {fs.address} (for publish)",
        )
    else:
        # An oci layout's layer blobs are the bundles' own files: the compose leaves them out and
        # lists them, and they are merged in from the digests Pants holds (no byte read or hashed).
        placed_argv = (f"--placed-blobs={OUT_DIR}/{PLACED_FILE}",) if places_blobs else ()
        run = LaminaRun(
            address=fs.address,
            argv=("compose", SPEC_FILE, f"--out={OUT_DIR}/{relpath}", f"--audit={OUT_DIR}/{fs.audit_relpath()}",
                  *sbom_argv, *placed_argv),
            input_digest=inputs.spec,
            read_only_inputs=inputs.read_only,
            output_directory=OUT_DIR,
            description=f"lamina: compose {fs.address}",
        )
    # The check runs side by side with the compose: a failing check fails the package before
    # anything reaches dist/. A load waits for it, so that a failing check leaves the engine as it was.
    check_request = (
        inputs.stack.check_request(fs) if lamina.check_compositions else CheckRequest(fs.address, (), "ignore", (), False)
    )
    if into_engine:
        report = await Get(CheckReport, CheckRequest, check_request)
        result = await Get(LaminaRunResult, LaminaRun, run)
    else:
        report, result = await MultiGet(
            Get(CheckReport, CheckRequest, check_request), Get(LaminaRunResult, LaminaRun, run)
        )
    # The findings go in the package's summary lines, which `pants package` prints on every run,
    # also when a warm pantsd serves the unchanged package from memory (a log line would not).
    findings = _findings(fs, inputs.stack, report, lamina, run_id)
    digest = await Get(Digest, RemovePrefix(result.output_digest, OUT_DIR))
    if places_blobs:
        digest = await _place_blobs(fs, digest, relpath, inputs.read_only)
    if into_engine:
        lines = (result.stdout.decode(errors="replace").strip(), *findings)
        return BuiltPackage(digest, (BuiltPackageArtifact(fs.audit_relpath(), extra_log_lines=lines), *sbom_artifacts))
    summary = json.loads(result.stdout.decode() or "{}")
    lines = (
        f"manifest {summary.get('manifest', '?')}, {summary.get('layers', '?')} layers, tags {', '.join(fs.image_refs())}",
        *findings,
    )
    if fs.output_format.value == "registry":
        lines = (f"{lines[0]} (no image file: `pants publish` pushes it)", *lines[1:])
        return BuiltPackage(digest, (BuiltPackageArtifact(fs.audit_relpath(), extra_log_lines=lines), *sbom_artifacts))
    return BuiltPackage(
        digest,
        (BuiltPackageArtifact(relpath, extra_log_lines=lines), BuiltPackageArtifact(fs.audit_relpath()),
         *sbom_artifacts),
    )


def rules() -> Iterable:
    return [*collect_rules(), UnionRule(PackageFieldSet, ComposedImageFieldSet)]
