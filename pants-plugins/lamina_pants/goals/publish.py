"""`pants publish` for `composed_image`: `lamina push` to each registry, no Docker engine needed."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from pants.core.goals.publish import (
    PublishFieldSet,
    PublishOutputData,
    PublishPackages,
    PublishProcesses,
    PublishRequest,
)
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import CreateDigest, Digest, FileContent
from pants.engine.process import InteractiveProcess, ProcessCacheScope
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import WrappedTarget, WrappedTargetRequest
from pants.option.global_options import KeepSandboxes

from lamina_pants.goals.package import SPEC_FILE, ComposedImageFieldSet, ComposeInputs
from lamina_pants.subsystem import LaminaSubsystem
from lamina_pants.target_types import (
    ComposedImageBaseField,
    ComposedImageRegistriesField,
    ComposedImageRepositoryField,
    ComposedImagePlatformsField,
    ComposedImageSbomField,
    ComposedImageSkipPushField,
    ComposedImageTagsField,
)
from lamina_pants.util_rules.core import LaminaBuildError, LaminaCore, core_process
from lamina_pants.util_rules.distribution import CompressedLayers, CompressedLayersRequest


class PublishComposedImageRequest(PublishRequest):
    pass


@dataclass(frozen=True)
class PublishComposedImageFieldSet(PublishFieldSet):
    publish_request_type = PublishComposedImageRequest
    required_fields = (ComposedImageBaseField,)

    registries: ComposedImageRegistriesField
    skip_push: ComposedImageSkipPushField
    repository: ComposedImageRepositoryField
    image_tags: ComposedImageTagsField
    sbom: ComposedImageSbomField
    platforms: ComposedImagePlatformsField

    def refs(self) -> tuple[str, ...]:
        repository = self.repository.value or self.address.target_name
        return tuple(
            f"{registry}/{repository}:{tag}"
            for registry in (self.registries.value or ())
            for tag in (self.image_tags.value or ())
        )

    def get_output_data(self) -> PublishOutputData:
        return PublishOutputData(
            {"publisher": "lamina", "registries": self.registries.value or (), **super().get_output_data()}
        )


@rule(desc="Push composed images")
async def publish_composed_image(
    request: PublishComposedImageRequest, core: LaminaCore, lamina: LaminaSubsystem, keep_sandboxes: KeepSandboxes
) -> PublishProcesses:
    fs = request.field_set
    refs = fs.refs()
    if fs.skip_push.value:
        return PublishProcesses([PublishPackages(names=refs, description=f"(by `skip_push` on {fs.address})")])
    if not refs:
        return PublishProcesses(
            [PublishPackages(names=(), description=f"(no `registries` on {fs.address})")]
        )
    # Pushed from the compose spec: the layers are read from the bundles Pants keeps (linked into
    # the process read-only), not from a copy of the packaged archive.
    if lamina.platform and fs.platforms.value:
        raise LaminaBuildError(
            f"{fs.address}: --lamina-platform={lamina.platform} (`[lamina].platform`) would push one platform's image "
            f"under tags ({', '.join(refs)}) that name the index of its `platforms`, replacing it; publish "
            "without it (it is for building one platform: docker-archive, docker-daemon, pants run)"
        )
    wrapped = await Get(WrappedTarget, WrappedTargetRequest(fs.address, description_of_origin="<infallible>"))
    inputs = await Get(ComposeInputs, ComposedImageFieldSet, ComposedImageFieldSet.create(wrapped.target))
    # Uncompressed layers (from `docker save` archives, the engine) go up compressed: each made once,
    # keyed on the layer's bytes alone, so an unchanged layer has the same digest and is not sent again.
    compression = lamina.push_compression.value
    spec_digest, read_only = inputs.spec, inputs.read_only
    if compression != "none":
        compressed = await Get(CompressedLayers, CompressedLayersRequest(fs.address, inputs.bundles(), compression))
        spec = json.loads(inputs.spec_json)
        for each in spec["platforms"] if inputs.platforms else (spec,):  # an index spec: each platform's
            each["compressed"] = [name for name, _ in compressed.dirs]
        spec_digest = await Get(
            Digest, CreateDigest([FileContent(SPEC_FILE, json.dumps(spec, sort_keys=True).encode())])
        )
        read_only = (*read_only, *compressed.dirs)
    # not cached: the user's PATH too, where their Docker credential helpers are
    env = await Get(EnvironmentVars, EnvironmentVarsRequest((*lamina.registry_env_vars, "PATH")))
    # The SBOM goes up as a referrer of the pushed manifest, made from the packages.json the
    # package's own package-db process listed (no layer is read for it).
    stacks = [i.stack for _, _, i in inputs.each_platform()] or [inputs.stack]
    with_sbom = ("--sbom",) if fs.sbom.value and all(s.lists_packages() for s in stacks) else ()
    process = await core_process(
        core,
        ("push", SPEC_FILE, *(f"--to={r}" for r in refs), f"--compression={compression}", *with_sbom,
         *lamina.registry_args()),
        input_digest=spec_digest,
        description=f"lamina: push {fs.address}",
        env=dict(env),
        cache_scope=ProcessCacheScope.PER_SESSION,
    )
    interactive = InteractiveProcess(
        process.argv,
        env=process.env,
        input_digest=process.input_digest,
        append_only_caches=process.append_only_caches,
        immutable_input_digests={**process.immutable_input_digests, **dict(read_only)},
        keep_sandboxes=keep_sandboxes,
    )
    return PublishProcesses(
        [
            PublishPackages(
                names=refs,
                process=interactive,
                description=", ".join(sorted(set(r.split("/", 1)[0] for r in refs))),
                data=fs.get_output_data(),
            )
        ]
    )


def rules() -> Iterable:
    return [*collect_rules(), *PublishComposedImageFieldSet.rules()]
