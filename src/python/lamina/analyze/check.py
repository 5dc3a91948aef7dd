"""The composition checks on a stack of layer indexes: conflicts, replacements, foreign whiteouts, broken hard links."""
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Optional, Sequence

from lamina.analyze.stackfs import Applied, Node, Override, apply
from lamina.analyze.index import LayerIndex
from lamina.analyze.report import Finding, Policy, Report, layer_name
from lamina.pkgdb import MERGE_CREATED_BY

if TYPE_CHECKING:
    from lamina.analyze.start import StartConfig

# (tool, globs) of files that record which packages are installed.
PACKAGE_DATABASES = (
    ("dpkg", ("var/lib/dpkg/status", "var/lib/dpkg/status.d/*")),
    ("apk", ("lib/apk/db/installed", "etc/apk/world")),
    ("rpm", ("var/lib/rpm/*", "usr/lib/sysimage/rpm/*")),
)
SHOWN_PATHS = 5  # a whiteout finding lists this many paths, then counts the rest


def package_database(path: str) -> Optional[str]:
    """The package manager whose database `path` is, if it is one."""
    p = path.strip("/")
    for tool, globs in PACKAGE_DATABASES:
        if any(fnmatch.fnmatchcase(p, g) for g in globs):
            return tool
    return None


def _kind_name(node: Node) -> str:
    return {"file": "a file", "dir": "a directory", "symlink": "a symlink", "hardlink": "a hard link"}.get(
        node.kind, "a special file")


