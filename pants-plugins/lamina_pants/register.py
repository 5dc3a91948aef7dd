"""The lamina Pants backend: `docker_layer` and `composed_image`, packaged with `pants package`."""
from __future__ import annotations

from pants.backend.python.util_rules import pex

from lamina_pants.goals import layers as layers_goal, package, publish, run
from lamina_pants.target_types import target_types as _target_types
from lamina_pants.util_rules import analysis, core, dependencies, distribution, image_source, layers


def target_types():  # type: ignore[no-untyped-def]
    return _target_types()


def rules():  # type: ignore[no-untyped-def]
    # pex's rules are listed so the backend also works in repos that do not enable the Python one.
    return [*pex.rules(), *analysis.rules(), *core.rules(), *distribution.rules(), *dependencies.rules(), *image_source.rules(), *layers.rules(), *package.rules(), *publish.rules(), *run.rules(), *layers_goal.rules()]
