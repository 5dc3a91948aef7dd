"""Findings, the policy that grades them, and the report: one line per finding, grouped, as text or JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from lamina.analyze.index import LayerIndex
from lamina.errors import SpecError

REPORT_FORMAT = "lamina.check-report/1"
ON_CONFLICT = ("warn", "error", "ignore")
ON_START_FAILURE = ON_CONFLICT
# (kind, heading) in report order.
GROUPS = (
    ("conflict", "conflicts"),
    ("replacement", "replaced symlinks and directories"),
    ("whiteout", "whiteouts"),
    ("hardlink", "hard links"),
    ("missing-library", "missing libraries"),
    ("interpreter", "script interpreters"),
    ("start", "start command"),  # only in a report of a check that was given the image's config
)
KINDS = tuple(kind for kind, _ in GROUPS)
MAX_ERRORS_LISTED = 20  # error findings an error message lists
# kind -> how the error summary counts it (one, many).
_COUNTED = {
    "conflict": ("conflict", "conflicts"),
    "replacement": ("replaced symlink or directory", "replaced symlinks or directories"),
    "whiteout": ("foreign whiteout", "foreign whiteouts"),
    "hardlink": ("broken hard link", "broken hard links"),
    "missing-library": ("binary with missing libraries", "binaries with missing libraries"),
    "interpreter": ("script whose interpreter is missing", "scripts whose interpreter is missing"),
    "start": ("start command that cannot start", "start commands that cannot start"),
}


@dataclass(frozen=True)
class Policy:
    on_conflict: str = "warn"  # warn | error | ignore
    allowed_conflicts: tuple[str, ...] = ()  # fnmatch globs on paths, with or without a leading '/'
    check_dependencies: bool = True
    # The image's entrypoint + cmd that would not start: warn | error | ignore (not checked).
    on_start_failure: str = "warn"

    def __post_init__(self) -> None:
        if self.on_conflict not in ON_CONFLICT:
            raise SpecError(f"on_conflict {self.on_conflict!r} is not one of {', '.join(ON_CONFLICT)}")
        if self.on_start_failure not in ON_START_FAILURE:
            raise SpecError(
                f"on_start_failure {self.on_start_failure!r} is not one of {', '.join(ON_START_FAILURE)}")

    def allows(self, path: str) -> bool:
        import fnmatch

        p = path.strip("/")
        return any(fnmatch.fnmatchcase(p, g.lstrip("/")) for g in self.allowed_conflicts)


@dataclass(frozen=True)
class Finding:
    kind: str  # one of KINDS
    severity: str  # warning | error | info (nothing wrong: e.g. a package database conflict the merge resolved)
    message: str  # one line, complete on its own
    paths: tuple[str, ...]  # the paths concerned, no leading '/'
    layers: tuple[int, ...]  # stack positions concerned, base first
    winner: Optional[int] = None  # conflict: the stack position whose copy is in the image
    missing: tuple[str, ...] = ()  # missing-library: what could not be found
    hint: str = ""  # how to fix it, when there is something specific to say

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "severity": self.severity, "message": self.message,
                               "paths": list(self.paths), "layers": list(self.layers)}
        if self.winner is not None:
            out["winner"] = self.winner
        if self.missing:
            out["missing"] = list(self.missing)
        if self.hint:
            out["hint"] = self.hint
        return out


@dataclass(frozen=True)
class Report:
    stack: tuple[LayerIndex, ...]
    findings: tuple[Finding, ...]
    policy: Policy
    # The start command checked (entrypoint + cmd, () for none) and how the user was taken;
    # None when the check had no image config.
    start: Optional[tuple[str, ...]] = None
    start_user: str = ""

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def of_kind(self, kind: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind == kind)

    def error_summary(self) -> str:
        """What the policy treats as errors (empty when nothing is): a line counting them, then one
        line per error finding (at most MAX_ERRORS_LISTED), so the error stands on its own."""
        errors = self.errors
        if not errors:
            return ""
        counts = []
        for kind, _ in GROUPS:
            n = sum(1 for f in errors if f.kind == kind)
            if n:
                counts.append(f"{n} {_COUNTED[kind][0 if n == 1 else 1]}")
        lines = [f"composition check failed: {', '.join(counts)}:"]
        lines += [f"  error: {f.message}" for f in errors[:MAX_ERRORS_LISTED]]
        if len(errors) > MAX_ERRORS_LISTED:
            lines.append(f"  ... and {len(errors) - MAX_ERRORS_LISTED} more (see the report)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "policy": {"on_conflict": self.policy.on_conflict,
                       "allowed_conflicts": list(self.policy.allowed_conflicts),
                       "check_dependencies": self.policy.check_dependencies,
                       "on_start_failure": self.policy.on_start_failure},
            "stack": [
                {"position": i, "source": l.source, "index": l.index, "digest": l.digest, "diff_id": l.diff_id,
                 "created_by": l.created_by}
                for i, l in enumerate(self.stack)
            ],
            "findings": [f.to_json() for f in self.findings],
            "counts": {kind: len(self.of_kind(kind)) for kind, _ in GROUPS},
            "errors": len(self.errors),
        }
        if self.start is not None:
            out["start"] = {"argv": list(self.start), "user": self.start_user}
        return out

    def text(self, kinds: Sequence[str] = KINDS, legend: bool = True) -> str:
        """The report for people: the stack (with `legend`), then one line per finding under its group."""
        n = len(self.stack)
        lines = [f"stack ({n} layer{'' if n == 1 else 's'}, base first):"] if legend else []
        for i, l in enumerate(self.stack if legend else ()):
            created = " ".join(l.created_by.split())
            created = created[:57] + "..." if len(created) > 60 else created
            where = l.source if l.on_top else f"{l.source} layer {l.index}"  # on top: made by lamina, no index
            lines.append(f"  [{i}] {where} {l.digest[:19]} {created}".rstrip())
        if legend and self.start is not None:
            argv = json.dumps(list(self.start)) if self.start else "nothing (no entrypoint or cmd)"
            lines.append(f"starts: {argv} as user {self.start_user}")
        for kind, heading in GROUPS:
            if kind not in kinds or (kind == "start" and self.start is None):
                continue
            found = self.of_kind(kind)
            lines.append(f"{heading} ({len(found)}):" if found else f"{heading}: none")
            lines.extend(f"  {f.severity}: {f.message}" for f in found)
        text = "\n".join(lines) + "\n"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")  # names that are not UTF-8, escaped


def layer_name(stack: Sequence[LayerIndex], pos: int) -> str:
    """How findings name a layer: its stack position, source, index there and digest."""
    return f"[{pos}] {stack[pos].describe()}"