def _difference(lower: Node, upper: Node) -> str:
    a, b = lower.facts, upper.facts
    if lower.kind != upper.kind:
        return f"{_kind_name(lower)} vs {_kind_name(upper)}"
    what = []
    if a.sha256 != b.sha256 or a.linkname != b.linkname:
        what.append("symlink target" if a.kind == "symlink" else "content")
    if a.mode != b.mode and a.kind != "symlink":
        what.append(f"mode {a.mode:04o} vs {b.mode:04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        what.append(f"owner {a.uid}:{a.gid} vs {b.uid}:{b.gid}")
    return ", ".join(what) or "content"


def conflicts(applied: Applied, policy: Policy) -> list[Finding]:
    """Paths layers provide with different content, where the upper layer was not built on the lower one."""
    if policy.on_conflict == "ignore":
        return []
    stack = applied.fs.stack
    by_path: dict[str, list[Override]] = {}
    for o in applied.overrides:
        if not is_replacement(o) and not stack[o.upper.layer].knows(stack[o.lower.layer]):
            by_path.setdefault(o.path, []).append(o)
    severity = "error" if policy.on_conflict == "error" else "warning"
    out = []
    for path in sorted(by_path):
        final = applied.fs.nodes.get(path)
        if final is None or policy.allows(path):
            continue  # removed again higher up, or allowed
        found = by_path[path]
        layers = sorted({o.lower.layer for o in found} | {o.upper.layer for o in found} | {final.layer})
        names = [layer_name(stack, i) for i in layers]
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        clash = any((o.lower.kind == "dir") != (o.upper.kind == "dir") for o in found)
        kind = "type clash: " if clash else ""
        message = (f"/{path} differs ({kind}{_difference(found[-1].lower, found[-1].upper)}) between {listed}; "
                   f"the top one, [{final.layer}], wins")
        hint = ""
        tool = package_database(path)
        if tool is not None and stack[final.layer].created_by == MERGE_CREATED_BY:
            message = (f"/{path} differs between {', '.join(names[:-1])}; merged: {names[-1]} holds the package "
                       f"database ({tool}) with the packages of each")
            out.append(Finding("conflict", "info", message, (path,), tuple(layers), final.layer))
            continue
        if tool == "rpm":
            hint = (f"{path} is a package database (rpm): the top layer's copy hides the packages the others "
                    "installed, and lamina cannot merge rpm's database; take the rpm layers from one image, "
                    "or rebuild them on a common base")
            message += f"; {hint}"
        elif tool is not None:
            hint = (f"{path} is a package database ({tool}): the top layer's copy hides the packages the "
                    "others installed; rebuild the layers on a common base or merge the databases "
                    "(merge_package_databases)")
            message += f"; {hint}"
        out.append(Finding("conflict", severity, message, (path,), tuple(layers), final.layer, hint=hint))
    return out


def is_replacement(o: Override) -> bool:
    """An override that changes what a lower layer's paths lead to or who may use them: a symlink
    replaced by a directory or a file (what it led to is no longer found through it), or a
    directory whose mode or owner the upper layer's entry changes (directories merge, and the
    upper entry's metadata wins: /tmp loses its 1777, /home/app its owner)."""
    if o.lower.kind == "symlink":
        return o.upper.kind in ("dir", "file")
    return o.lower.kind == "dir" and o.upper.kind == "dir"


def _replacement(stack: Sequence[LayerIndex], o: Override) -> tuple[str, str]:
    """(message, hint) of one replacement."""
    lower, upper = layer_name(stack, o.lower.layer), layer_name(stack, o.upper.layer)
    a, b = o.lower.facts, o.upper.facts
    if o.lower.kind == "symlink":
        hint = ("build that layer on this base, or put its files under the symlink's target; "
                "a Dockerfile COPY follows the symlink")
        message = (f"{upper} replaces the symlink /{o.path} -> {a.linkname} of {lower} with {_kind_name(o.upper)}: "
                   f"what the symlink led to is no longer found at /{o.path}; {hint}")
        return message, hint
    changed = []
    if a.mode != b.mode:
        changed.append(f"mode {a.mode:04o} to {b.mode:04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        changed.append(f"owner {a.uid}:{a.gid} to {b.uid}:{b.gid}")
    hint = "give the directory entry the lower layer's mode and owner, or leave the entry out of the layer"
    message = f"{upper} changes directory /{o.path} of {lower}: {', '.join(changed)}; {hint}"
    return message, hint


def replacements(applied: Applied, policy: Policy) -> list[Finding]:
    """Lower symlinks a layer replaces with a directory or file, and lower directories whose mode or
    owner it changes, where the layer was not built on the lower one in its source image. A layer
    made on top of the stack (the files layer) counts as built on nothing here: it is made to
    follow symlinks and keep directories as they are, so such a change in it is reported too.
    Graded like conflicts (`on_conflict`, `allowed_conflicts`)."""
    if policy.on_conflict == "ignore":
        return []
    stack = applied.fs.stack
    severity = "error" if policy.on_conflict == "error" else "warning"
    seen = set()
    out = []
    for o in applied.overrides:
        upper, lower = stack[o.upper.layer], stack[o.lower.layer]
        built_on = lower.digest in upper.below or lower.diff_id in upper.below_diff_ids
        key = (o.path, o.lower.layer, o.upper.layer)
        if not is_replacement(o) or built_on or key in seen or policy.allows(o.path):
            continue
        if o.path not in applied.fs.nodes:
            continue  # removed again higher up
        seen.add(key)
        message, hint = _replacement(stack, o)
        out.append(Finding("replacement", severity, message, (o.path,), (o.lower.layer, o.upper.layer), hint=hint))
    return out


def whiteouts(applied: Applied) -> list[Finding]:
    """Markers that remove what a layer provided which was not below the marker's layer in its source."""
    stack = applied.fs.stack
    groups: dict[tuple[int, int], list[str]] = {}
    for r in applied.removals:
        if r.node.kind != "dir" and not stack[r.layer].knows(stack[r.node.layer]):
            groups.setdefault((r.layer, r.node.layer), []).append(r.node.path)
    out = []
    for (marker, victim), paths in sorted(groups.items()):
        paths = sorted(set(paths))
        shown = ", ".join("/" + p for p in paths[:SHOWN_PATHS])
        if len(paths) > SHOWN_PATHS:
            shown += f" and {len(paths) - SHOWN_PATHS} more"
        hint = ("its source image removed these from a different lower layer; compose on the base it was "
                "built on, or check that removing them is intended")
        message = (f"{layer_name(stack, marker)} removes {shown}, provided by {layer_name(stack, victim)}, "
                   f"which was not below it in its source image; {hint}")
        out.append(Finding("whiteout", "warning", message, tuple(paths), (victim, marker), hint=hint))
    return out


def hardlinks(applied: Applied) -> list[Finding]:
    """Hard links whose target is neither in their own layer nor in a layer below them in this stack."""
    stack = applied.fs.stack
    out = []
    for b in applied.broken_links:
        problem = ("which is a directory" if b.reason == "directory"
                   else "which is neither in that layer nor in a layer below it in this stack")
        hint = f"add the layer that provides /{b.target} below it (usually the one below it in its source image)"
        message = f"hard link /{b.path} in {layer_name(stack, b.layer)} points to /{b.target}, {problem}; {hint}"
        out.append(Finding("hardlink", "error", message, (b.path, b.target), (b.layer,), hint=hint))
    return out


def package_conflicts(merge_report: Optional[dict], policy: Policy) -> list[Finding]:
    """The packages the layers' databases disagree on (a `lamina package-db-layer` report): graded
    like conflicts (`on_conflict`; `allowed_conflicts` globs match the database's path)."""
    if merge_report is None or policy.on_conflict == "ignore":
        return []
    severity = "error" if policy.on_conflict == "error" else "warning"
    out = []
    for c in merge_report.get("conflicts") or ():
        path = str(c.get("path", ""))
        if not policy.allows(path):
            out.append(Finding("conflict", severity, str(c.get("message", "")), (path,), ()))
    return out


def check(stack: Sequence[LayerIndex], policy: Policy = Policy(), start: Optional[StartConfig] = None,
          merge_report: Optional[dict] = None) -> Report:
    """Every check on a stack of layers (base first), graded by `policy`; with the image's `start`
    config, also whether its entrypoint + cmd would start (and scripts use its PATH); with the
    report of the stack's package database merge, the packages its layers disagree on."""
    from lamina.analyze.deps import missing_libraries
    from lamina.analyze.start import script_interpreters, start_executable, start_findings
    from lamina.analyze.startable import User

    applied = apply(stack)
    fs = applied.fs
    findings = (conflicts(applied, policy) + package_conflicts(merge_report, policy) + replacements(applied, policy)
                + whiteouts(applied) + hardlinks(applied))
    checks_start = start is not None and policy.on_start_failure != "ignore"
    if policy.check_dependencies:
        findings += missing_libraries(fs)
        # A start script's interpreter is reported once, as the start command's problem.
        skip = start_executable(fs, start) if start is not None and checks_start else None
        findings += script_interpreters(fs, start, skip)
    if start is not None and checks_start:
        findings += start_findings(fs, start, policy)
        return Report(fs.stack, tuple(findings), policy, start.argv, User.parse(start.user).describe())
    return Report(fs.stack, tuple(findings), policy)
