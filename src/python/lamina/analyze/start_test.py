from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pytest

from lamina.analyze.check import check
from lamina.analyze.index import LayerIndex
from lamina.analyze.report import Finding, Policy, Report
from lamina.analyze.start import StartConfig, start_config_of_spec
from lamina.analyze.startable import Shebang, User
from lamina.cli import main
from lamina.errors import SpecError
from lamina_testing.elffiles import make_elf
from lamina_testing.images import FakeImage, FakeLayer, FileValue, write_oci_dir
from lamina_testing.stacks import indexes

LOADER = "/lib/ld-musl-x86_64.so.1"
STATIC = make_elf(type="exec")
DYNAMIC = make_elf(type="exec", interp=LOADER)
# A busybox-like shell layer: /bin/sh is a relative symlink to a static binary.
SHELL = {"bin/": None, "bin/busybox": STATIC, "bin/sh": "->busybox",
         "usr/": None, "usr/bin/": None, "usr/bin/env": "->/bin/busybox"}
LIBC = {"lib/": None, "lib/ld-musl-x86_64.so.1": make_elf(soname="libc.musl-x86_64.so.1")}
TOOLS = {"usr/": None, "usr/local/": None, "usr/local/bin/": None,
         "usr/local/bin/greet": b"#!/bin/sh\necho hello\n"}
GREET = StartConfig(cmd=("/usr/local/bin/greet",))


def _stack(*layers: Mapping[str, FileValue]) -> tuple[LayerIndex, ...]:
    """Each layer from its own image (as composed layers are), so none knows the others."""
    return tuple(i for n, files in enumerate(layers) for i in indexes(FakeImage([FakeLayer(dict(files))]), f"img{n}"))


def _start(stack: Sequence[LayerIndex], start: StartConfig, policy: Policy = Policy()) -> list[Finding]:
    return list(check(stack, policy, start).of_kind("start"))


def _with_mode(stack: Sequence[LayerIndex], path: str, mode: int, uid: int = 0, gid: int = 0) -> tuple[LayerIndex, ...]:
    out = []
    for layer in stack:
        entries = tuple(dataclasses.replace(e, mode=mode, uid=uid, gid=gid) if e.path == path else e
                        for e in layer.entries)
        out.append(dataclasses.replace(layer, entries=entries))
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# The start command
# ----------------------------------------------------------------------------------------------


def test_a_sh_script_cmd_without_sh_is_reported_and_the_shell_layer_clears_it() -> None:
    (finding,) = _start(_stack(TOOLS), GREET)
    assert finding.severity == "warning" and finding.layers == (0,)
    assert finding.message.startswith('start command ["/usr/local/bin/greet"]: /usr/local/bin/greet from '
                                      "[0] img0 layer 0 (sha256:")
    assert "is a '#!/bin/sh' script and its interpreter is missing: no layer provides /bin/sh" in finding.message
    assert finding.message.endswith("; add the layer that provides it, or set the image's entrypoint/cmd to a "
                                    "program the image has")
    assert _start(_stack(SHELL, TOOLS), GREET) == []


def test_under_the_error_policy_a_start_failure_fails_the_check() -> None:
    report = check(_stack(TOOLS), Policy(on_start_failure="error"), GREET)
    (finding,) = report.errors
    assert finding.kind == "start"
    summary = report.error_summary().splitlines()
    assert summary[0] == "composition check failed: 1 start command that cannot start:"
    assert summary[1] == "  error: " + finding.message
    assert check(_stack(SHELL, TOOLS), Policy(on_start_failure="error"), GREET).errors == ()
    assert check(_stack(TOOLS), Policy(on_start_failure="ignore"), GREET).of_kind("start") == ()


def test_a_bare_name_is_found_on_the_image_path() -> None:
    stack = _stack(SHELL, TOOLS)
    assert _start(stack, StartConfig(cmd=("greet",))) == []  # Docker's default PATH has /usr/local/bin
    assert _start(stack, StartConfig(cmd=("greet",), env=("PATH=/usr/local/bin:/bin",))) == []
    (finding,) = _start(stack, StartConfig(cmd=("greet",), env=("PATH=/opt/bin:/bin",)))
    assert finding.message.startswith("start command [\"greet\"]: 'greet' is not on PATH (/opt/bin:/bin); add")
    # Entrypoint first, cmd as its arguments: what runs is the entrypoint.
    assert _start(stack, StartConfig(entrypoint=("sh", "-c"), cmd=("nothing-like-this",))) == []


