"""Dependency edges from `image` and `base`: on the target a `:target` value names, and on the
`file`/`resource` target owning an archive or layout named by path, so that `pants dependents`,
`peek` and `--changed-since ... --changed-dependents=transitive` know which images use what."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from pants.engine.addresses import Address, Addresses, UnparsedAddressInputs
from pants.engine.fs import PathGlobs, Paths
from pants.engine.internals.graph import Owners, OwnersRequest
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import FieldSet, InferDependenciesRequest, InferredDependencies
from pants.engine.unions import UnionRule

from lamina_pants.subsystem import LaminaSubsystem, UnownedArchiveBehavior
from lamina_pants.target_types import ComposedImageBaseField, DockerLayerImageField
from lamina_pants.util_rules.image_source import is_address, names_files, split_path_value

logger = logging.getLogger(__name__)


class UnownedArchiveError(Exception):
    """An `image` or `base` names a file no target owns (`[lamina].unowned_archive_behavior`)."""


@dataclass(frozen=True)
class DockerLayerImageFieldSet(FieldSet):
    required_fields = (DockerLayerImageField,)
    image: DockerLayerImageField


@dataclass(frozen=True)
class ComposedImageBaseFieldSet(FieldSet):
    required_fields = (ComposedImageBaseField,)
    base: ComposedImageBaseField


class InferDockerLayerDependencies(InferDependenciesRequest):
    infer_from = DockerLayerImageFieldSet


class InferComposedImageDependencies(InferDependenciesRequest):
    infer_from = ComposedImageBaseFieldSet


@dataclass(frozen=True)
class _ValueDependencies:
    value: str
    address: Address
    field_alias: str


@rule
async def value_dependencies(request: _ValueDependencies, lamina: LaminaSubsystem) -> InferredDependencies:
    value, address = request.value, request.address
    if is_address(value):
        addresses = await Get(
            Addresses,
            UnparsedAddressInputs([value], owning_address=address,
                                  description_of_origin=f"the `{request.field_alias}` field of {address}"),
        )
        return InferredDependencies(addresses)
    if not names_files(value):
        return InferredDependencies([])
    _, path, _ = split_path_value(value, address.spec_path)
    if path.startswith(".."):
        return InferredDependencies([])  # refused with a clear error when the image is built
    paths = await Get(Paths, PathGlobs([path, f"{path}/**"]))
    files = paths.files
    if not files:
        return InferredDependencies([])  # a missing archive fails the build, naming it
    owners = await Get(Owners, OwnersRequest(tuple(files)))
    behavior = lamina.unowned_archive_behavior
    if not owners and behavior != UnownedArchiveBehavior.ignore:
        # The plugin could read the files itself, but they would be invisible to Pants' graph.
        directory, _, name = path.rpartition("/")
        target = (f'file(name="{name.replace(".", "_")}", source="{name}")' if files == (path,)
                  else f'files(name="{name.replace(".", "_")}", sources=["{name}/**"])')
        where = f"{directory}/BUILD" if directory else "BUILD"
        problem = (f"{address}: `{request.field_alias}` names {path}, which no target owns, so `pants dependents` "
                   f"and `--changed-since` would not know that {address} uses it")
        if behavior == UnownedArchiveBehavior.error:
            raise UnownedArchiveError(
                f"{problem}. Add to {where}: {target}\n(or set `[lamina].unowned_archive_behavior` to "
                '"warning" to build it all the same)'
            )
        logger.warning(f"{problem}; add to {where}: {target}")
    return InferredDependencies(sorted(owners.keys()))


async def _all_values(values: Iterable[str], address: Address, alias: str) -> InferredDependencies:
    """The dependencies of every image a field names (one, or each platform's)."""
    found = await MultiGet(Get(InferredDependencies, _ValueDependencies(v, address, alias)) for v in values)
    return InferredDependencies(sorted({a for each in found for a in each.include}))


@rule
async def infer_docker_layer_dependencies(request: InferDockerLayerDependencies) -> InferredDependencies:
    fs = request.field_set
    return await _all_values(fs.image.values(), fs.address, "image")


@rule
async def infer_composed_image_dependencies(request: InferComposedImageDependencies) -> InferredDependencies:
    fs = request.field_set
    return await _all_values(fs.base.values() if fs.base.value else ("scratch",), fs.address, "base")


def rules() -> Iterable:
    return [
        *collect_rules(),
        UnionRule(InferDependenciesRequest, InferDockerLayerDependencies),
        UnionRule(InferDependenciesRequest, InferComposedImageDependencies),
    ]
