"""Whether the image can start: its entrypoint + cmd resolved as the engine would, and the `#!`
interpreter of every script the stack holds."""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from lamina.analyze.stackfs import FileSystem
from lamina.analyze.report import Finding, Policy, layer_name
from lamina.analyze.startable import ANY_EXEC, DEFAULT_PATH, ExecContext, User
from lamina.errors import SpecError


@dataclass(frozen=True)
class StartConfig:
    """What of an image config decides how a container starts."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "NAME=value", as the config lists them
    workdir: str = ""
    user: str = ""

    @property
    def argv(self) -> tuple[str, ...]:
        """What the engine execs: the entrypoint, then the cmd as its arguments (a shell form is
        already `["/bin/sh", "-c", "..."]` in a config)."""
        return self.entrypoint + self.cmd

    @property
    def path(self) -> tuple[str, ...]:
        value = DEFAULT_PATH
        for item in self.env:  # the last PATH= wins, as in the engine
            name, _, rest = item.partition("=")
            if name == "PATH":
                value = rest
        return tuple(value.split(":"))

    def context(self, fs: FileSystem) -> ExecContext:
        return ExecContext(fs, self.path, self.workdir, User.parse(self.user))

    @staticmethod
    def from_image_config(config: Mapping[str, Any]) -> StartConfig:
        """From an image config (its `config` object: Entrypoint, Cmd, Env, WorkingDir, User)."""
        c = config.get("config")
        c = c if isinstance(c, dict) else {}

        def strings(key: str) -> tuple[str, ...]:
            value = c.get(key)
            return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

        def string(key: str) -> str:
            value = c.get(key)
            return value if isinstance(value, str) else ""

        return StartConfig(strings("Entrypoint"), strings("Cmd"), strings("Env"), string("WorkingDir"), string("User"))


def start_config_of_spec(data: Any) -> StartConfig:
    """The start config of the image a compose spec makes: its base's config (opened, no layer
    bytes read) with the spec's config overrides, applied as `lamina compose` applies them."""
    from lamina.compose import compose
    from lamina.sources import open_image
    from lamina.spec import parse_spec

    spec = parse_spec(data)
    base = open_image(spec.base.source, platform=spec.platform) if spec.base is not None else None
    image = compose(base, (), overrides=spec.config, platform=spec.platform, allow_platform_mismatch=True)
    try:
        return StartConfig.from_image_config(json.loads(image.config_bytes))
    except ValueError as e:  # compose wrote it: not expected
        raise SpecError(f"the composed config is not JSON ({e})") from e


def start_findings(fs: FileSystem, start: StartConfig, policy: Policy) -> list[Finding]:
    """One finding when the start command would not start: argv[0] missing, not an executable
    regular file for the image's user, an ELF missing its loader or libraries, or a script whose
    interpreter is missing."""
    argv = start.argv
    if not argv or policy.on_start_failure == "ignore":
        return []  # no start command: an image to build on, or run with a command given
    severity = "error" if policy.on_start_failure == "error" else "warning"
    ctx = start.context(fs)
    shown = "start command " + json.dumps(list(argv))
    name = argv[0]
    hint = "add the layer that provides it, or set the image's entrypoint/cmd to a program the image has"
    if not name:
        return [Finding("start", severity, f"{shown}: its program name is empty; {hint}", (), ())]
    path, node = ctx.lookup(name)
    if node is None:
        if "/" in name:
            problem = ctx.absent(path)
        else:
            problem = f"{name!r} is not on PATH ({':'.join(ctx.path)})"
            found = [posixpath.join(d, name) for d in ctx.path if d.startswith("/") and fs.resolve(posixpath.join(d, name))]
            if found:
                problem += f"; {found[0]} is there but is not an executable file"
        return [Finding("start", severity, f"{shown}: {problem}; {hint}", (path.lstrip("/"),), (), hint=hint)]
    problem = ctx.problem(node)
    if not problem:
        return []
    message = f"{shown}: {ctx.where(path, node)} {problem}; {hint}"
    return [Finding("start", severity, message, (path.lstrip("/"), node.path), (node.layer,), hint=hint)]


def start_executable(fs: FileSystem, start: StartConfig) -> Optional[str]:
    """The path of the file the start command execs, if it is there."""
    if not start.argv or not start.argv[0]:
        return None
    _, node = start.context(fs).lookup(start.argv[0])
    return node.path if node is not None else None


def script_interpreters(fs: FileSystem, start: Optional[StartConfig], skip: Optional[str] = None) -> list[Finding]:
    """A warning per executable `#!` script whose interpreter (or env's program, on the image's
    PATH) the stack does not provide; `skip` is a path reported elsewhere (the start command)."""
    ctx = (start or StartConfig()).context(fs)
    out = []
    for path in sorted(fs.nodes):
        node = fs.nodes[path]
        facts = node.facts
        if node.kind != "file" or not facts.shebang or not facts.mode & ANY_EXEC or path == skip:
            continue  # a script without an execute bit is read by a shell, not exec'd
        problem = ctx.script_problem(facts.shebang, deep=False)
        if not problem:
            continue
        hint = "add the layer that provides its interpreter, or drop the script"
        message = f"/{path} from {layer_name(fs.stack, node.layer)} {problem}; {hint}"
        out.append(Finding("interpreter", "warning", message, (path,), (node.layer,), hint=hint))
    return out