def test_a_relative_path_is_relative_to_the_working_directory() -> None:
    stack = _stack(SHELL, TOOLS)
    assert _start(stack, StartConfig(cmd=("./greet",), workdir="/usr/local/bin")) == []
    (finding,) = _start(stack, StartConfig(cmd=("./greet",), workdir="/app"))
    assert "no layer provides /app/greet" in finding.message


def test_env_scripts_need_their_program_on_path() -> None:
    python = {"usr/": None, "usr/bin/": None, "usr/bin/python3": STATIC}
    app = {"app/": None, "app/main.py": b"#!/usr/bin/env python3\nprint('hi')\n"}
    start = StartConfig(cmd=("/app/main.py",))
    (finding,) = _start(_stack(SHELL, app), start)
    assert "is a '#!/usr/bin/env python3' script and 'python3' is not on PATH (/usr/local/sbin:" in finding.message
    assert _start(_stack(SHELL, app), start, Policy(check_dependencies=False)) != []  # not a dependency check
    assert _start(_stack(SHELL, python, app), start) == []
    # env itself must be there too.
    (finding,) = _start(_stack({"bin/": None, "bin/sh": STATIC}, python, app), start)
    assert "its interpreter is missing: no layer provides /usr/bin/env" in finding.message
    # `env -S` splits its argument; without it the whole rest of the line is one name.
    split = {"app/": None, "app/main.py": b"#!/usr/bin/env -S python3 -u\n"}
    assert _start(_stack(SHELL, python, split), start) == []
    (finding,) = _start(_stack(SHELL, python, {"app/": None, "app/main.py": b"#!/usr/bin/env python3 -u\n"}), start)
    assert "'python3 -u' is not on PATH" in finding.message


def test_an_elf_cmd_whose_loader_is_missing_is_reported() -> None:
    app = {"usr/": None, "usr/bin/": None, "usr/bin/app": DYNAMIC}
    start = StartConfig(entrypoint=("/usr/bin/app",))
    (finding,) = _start(_stack(app), start)
    assert finding.message.startswith('start command ["/usr/bin/app"]: /usr/bin/app from [0] img0 layer 0')
    assert f"is an ELF executable and its ELF interpreter {LOADER} is missing" in finding.message
    assert _start(_stack(LIBC, app), start) == []
    assert _start(_stack({"bin/": None, "bin/app": STATIC}), StartConfig(cmd=("/bin/app",))) == []


def test_a_script_whose_interpreter_cannot_run_is_reported_as_deep_as_it_goes() -> None:
    # /bin/sh is there but is a dynamic ELF whose loader is missing.
    shell = {"bin/": None, "bin/sh": DYNAMIC}
    (finding,) = _start(_stack(shell, TOOLS), GREET)
    assert "is a '#!/bin/sh' script and its interpreter /bin/sh from [0] img0 layer 0" in finding.message
    assert f"its ELF interpreter {LOADER} is missing" in finding.message
    assert _start(_stack(LIBC, shell, TOOLS), GREET) == []


@pytest.mark.parametrize("files, problem", [
    ({"usr/": None, "usr/local/": None, "usr/local/bin/": None, "usr/local/bin/greet/": None}, "is a directory"),
    ({"usr/": None, "usr/local/": None, "usr/local/bin/": None, "usr/local/bin/greet": b"echo hi\n"},
     "is neither an ELF executable nor a #! script, so the kernel refuses it (exec format error)"),
    ({"usr/": None, "usr/local/": None, "usr/local/bin/": None, "usr/local/bin/greet": "->gone"},
     "/usr/local/bin/greet is a symlink to gone in [1] img1 layer 0"),
    ({"usr/": None, "usr/local/": None, "usr/local/bin/": None, "usr/local/bin/greet": b"#!/bin/sh\r\necho\n"},
     "no layer provides /bin/sh\r (the script has Windows line endings"),
], ids=["directory", "not-a-script", "dangling-symlink", "crlf"])
def test_what_is_wrong_with_the_start_file_is_named(files: Mapping[str, FileValue], problem: str) -> None:
    (finding,) = _start(_stack(SHELL, files), GREET)
    assert problem in finding.message, finding.message


