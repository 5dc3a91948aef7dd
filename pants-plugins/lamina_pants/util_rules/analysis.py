"""Composition checks: one cached `lamina scan` per layer bundle, then `lamina check` over the stack
(with the image's config, so that it also checks the start command)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Iterable, Optional

from pants.engine.addresses import Address
from pants.engine.fs import (
    EMPTY_DIGEST,
    AddPrefix,
    CreateDigest,
    Digest,
    DigestContents,
    DigestSubset,
    FileContent,
    MergeDigests,
    PathGlobs,
    RemovePrefix,
)
from pants.engine.rules import Get, MultiGet, collect_rules, rule

from lamina_pants.util_rules.core import LaminaRun, LaminaRunResult, read_only_dir
from lamina_pants.util_rules.layers import INDEX_FILE, Bundle, FilesLayer, PackageDbLayer

logger = logging.getLogger(__name__)

INDEX_DIR = "__index"
REPORT_DIR = "__report"


@dataclass(frozen=True)
class ScanRequest:
    bundle: Bundle
    address: Address
    what: str


@dataclass(frozen=True)
class LayerIndex:
    digest: Digest  # the index file at the digest's root
    name: str = "index.json"


@rule
async def scan_bundle(request: ScanRequest) -> LayerIndex:
    if request.bundle.indexed:  # indexed when it was extracted: no process reads the layers again
        return LayerIndex(await Get(Digest, DigestSubset(request.bundle.digest, PathGlobs([INDEX_FILE]))), INDEX_FILE)
    # Keyed only on the bundle's content, so a layer is scanned once, like it is extracted once.
    bundle_dir = read_only_dir("bundle", request.bundle.digest)
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=request.address,
            argv=("scan", bundle_dir, f"--out={INDEX_DIR}/index.json"),
            input_digest=EMPTY_DIGEST,
            read_only_inputs=((bundle_dir, request.bundle.digest),),
            output_directory=INDEX_DIR,
            description=f"lamina: scan {request.what}",
        ),
    )
    return LayerIndex(await Get(Digest, RemovePrefix(result.output_digest, INDEX_DIR)))


@dataclass(frozen=True)
class StartCheck:
    """The image's config as `lamina compose` makes it: the base's config (read from its bundle)
    with the target's overrides; the check resolves its entrypoint + cmd in the stack."""

    on_start_failure: str  # warn | error (ignore: no StartCheck)
    config_json: str  # the compose spec's "config" object, as JSON
    platform: Optional[str]
    base: Optional[Bundle]  # None: scratch

    def spec(self, base_dir: str) -> bytes:
        spec: dict = {"config": json.loads(self.config_json), "base": {"source": base_dir} if self.base else "scratch"}
        if self.platform:
            spec["platform"] = self.platform
        return json.dumps(spec, sort_keys=True).encode()


@dataclass(frozen=True)
class CheckRequest:
    address: Address
    scans: tuple[ScanRequest, ...]  # the stack's layers, base first
    on_conflict: str
    allowed: tuple[str, ...]
    check_dependencies: bool
    files: Optional[FilesLayer] = None  # the layer of the image's own files, on top of the stack
    start: Optional[StartCheck] = None  # what the start command check needs; None: not checked
    package_db: Optional[PackageDbLayer] = None  # the stack's package database merge (its layer goes on top)


@dataclass(frozen=True)
class CheckReport:
    text: str
    counts: tuple[tuple[str, int], ...]


@rule
async def check_composition(request: CheckRequest) -> CheckReport:
    if not request.scans and request.files is None and request.start is None:  # nothing to check (or checks off)
        return CheckReport("", ())
    indexes = list(await MultiGet(Get(LayerIndex, ScanRequest, scan) for scan in request.scans))
    if request.files is not None:
        indexes.append(LayerIndex(await Get(Digest, DigestSubset(request.files.digest, PathGlobs(["index.json"])))))
    prefixed = await MultiGet(
        Get(Digest, AddPrefix(index.digest, f"__indexes/{i}")) for i, index in enumerate(indexes)
    )
    argv = ["check", *(f"--index=__indexes/{i}/{index.name}" for i, index in enumerate(indexes))]
    argv += [f"--on-conflict={request.on_conflict}", *(f"--allow={g}" for g in request.allowed)]
    if not request.check_dependencies:
        argv.append("--no-check-dependencies")
    inputs = list(prefixed)
    if request.package_db is not None:
        inputs.append(await Get(Digest, AddPrefix(request.package_db.digest, "__package_db")))
        argv.append("--package-db=__package_db")
    read_only: tuple = ()
    start = request.start
    if start is not None:
        # The base bundle is linked in read-only (its config is read, no layer bytes).
        base_dir = read_only_dir("base", start.base.digest) if start.base is not None else ""
        read_only = ((base_dir, start.base.digest),) if start.base is not None else ()
        inputs.append(await Get(Digest, CreateDigest([FileContent("__image-spec.json", start.spec(base_dir))])))
        argv += ["--image-spec=__image-spec.json", f"--on-start-failure={start.on_start_failure}"]
    argv.append(f"--json={REPORT_DIR}/report.json")
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=request.address,
            argv=tuple(argv),
            input_digest=await Get(Digest, MergeDigests(inputs)),
            read_only_inputs=read_only,
            output_directory=REPORT_DIR,
            description=f"lamina: check {request.address}",
        ),
    )
    # The report is small JSON (never layer bytes), so reading it whole is fine.
    report = await Get(DigestContents, Digest, result.output_digest)
    data = json.loads(report[0].content) if report else {}
    counts = tuple(sorted((str(k), int(v)) for k, v in (data.get("counts") or {}).items()))
    return CheckReport(result.stdout.decode(errors="replace"), counts)


def finding_lines(address: Address, report: CheckReport) -> tuple[str, ...]:
    """The check's findings as lines to show the user: a heading, then one line per finding."""
    findings = [l.strip() for l in report.text.splitlines() if l.strip().startswith(("warning:", "error:"))]
    if not findings:
        return ()
    return (f"{address}: composition check found {len(findings)} issue(s):", *(f"  {f}" for f in findings))


def log_findings(address: Address, report: CheckReport) -> None:
    """Warn with the check's findings (where no summary line can carry them, e.g. `pants run`)."""
    lines = finding_lines(address, report)
    if lines:
        logger.warning("\n".join(lines))


def rules() -> Iterable:
    return collect_rules()
