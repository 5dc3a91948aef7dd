"""What the kernel needs to exec a file of the final filesystem (permission, an ELF's loader and
libraries, a script's `#!` interpreter), and finding a program on PATH as the engine does."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Optional

from lamina.analyze.deps import unresolved
from lamina.analyze.stackfs import FileSystem, Node
from lamina.analyze.index import IndexEntry
from lamina.analyze.report import layer_name

# The PATH the engine gives a container whose image sets none (Docker's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_INTERPRETERS = 4  # the kernel follows at most this many `#!` interpreters (BINPRM_MAX_RECURSION)
ANY_EXEC = 0o111


@dataclass(frozen=True)
class User:
    """The image's `User`, as far as the index tells: a name has no uid without /etc/passwd."""

    text: str
    uid: Optional[int]  # None: a name
    gid: Optional[int]  # None: a name, or not given with a uid (the engine takes it from /etc/passwd)

    @staticmethod
    def parse(text: str) -> User:
        if not text:
            return User("", 0, 0)  # the engine's default: root
        user, _, group = text.partition(":")
        uid = int(user) if user.isdigit() else None
        gid = int(group) if group.isdigit() else None
        return User(text, uid, gid)

    @property
    def named(self) -> bool:
        return self.uid is None

    def describe(self) -> str:
        if not self.text:
            return "root (no User set)"
        if self.named:
            return f"{self.text!r} (a name: without /etc/passwd lamina cannot tell its uid, so any execute bit counts)"
        return repr(self.text)

    def may_exec(self, entry: IndexEntry) -> bool:
        """Whether this user may exec a file of this mode and owner (supplementary groups unknown)."""
        mode = entry.mode
        if self.uid is None or self.uid == 0:
            return bool(mode & ANY_EXEC)  # root needs one execute bit; a name: any bit may be its
        if entry.uid == self.uid:
            return bool(mode & 0o100)
        if self.gid is None:
            return bool(mode & 0o011)
        return bool(mode & (0o010 if entry.gid == self.gid else 0o001))


@dataclass(frozen=True)
class Shebang:
    """A `#!` line split as Linux splits it: the interpreter, then the rest as one argument."""

    line: str
    interpreter: str
    argument: str

    @staticmethod
    def parse(line: str) -> Shebang:
        text = line[2:].strip(" \t")  # not '\r': "#!/bin/sh\r" names "/bin/sh\r", as the kernel reads it
        interpreter, _, argument = text.replace("\t", " ").partition(" ")
        return Shebang(line, interpreter, argument.strip(" \t"))

    def env_program(self) -> Optional[str]:
        """For `#!/usr/bin/env NAME`: the NAME env runs (with `-S`, the first word that is not an
        option or an assignment); None when the interpreter is not env or the name is unknowable."""
        if posixpath.basename(self.interpreter) != "env" or not self.argument:
            return None
        arg = self.argument
        if arg.startswith("-S"):
            words = arg[2:].split()
            names = [w for w in words if not w.startswith("-") and "=" not in w]
            return names[0] if names else None
        if arg.startswith("-"):
            return None  # other env options: what runs depends on how env splits them
        return arg  # one argument, blanks and all: env looks for exactly this name