def test_an_old_index_without_hash_bang_lines_does_not_call_a_script_unrunnable() -> None:
    old = tuple(dataclasses.replace(l, shebangs=False, entries=tuple(dataclasses.replace(e, shebang="") for e in l.entries))
                for l in _stack(TOOLS))
    assert check(old, Policy(), GREET).findings == ()


def test_execute_permission_is_checked_for_the_user() -> None:
    stack = _with_mode(_stack(SHELL, TOOLS), "usr/local/bin/greet", 0o744, uid=0, gid=0)
    assert _start(stack, GREET) == []  # root: one execute bit is enough
    (finding,) = _start(stack, dataclasses.replace(GREET, user="1000:1000"))
    assert "is not executable for user '1000:1000' (mode 0744, owner 0:0)" in finding.message
    assert _start(_with_mode(stack, "usr/local/bin/greet", 0o744, uid=1000), dataclasses.replace(GREET, user="1000")) == []
    assert _start(_with_mode(stack, "usr/local/bin/greet", 0o754, gid=50), dataclasses.replace(GREET, user="7:50")) == []
    (finding,) = _start(_with_mode(stack, "usr/local/bin/greet", 0o644), GREET)
    assert "is not executable for user root (no User set) (mode 0644" in finding.message
    # A name: no uid without /etc/passwd, so any execute bit counts, and the report says so.
    report = check(stack, Policy(), dataclasses.replace(GREET, user="app"))
    assert report.of_kind("start") == ()
    assert "starts: [\"/usr/local/bin/greet\"] as user 'app' (a name: without /etc/passwd lamina cannot tell its uid, " \
           "so any execute bit counts)" in report.text()


def test_an_image_without_a_start_command_has_nothing_to_report() -> None:
    report = check(_stack({"data/": None, "data/x": b"x"}), Policy(), StartConfig())
    assert report.findings == () and report.start == ()
    lines = report.text().splitlines()
    assert "starts: nothing (no entrypoint or cmd) as user root (no User set)" in lines
    assert lines[-1] == "start command: none"
    assert report.to_json()["start"] == {"argv": [], "user": "root (no User set)"}
    assert "start command: none" not in check(_stack({"x": b"x"})).text()  # no config given: not checked


# ----------------------------------------------------------------------------------------------
# The scripts layers add
# ----------------------------------------------------------------------------------------------


def _scripts(report: Report) -> list[Finding]:
    return list(report.of_kind("interpreter"))


def test_a_script_whose_interpreter_no_layer_provides_is_a_warning() -> None:
    (finding,) = _scripts(check(_stack(TOOLS)))
    assert finding.severity == "warning" and finding.paths == ("usr/local/bin/greet",) and finding.layers == (0,)
    assert finding.message == (f"/usr/local/bin/greet from [0] img0 layer 0 ({check(_stack(TOOLS)).stack[0].digest[:19]}) "
                               "is a '#!/bin/sh' script and its interpreter is missing: no layer provides /bin/sh; "
                               "add the layer that provides its interpreter, or drop the script")
    assert _scripts(check(_stack(SHELL, TOOLS))) == []
    assert _scripts(check(_stack(TOOLS), Policy(check_dependencies=False))) == []
    # A script without an execute bit is not exec'd: no finding.
    assert _scripts(check(_with_mode(_stack(TOOLS), "usr/local/bin/greet", 0o644))) == []


def test_the_start_script_is_reported_once_as_the_start_command() -> None:
    report = check(_stack(TOOLS), Policy(), GREET)
    assert [f.kind for f in report.findings] == ["start"]
    other = check(_stack(TOOLS), Policy(on_start_failure="ignore"), GREET)
    assert [f.kind for f in other.findings] == ["interpreter"]


