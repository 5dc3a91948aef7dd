"""`pants layers`: list the layers of `docker_layer` sources and of composed images (the seed's manual
"identify the layers" and "verification" steps): index, digest, diff_id, size, created_by."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from pants.engine.console import Console
from pants.engine.fs import EMPTY_DIGEST
from pants.engine.process import ProcessCacheScope
from pants.engine.goal import Goal, GoalSubsystem
from pants.engine.rules import Get, MultiGet, collect_rules, goal_rule, rule
from pants.engine.target import Target, Targets
from pants.option.option_types import BoolOption
from pants.util.frozendict import FrozenDict

from lamina_pants.goals.package import SPEC_FILE, ComposedImageFieldSet, ComposeInputs, platform_variants
from lamina_pants.subsystem import LaminaSubsystem
from lamina_pants.target_types import ComposedImageBaseField, DockerLayerImageField, DockerLayerSelectorField
from lamina_pants.util_rules.analysis import CheckReport, CheckRequest
from lamina_pants.util_rules.core import LaminaRun, LaminaRunResult, read_only_dir
from lamina_pants.util_rules.image_source import ImageSourceRequest, ResolvedImageSource


class LayersSubsystem(GoalSubsystem):
    name = "layers"
    help = (
        "List the layers of the images that `docker_layer` targets take from, and of composed images: "
        "index, digest, diff_id, size and created_by. For a `docker_layer`, the layers its `layer` "
        "selector takes are marked with `*`.\n\n"
        "    pants layers images:app            # the composed image's layers\n"
        "    pants layers --packages images:app # and the packages each layer brought\n"
        "    pants layers --files images:curl   # a docker_layer's source image, with its entries"
    )

    files = BoolOption(default=False, help="Also list each layer's entries (like `tar -tf`).")
    packages = BoolOption(
        default=False,
        help=(
            "Also list the packages each layer brought (from its dpkg and apk databases), as the "
            "image's SBOM attributes them: a package is the lowest layer's whose database lists it "
            "at the version the image shows. For a composed image it reuses the package's cached "
            "package listing when there is one; otherwise each layer's databases are read."
        ),
    )
    conflicts = BoolOption(
        default=False,
        help=(
            "For composed images, also print the composition check of the final stack (conflicts, "
            "whiteouts, hard links, missing libraries), as `pants package` runs it: it reuses the "
            "package's cached per-layer scans."
        ),
    )


class Layers(Goal):
    subsystem_cls = LayersSubsystem
    environment_behavior = Goal.EnvironmentBehavior.LOCAL_ONLY


@dataclass(frozen=True)
class LayerListingRequest:
    target: Target
    files: bool
    conflicts: bool
    packages: bool = False


@dataclass(frozen=True)
class LayerListing:
    text: Optional[str]


@dataclass(frozen=True)
class _SourceListingRequest:
    request: LayerListingRequest
    image: str
    platform: Optional[str] = None


@dataclass(frozen=True)
class _ComposedListingRequest:
    request: LayerListingRequest


async def _listing(request: LayerListingRequest, image: Optional[str], platform: Optional[str],
                   lamina: LaminaSubsystem) -> LayerListing:
    target = request.target
    flags = (("--files",) if request.files else ()) + (("--packages",) if request.packages else ())
    report: Optional[CheckReport] = None
    if image is not None:
        source = await Get(ResolvedImageSource, ImageSourceRequest(image, target.address, "image"))
        flags += (f"--platform={platform}",) if platform else ()
        source_dir = read_only_dir("source", source.digest)
        reference, extra = source.reference_under(source_dir), source.extra_argv
        read_only = ((source_dir, source.digest),) if source.path_at is not None else ()
        flags += (f"--select={target[DockerLayerSelectorField].value}",)
        env, scope, caches = source.extra_env, source.cache_scope, source.append_only_caches
        digest = EMPTY_DIGEST
    elif target.has_field(ComposedImageBaseField):
        # The composed image as its compose spec describes it, its layers read from Pants' bundles
        # (linked read-only): no image archive is made or copied to list it.
        field_set = ComposedImageFieldSet.create(target)
        inputs = await Get(ComposeInputs, ComposedImageFieldSet, field_set)
        reference, digest, read_only, extra, env = SPEC_FILE, inputs.spec, inputs.read_only, (), ()
        scope, caches = ProcessCacheScope.SUCCESSFUL, ()
        if request.conflicts and inputs.platforms:  # each platform's own check
            reports = await MultiGet(Get(CheckReport, CheckRequest, i.stack.check_request(v))
                                     for _, v, i in inputs.each_platform())
            text = "\n\n".join(f"{p}:\n{r.text}" for (p, _, _), r in zip(inputs.each_platform(), reports))
            report = CheckReport(text, ())
        elif request.conflicts:  # the package's own check: its scans (and usually the check) are cached
            if field_set.platforms.value:  # --lamina-platform picked one
                (field_set,) = platform_variants(field_set, lamina.platform)
            report = await Get(CheckReport, CheckRequest, inputs.stack.check_request(field_set))
    else:
        return LayerListing(None)
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=target.address,
            argv=("layers", reference, *flags, *extra),
            input_digest=digest,
            read_only_inputs=read_only,
            output_directory="__none",
            description=f"lamina: list layers of {target.address}",
            extra_env=env,
            append_only_caches=caches,
            cache_scope=scope,
        ),
    )
    text = result.stdout.decode(errors="replace")
    if report is not None:
        text = text.rstrip("\n") + "\n\n" + report.text
    return LayerListing(text)


@rule
async def list_source_layers(request: _SourceListingRequest, lamina: LaminaSubsystem) -> LayerListing:
    return await _listing(request.request, request.image, request.platform, lamina)


@rule
async def list_composed_layers(request: _ComposedListingRequest, lamina: LaminaSubsystem) -> LayerListing:
    return await _listing(request.request, None, None, lamina)


@rule
async def list_layers(request: LayerListingRequest) -> LayerListing:
    target = request.target
    if target.has_field(DockerLayerImageField) and isinstance(target[DockerLayerImageField].value, FrozenDict):
        # a per-platform map: each platform's source image
        each = tuple(target[DockerLayerImageField].value.items())
        listings = await MultiGet(Get(LayerListing, _SourceListingRequest(request, image, platform))
                                  for platform, image in each)
        return LayerListing("\n".join(f"{platform}:\n  " + (l.text or "").rstrip("\n").replace("\n", "\n  ")
                                      for (platform, _), l in zip(each, listings)))
    if target.has_field(DockerLayerImageField):
        return await Get(LayerListing, _SourceListingRequest(request, target[DockerLayerImageField].value))
    return await Get(LayerListing, _ComposedListingRequest(request))


@goal_rule
async def layers_goal(console: Console, subsystem: LayersSubsystem, targets: Targets) -> Layers:
    listings = await MultiGet(
        Get(LayerListing, LayerListingRequest(t, subsystem.files, subsystem.conflicts, subsystem.packages))
        for t in targets
    )
    shown = 0
    for target, listing in zip(targets, listings):
        if listing.text is None:
            continue
        shown += 1
        console.print_stdout(f"{target.address}:")
        console.print_stdout("  " + listing.text.rstrip("\n").replace("\n", "\n  "))
    if not shown:
        console.print_stderr("No docker_layer or composed_image targets matched.")
    return Layers(exit_code=0)


def rules() -> Iterable:
    return collect_rules()
