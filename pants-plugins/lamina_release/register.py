"""This repository's own release helper (not part of the lamina-pants distribution).

Pants 2.17's `python_artifact(...)` takes a literal `version`, and BUILD files cannot read files, so
each `python_distribution` here leaves `version` out and this rule fills it in from
`__version__` in src/python/lamina/__init__.py, the one place lamina's version is set.
"""
from __future__ import annotations

import ast
from typing import Iterable

from pants.backend.python.target_types import PythonProvidesField
from pants.backend.python.util_rules.package_dists import SetupKwargs, SetupKwargsRequest
from pants.engine.fs import DigestContents, GlobMatchErrorBehavior, PathGlobs
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import Target
from pants.engine.unions import UnionRule

VERSION_FILE = "src/python/lamina/__init__.py"


class LaminaVersionSetupKwargsRequest(SetupKwargsRequest):
    @classmethod
    def is_applicable(cls, target: Target) -> bool:
        return target.has_field(PythonProvidesField) and "version" not in target[PythonProvidesField].value.kwargs


class LaminaVersionError(Exception):
    pass


def read_version(text: str) -> str:
    for node in ast.parse(text).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise LaminaVersionError(
        f'{VERSION_FILE} sets no `__version__ = "X.Y.Z"` (a string literal at module level); '
        "the python_distribution targets of this repository take their version from it."
    )


@rule
async def lamina_setup_kwargs(request: LaminaVersionSetupKwargsRequest) -> SetupKwargs:
    contents = await Get(
        DigestContents,
        PathGlobs(
            [VERSION_FILE],
            glob_match_error_behavior=GlobMatchErrorBehavior.error,
            description_of_origin=f"the version of {request.target.address}",
        ),
    )
    version = read_version(contents[0].content.decode())
    return SetupKwargs({**request.explicit_kwargs, "version": version}, address=request.target.address)


def rules() -> Iterable:
    return [*collect_rules(), UnionRule(SetupKwargsRequest, LaminaVersionSetupKwargsRequest)]