def test_env_scripts_of_layers_use_the_image_path() -> None:
    tool = {"opt/": None, "opt/tool": b"#!/usr/bin/env node\n", "opt/node": STATIC}
    (finding,) = _scripts(check(_stack(SHELL, tool)))
    assert "'node' is not on PATH (/usr/local/sbin:" in finding.message
    assert _scripts(check(_stack(SHELL, tool), Policy(), StartConfig(env=("PATH=/opt:/bin",)))) == []


# ----------------------------------------------------------------------------------------------
# Parsing and the image config
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, interpreter, argument, program", [
    ("#!/bin/sh", "/bin/sh", "", None),
    ("#! /bin/bash -e ", "/bin/bash", "-e", None),
    ("#!/usr/bin/env python3", "/usr/bin/env", "python3", "python3"),
    ("#!/usr/bin/env -S  deno run -A", "/usr/bin/env", "-S  deno run -A", "deno"),
    ("#!/usr/bin/env -S A=1 node", "/usr/bin/env", "-S A=1 node", "node"),
    ("#!/usr/bin/env -i python", "/usr/bin/env", "-i python", None),
    ("#!", "", "", None),
], ids=["sh", "blank-and-arg", "env", "env-S", "env-S-assignment", "env-option", "empty"])
def test_shebang_lines_split_as_the_kernel_splits_them(line: str, interpreter: str, argument: str,
                                                       program: Optional[str]) -> None:
    shebang = Shebang.parse(line)
    assert (shebang.interpreter, shebang.argument, shebang.env_program()) == (interpreter, argument, program)


@pytest.mark.parametrize("text, uid, gid", [("", 0, 0), ("0", 0, None), ("1000:50", 1000, 50), ("app", None, None),
                                            ("app:staff", None, None), ("1000:staff", 1000, None)])
def test_users_parse(text: str, uid: Optional[int], gid: Optional[int]) -> None:
    user = User.parse(text)
    assert (user.uid, user.gid, user.named) == (uid, gid, uid is None)


def test_the_start_config_comes_from_the_base_config_and_the_overrides(tmp_path: Path) -> None:
    base = FakeImage([FakeLayer(SHELL)], config_extra={"config": {
        "Env": ["PATH=/bin", "A=1"], "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "WorkingDir": "/w",
        "User": "app"}})
    write_oci_dir(base, str(tmp_path / "base"))
    inherited = start_config_of_spec({"base": {"source": str(tmp_path / "base")}})
    assert inherited == StartConfig(("/bin/sh", "-c"), ("echo hi",), ("PATH=/bin", "A=1"), "/w", "app")
    assert inherited.path == ("/bin",)
    # A new entrypoint drops the inherited cmd, as `lamina compose` (and a Dockerfile) does.
    new = start_config_of_spec({"base": {"source": str(tmp_path / "base")},
                                "config": {"entrypoint": ["/app"], "env": {"PATH": "/usr/bin"}, "user": "1:1"}})
    assert new == StartConfig(("/app",), (), ("PATH=/usr/bin", "A=1"), "/w", "1:1")
    scratch = start_config_of_spec({"base": "scratch", "platform": "linux/amd64", "config": {"cmd": ["greet"]}})
    assert scratch == StartConfig(cmd=("greet",)) and scratch.path[-1] == "/bin"
    with pytest.raises(SpecError, match="on_start_failure 'sometimes' is not one of warn, error, ignore"):
        Policy(on_start_failure="sometimes")


def test_check_cli_takes_the_image_spec_and_the_start_policy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lamina.analyze.index import write_index

    write_index(_stack(TOOLS), str(tmp_path / "tools.json"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": "scratch", "platform": "linux/amd64",
                                "config": {"cmd": ["/usr/local/bin/greet"]}}))
    argv = ["check", "--index", str(tmp_path / "tools.json"), "--image-spec", str(spec)]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[out.index("start command (1):") + 1].startswith('  warning: start command ["/usr/local/bin/greet"]: ')
    assert main([*argv, "--on-start-failure", "error", "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "lamina: error: composition check failed: 1 start command that cannot start:"
    assert "no layer provides /bin/sh" in err[1]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["policy"]["on_start_failure"] == "error" and doc["start"]["argv"] == ["/usr/local/bin/greet"]
    assert doc["counts"]["start"] == 1 and doc["errors"] == 1
