"""The `[lamina]` options."""
from __future__ import annotations

from enum import Enum

from pants.option.option_types import BoolOption, EnumOption, StrListOption, StrOption
from pants.option.subsystem import Subsystem
from pants.util.strutil import softwrap


# The special values of `[lamina].lockfile` (the strings Pants' own tools use).
DEFAULT_LOCKFILE = "<default>"
NO_LOCKFILE = "<none>"
# What the built-in lockfile was made for (`./pants generate-lockfiles --resolve=lamina` here).
DEFAULT_REQUIREMENTS = ("zstandard==0.23.0", "urllib3==2.6.3", "docker==7.1.0", "cyclonedx-python-lib==8.9.0",
                        "jsonschema==4.25.1")
DEFAULT_INTERPRETER_CONSTRAINTS = ("CPython==3.9.*",)
# The built-in lockfile, a resource of this package.
BUILTIN_LOCKFILE = ("lamina_pants", "core.lock")


class UnownedArchiveBehavior(Enum):
    error = "error"
    warning = "warning"
    ignore = "ignore"


class PushCompression(Enum):
    gzip = "gzip"
    zstd = "zstd"
    none = "none"


class LaminaSubsystem(Subsystem):
    options_scope = "lamina"
    help = "Options for lamina, which composes container images from layers of existing images."

    interpreter_constraints = StrListOption(
        default=list(DEFAULT_INTERPRETER_CONSTRAINTS),
        help=softwrap(
            """
            Python interpreters that may run the lamina core (layer extraction and composition
            run as sandboxed processes of this interpreter). One minor version by default: the
            core's PEX is part of every lamina process's cache key, so machines that share a
            remote cache must build it for the same interpreter version (the path it is found
            at does not matter). Another version needs a lockfile made for it (see
            `[lamina].lockfile`), e.g. `interpreter_constraints = ["CPython==3.11.*"]`,
            `lockfile = "3rdparty/lamina.lock"`, then `pants generate-lockfiles --resolve=lamina`.
            """
        ),
        advanced=True,
    )
    core_target = StrOption(
        default=None,
        help=softwrap(
            """
            Unset (the default), the lamina core's PEX is built from the `lamina` distribution of
            the plugin's own version (`lamina==<version of lamina-pants>`) and
            `[lamina].requirements`, resolved like any third-party requirement (`[python-repos]`
            indexes and `find_links`): what a repository that installs the plugin with
            `[GLOBAL].plugins = ["lamina-pants==<version>"]` uses.

            Set, it is the address of the target that holds the lamina core's modules (the
            `lamina` package, its tests left out), for working on lamina itself. Its sources and those of its transitive dependencies (`python_sources`,
            `files` or `resources`, source roots stripped) become the core's PEX, with
            `[lamina].requirements` as its third-party requirements, so the PEX (a remote-cache
            key of every lamina process) changes only when those files do.

            A `files` target needs no Python backend and holds exactly its glob, e.g. in
            `src/python/BUILD` (source root `src/python`):

                files(name="core_files", sources=["lamina/**/*.py", "!lamina/**/*_test.py"])

            and in `pants.toml`:

                [lamina]
                core_target = "src/python:core_files"

            A `python_sources` target (e.g. `src/python/lamina:lib`) works too, its dependencies
            inferred from imports; empty `__init__.py` files are then left out.
            """
        ),
    )
    requirements = StrListOption(
        default=list(DEFAULT_REQUIREMENTS),
        help=softwrap(
            """
            Third-party requirements of the lamina core, installed into its PEX from
            `[lamina].lockfile`, which must have been made from exactly these (Pants checks it, see
            `[python].invalid_lockfile_behavior`). Change them only together with a lockfile of
            your own.
            """
        ),
        advanced=True,
    )
    lockfile = StrOption(
        default=DEFAULT_LOCKFILE,
        help=softwrap(
            f"""
            The lockfile the lamina core's third-party requirements are installed from: every
            transitive requirement pinned, with its hashes, so that every machine builds the same
            PEX (the key of every lamina process in a shared remote cache) from the same bytes.

            `{DEFAULT_LOCKFILE}` (the default) is the lockfile shipped inside the lamina-pants
            plugin, made for the default `[lamina].requirements` and
            `[lamina].interpreter_constraints`. A path (relative to the build root) is a lockfile
            of your own, e.g. for another interpreter version or a patched requirement: set
            `lockfile = "3rdparty/lamina.lock"` and run `pants generate-lockfiles --resolve=lamina`
            to write it (again whenever those two options change). `{NO_LOCKFILE}` resolves the
            requirements afresh each time the PEX is built, without pins beyond their own.
            """
        ),
        advanced=True,
    )
    report_io = BoolOption(
        default=False,
        help=softwrap(
            """
            Log how many bytes each lamina process read and wrote (its /proc/self/io counters),
            e.g. `pants --lamina-report-io package ::`. For measuring (the bench uses it); the
            processes it reports on are keyed apart from the usual ones, so they run again.
            """
        ),
        advanced=True,
    )
    push_compression = EnumOption(
        default=PushCompression.gzip,
        help=softwrap(
            """
            How `pants publish` sends layers that are stored uncompressed (those of `docker save`
            archives and of the engine, `docker-daemon:`): compressed first, as `docker push` sends
            them, with `gzip` (the default; every registry and engine reads it) or `zstd` (smaller
            and faster to unpack; needs containerd 1.5+ or Docker 23+ on the pulling side), or
            `none` to send them as they are. Each layer is compressed once, in its own process
            keyed on its bytes, so its compressed digest is stable and a registry that has it is
            sent nothing. The image's config (its diff_ids) is the same whatever is chosen; local
            outputs (`pants package`) keep the uncompressed bytes. Layers that come compressed
            (from a registry, an OCI layout) are sent as they are.
            """
        ),
    )
    unowned_archive_behavior = EnumOption(
        default=UnownedArchiveBehavior.error,
        help=softwrap(
            """
            What to do when an `image` or `base` names an archive or OCI layout by path that no
            target owns: such a file is no edge of Pants' graph, so `pants dependents` and
            `--changed-since=... --changed-dependents=transitive` would not know which images use
            it, and CI would skip an image whose archive changed. `error` (the default) fails,
            naming the file and the line to add to its BUILD file, e.g.
            `file(name="base_tar", source="base.tar")`; `warning` builds it all the same and
            says so; `ignore` builds it silently.
            """
        ),
    )
    platform = StrOption(
        default=None,
        help=softwrap(
            """
            For `composed_image`s with `platforms`: build only this one (`os/arch[/variant]`,
            e.g. `linux/amd64`), as a single-platform image. `output_format="docker-archive"`
            and `"docker-daemon"` hold one platform and need it; `pants run` defaults to this
            machine's platform. Example: `pants --lamina-platform=linux/arm64 package images:app`.
            """
        ),
    )
    require_pinned_sources = BoolOption(
        default=False,
        help=softwrap(
            """
            Fail, instead of warning, when an `image` or `base` names a registry image by tag
            (`docker://host/repo:tag`) rather than by digest (`docker://host/repo@sha256:...`).
            """
        ),
    )
    insecure_registries = StrListOption(
        default=[],
        help=softwrap(
            """
            Registries (`host[:port]`) spoken to over plain HTTP. Loopback registries
            (127.0.0.1, localhost) always are; every other one needs TLS unless listed here.
            """
        ),
    )
    ca_bundle = StrOption(
        default=None,
        help=softwrap(
            """
            A PEM file of certificate authorities to trust for registry TLS, in addition to the
            system's roots and to Docker's per-registry `/etc/docker/certs.d/<host[:port]>/*.crt`
            (and `~/.config/docker/certs.d`), which lamina reads too.
            """
        ),
    )
    registry_env_vars = StrListOption(
        default=["DOCKER_CONFIG", "HOME", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                 "NO_PROXY", "no_proxy"],
        help=softwrap(
            """
            Environment variables lamina's registry and engine processes see, so they find the
            user's Docker credentials (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`,
            including credential helpers), `DOCKER_HOST` and the proxies to use
            (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, in either case, as Docker and pip read them).
            Cached registry extractions do not get `HOME`, `DOCKER_CONFIG` or `XDG_CONFIG_HOME`
            (they would make the key machine-specific): a small per-session step writes where the
            Docker config and certs.d are (paths only) to the named cache `lamina_credentials`,
            and the extractions read them from there. The other variables that are set are part
            of their cache key; a proxy URL reaches them without its `user:password` (a cached
            process's environment is stored in Pants' caches); lookups and `pants publish` get
            everything whole. Add e.g.
            `SSL_CERT_FILE` for a system trust store in an unusual place, or `XDG_CONFIG_HOME`
            for rootless Docker's `certs.d`.
            """
        ),
        advanced=True,
    )

    check_compositions = BoolOption(
        default=True,
        help=softwrap(
            """
            Scan every layer (once, cached) and check each composed image for conflicts,
            whiteouts that delete other images' files, broken hard links and missing shared
            libraries. Turn off only to measure what the checks cost.
            """
        ),
        advanced=True,
    )

    def registry_args(self) -> tuple[str, ...]:
        args = [f"--insecure={h}" for h in self.insecure_registries]
        if self.ca_bundle:
            args.append(f"--ca-bundle={self.ca_bundle}")
        if self.require_pinned_sources:
            args.append("--require-pinned")
        return tuple(args)
