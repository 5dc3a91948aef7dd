"""`pants run` for `composed_image`: load it into the engine (only the layers it lacks), then `docker run`."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from pants.core.goals.run import RunFieldSet, RunInSandboxBehavior, RunRequest
from pants.core.util_rules.system_binaries import BinaryPathRequest, BinaryPaths, SearchPath
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import EMPTY_DIGEST
from pants.engine.process import ProcessCacheScope
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import WrappedTarget, WrappedTargetRequest

from lamina.model import Platform

from lamina_pants.goals.package import SPEC_FILE, ComposedImageFieldSet, ComposeInputs, OnePlatform, platform_variants
from lamina_pants.subsystem import LaminaSubsystem
from lamina_pants.util_rules.analysis import CheckReport, CheckRequest, log_findings
from lamina_pants.target_types import ComposedImageBaseField, ComposedImageRepositoryField, ComposedImageTagsField
from lamina_pants.util_rules.core import LaminaBuildError, LaminaRun, LaminaRunResult

logger = logging.getLogger(__name__)

_DOCKER_ENV = ("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_CONFIG", "PATH", "HOME")


@dataclass(frozen=True)
class ComposedImageRunFieldSet(RunFieldSet):
    required_fields = (ComposedImageBaseField,)
    run_in_sandbox_behavior = RunInSandboxBehavior.NOT_SUPPORTED

    repository: ComposedImageRepositoryField
    image_tags: ComposedImageTagsField


_LOADED = re.compile(r"^loaded (sha256:[0-9a-f]{64}) ", re.MULTILINE)


def _loaded_image_id(summary: str) -> Optional[str]:
    found = _LOADED.search(summary)
    return found.group(1) if found else None


@rule(desc="Run a composed image")
async def run_composed_image(fs: ComposedImageRunFieldSet, lamina: LaminaSubsystem) -> RunRequest:
    wrapped = await Get(WrappedTarget, WrappedTargetRequest(fs.address, description_of_origin="<infallible>"))
    package_fs = ComposedImageFieldSet.create(wrapped.target)
    refs = package_fs.image_refs()
    # Loaded from the compose spec: the layers are read from the bundles Pants keeps (linked into
    # the process read-only), never from a packaged archive. The check still has to pass first.
    if package_fs.platforms.value:
        # the engine holds one platform: --lamina-platform's, else this machine's
        chosen = lamina.platform or str(Platform.host())
        (package_fs,) = platform_variants(package_fs, chosen, "--lamina-platform" if lamina.platform
                                          else "this machine's platform,")
    inputs = await Get(ComposeInputs, OnePlatform(package_fs))
    if lamina.check_compositions:
        log_findings(fs.address, await Get(CheckReport, CheckRequest, inputs.stack.check_request(package_fs)))
    env = await Get(EnvironmentVars, EnvironmentVarsRequest(_DOCKER_ENV))
    # Loading asks the engine what it has now, so it is done afresh every run.
    loaded = await Get(
        LaminaRunResult,
        LaminaRun(
            address=fs.address,
            argv=("load", SPEC_FILE, *(f"--tag={r}" for r in refs)),
            input_digest=inputs.spec,
            read_only_inputs=inputs.read_only,
            output_directory="__none",
            description=f"lamina: load {fs.address} into the Docker engine",
            extra_env=tuple(sorted((k, v) for k, v in env.items() if k != "PATH")),
            cache_scope=ProcessCacheScope.PER_SESSION,
        ),
    )
    summary = loaded.stdout.decode(errors="replace").strip()
    logger.info(summary)
    # With `image_tags=[]` the image has no name: it is run by the ID `lamina load` reports.
    target = refs[0] if refs else _loaded_image_id(summary)
    if target is None:
        raise LaminaBuildError(f"{fs.address}: `lamina load` did not say which image it loaded: {summary!r}")
    docker = await Get(
        BinaryPaths, BinaryPathRequest(binary_name="docker", search_path=SearchPath(env.get("PATH", "/usr/bin:/bin").split(":")))
    )
    if docker.first_path is None:
        raise LaminaBuildError(f"{fs.address}: `pants run` needs the docker CLI on PATH to run the loaded image")
    return RunRequest(
        digest=EMPTY_DIGEST,
        args=(docker.first_path.path, "run", "--rm", "-i", target),
        extra_env={k: v for k, v in env.items()},
    )


def rules() -> Iterable:
    return [*collect_rules(), *ComposedImageRunFieldSet.rules()]