@dataclass(frozen=True)
class ExecContext:
    fs: FileSystem
    path: tuple[str, ...]  # PATH's directories
    workdir: str
    user: User

    def absolute(self, name: str) -> str:
        return name if name.startswith("/") else posixpath.normpath(posixpath.join(self.workdir or "/", name))

    def lookup(self, name: str) -> tuple[str, Optional[Node]]:
        """(the path the engine execs for `name`, its node or None): a name with a '/' is taken as a
        path (relative to the working directory); a bare name is searched on PATH for an
        executable regular file, as the engine's lookup does."""
        if "/" in name:
            path = self.absolute(name)
            return path, self.fs.resolve(path)
        for d in self.path:
            if not d.startswith("/"):
                continue  # relative PATH entries: the engine refuses what they find
            candidate = posixpath.join(d, name)
            node = self.fs.resolve(candidate)
            if node is not None and node.kind == "file" and node.facts.mode & ANY_EXEC:
                return candidate, node
        return name, None

    def where(self, path: str, node: Node) -> str:
        """"/bin/sh (-> /bin/busybox) from [0] base layer 0 (sha256:...)"."""
        via = f" (-> /{node.path})" if node.path != path.strip("/") else ""
        return f"{path}{via} from {layer_name(self.fs.stack, node.layer)}"

    def absent(self, path: str) -> str:
        """Why `path` leads nowhere: a dangling symlink, or nothing at all."""
        node = self.fs.get(path)
        if node is not None and node.kind == "symlink":
            return (f"{path} is a symlink to {node.entry.linkname} in {layer_name(self.fs.stack, node.layer)}, "
                    "which leads nowhere")
        return f"no layer provides {path}"

    def problem(self, node: Node, depth: int = 0, deep: bool = True) -> str:
        """Why the kernel would not exec this node for this user ("" when it would). `deep`: also
        an ELF's loader and libraries and the interpreter's own needs; else only that a script's
        interpreter is there and executable."""
        facts = node.facts
        if node.kind == "dir":
            return "is a directory"
        if node.kind == "hardlink":
            return f"is a hard link to /{facts.linkname}, which is not in the stack"
        if node.kind != "file":
            return "is not a regular file"
        if not self.user.may_exec(facts):
            return (f"is not executable for user {self.user.describe()} "
                    f"(mode {facts.mode:04o}, owner {facts.uid}:{facts.gid})")
        if facts.elf is not None:
            if not deep:
                return ""
            if facts.elf.type not in ("exec", "dyn"):
                return f"is an ELF {facts.elf.type} file, not an executable"
            missing = unresolved(self.fs, node)
            libs = [m for m in missing if m != facts.elf.interp]
            parts = []
            if facts.elf.interp and facts.elf.interp in missing:
                parts.append(f"its ELF interpreter {facts.elf.interp} is missing")
            if libs:
                parts.append(f"{', '.join(libs)} not found on its library path")
            return "is an ELF executable and " + " and ".join(parts) if parts else ""
        if facts.shebang:
            return self.script_problem(facts.shebang, depth, deep)
        if not self.fs.stack[node.layer].shebangs:
            return ""  # an index made before `#!` lines were recorded: cannot tell
        return "is neither an ELF executable nor a #! script, so the kernel refuses it (exec format error)"

    def script_problem(self, line: str, depth: int = 0, deep: bool = True) -> str:
        """Why a script with this `#!` line would not start ("" when it would)."""
        shebang = Shebang.parse(line)
        what = f"is a {line!r} script"
        if not shebang.interpreter:
            return f"{what} that names no interpreter"
        if depth >= MAX_INTERPRETERS:
            return f"{what}: more than {MAX_INTERPRETERS} nested interpreters, which the kernel refuses"
        path = self.absolute(shebang.interpreter)
        node = self.fs.resolve(path)
        if node is None:
            crlf = " (the script has Windows line endings: \\r ends its #! line)" if path.endswith("\r") else ""
            return f"{what} and its interpreter is missing: {self.absent(path)}{crlf}"
        problem = self.problem(node, depth + 1, deep)
        if problem:
            return f"{what} and its interpreter {self.where(path, node)} {problem}"
        program = shebang.env_program()
        if program is None:
            return ""
        found, program_node = self.lookup(program)
        if program_node is None:
            if "/" in program:
                return f"{what} and env's program is missing: {self.absent(found)}"
            return f"{what} and {program!r} is not on PATH ({':'.join(self.path)})"
        problem = self.problem(program_node, depth + 1, deep)
        return f"{what} and env's program {self.where(found, program_node)} {problem}" if problem else ""
