"""The `docker_layer` and `composed_image` targets: one Field per BUILD argument, validated on parse."""
from __future__ import annotations

import re
from typing import Any, ClassVar, Iterable, Mapping, Optional, Union

from pants.core.goals.package import OutputPathField
from pants.engine.addresses import Address
from pants.engine.target import (
    Dependencies,
    COMMON_TARGET_FIELDS,
    BoolField,
    DictStringToStringField,
    Field,
    InvalidFieldException,
    SpecialCasedDependencies,
    StringField,
    StringSequenceField,
    Target,
)
from pants.util.frozendict import FrozenDict
from pants.util.strutil import help_text

from lamina.errors import SelectorError
from lamina.model import Platform
from lamina.select import SELECTOR_HELP, parse_selector

IMAGE_FORMS = """
        - `"image-a.tar"`: a `docker save` archive or an OCI archive, relative to this BUILD file's
          directory (a bare path is sniffed; a directory must be an OCI layout);
        - `"docker-archive:images/all.tar:image-a:latest"`: one image of a multi-image archive;
        - `"oci:layout-dir"` or `"oci-archive:image.tar"`, optionally with `:REF`;
        - `":target"` or `"//path/to:target"`: another target that packages an image (a `composed_image`);
        - `"docker-daemon:image-a:latest"`: an image in the local Docker engine (`DOCKER_HOST`),
          looked up once per run and exported only when its image ID changed;
        - `"docker://HOST[:PORT]/REPO@sha256:..."`: an image in a registry; only the selected
          layers' blobs are fetched. A `:tag` works too, with a warning naming the digest to pin:
          it is looked up once per run and extracted again only when the digest it names changed.
"""

_TRANSPORTS = ("docker-archive:", "oci:", "oci-archive:", "docker-daemon:", "docker://")


def image_value_error(value: str) -> Optional[str]:
    """Why an image source value is malformed, or None."""
    if not value.strip():
        return "is empty"
    if value.startswith("docker-daemon:") and len(value) == len("docker-daemon:"):
        return "names no image after docker-daemon:"
    if value.startswith("docker://") and "/" not in value[len("docker://"):]:
        return "needs HOST[:PORT]/REPO after docker://"
    if value.startswith("/") and not value.startswith("//"):
        return "is an absolute path; write it relative to the BUILD file's directory"
    return None


IMAGE_MAP_HELP = """
        Or, for a multi-platform `composed_image` (`platforms`) whose sources are single-platform
        images, a map from platform to one of those: `{"linux/amd64": "a-amd64.tar",
        "linux/arm64": "a-arm64.tar"}`; each platform's build takes its own.
"""


class _ImageSourceField(Field):
    """An image source: a string, or a map from platform (`os/arch[/variant]`) to one."""

    required = True
    value: Union[str, FrozenDict[str, str]]

    @classmethod
    def _check(cls, value: Any, address: Address, where: str) -> str:
        if not isinstance(value, str):
            raise InvalidFieldException(
                f"The {repr(cls.alias)} field in target {address}{where} must be a string, not {value!r}. "
                f"Use one of these forms:{IMAGE_FORMS}"
            )
        problem = image_value_error(value)
        if problem and not (cls.allows_scratch and value == "scratch" and not where):
            raise InvalidFieldException(
                f"The {repr(cls.alias)} field in target {address}{where} {problem}: {value!r}. "
                f"Use one of these forms:{IMAGE_FORMS}"
            )
        return value

    @classmethod
    def compute_value(cls, raw_value: Any, address: Address) -> Union[str, FrozenDict[str, str]]:
        value = super().compute_value(raw_value, address)
        if isinstance(value, Mapping):
            if not value:
                raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address} is an empty map; "
                                            'map each platform to its image, e.g. {"linux/amd64": "a-amd64.tar"}')
            out = {}
            seen: dict[str, str] = {}
            for key, item in value.items():
                try:
                    normal = str(Platform.parse(key).normalized())
                except (ValueError, AttributeError):
                    raise InvalidFieldException(
                        f"The {repr(cls.alias)} field in target {address}: {key!r} is not a platform; the keys of "
                        'its map are `os/arch[/variant]`, e.g. {"linux/arm64": "a-arm64.tar"}') from None
                if normal in seen:
                    raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address} maps {key!r} and "
                                                f"{seen[normal]!r}, the same platform; keep one")
                seen[normal] = key
                out[key] = cls._check(item, address, f" (for {key})")
            return FrozenDict(sorted(out.items()))
        return cls._check(value, address, "")

    def values(self) -> tuple[str, ...]:
        """Every image it names (one, or each platform's)."""
        return tuple(self.value.values()) if isinstance(self.value, FrozenDict) else (self.value,)

    def for_platform(self, platform: Optional[str], address: Address) -> str:
        """The image for `platform`: the one string, or the map's entry for it."""
        if not isinstance(self.value, FrozenDict):
            return self.value
        keys = ", ".join(self.value)
        if not platform:
            raise InvalidFieldException(
                f"The {repr(self.alias)} field in target {address} maps platforms ({keys}) to images, and the "
                "image being built names no platform: set `platforms` (or `platform`) on the composed_image")
        wanted = Platform.parse(platform)
        for key, image in self.value.items():
            if wanted.matches(Platform.parse(key)) and Platform.parse(key).matches(wanted):
                return image
        raise InvalidFieldException(
            f"The {repr(self.alias)} field in target {address} names no image for {platform} (it maps {keys}); "
            f'add one, e.g. "{platform}": "image-{wanted.architecture}.tar"')

    allows_scratch: ClassVar[bool] = False


class DockerLayerImageField(_ImageSourceField):
    alias = "image"
    help = help_text(
        f"""
        The image to take the layer from. One of:
        {IMAGE_FORMS}
        Example: `docker_layer(name="curl", image="image-a.tar", layer=-1)`.
        {IMAGE_MAP_HELP}
        """
    )


class DockerLayerSelectorField(StringField):
    alias = "layer"
    required = True
    help = help_text(
        f"""
        Which layer(s) of `image` to take: {SELECTOR_HELP}.

        Examples: `layer=-1` (the top layer), `layer="sha256:08e204ff"`,
        `layer="created_by=apt-get install.*gcc"`, `layer="path=/usr/bin/curl"`, `layer="2:"`.
        A selector that matches no layer, or more than one, fails the build with a list of the
        image's layers.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Any, address: Address) -> str:  # type: ignore[override]
        if isinstance(raw_value, bool) or not isinstance(raw_value, (int, str)):
            raise InvalidFieldException(
                f"The {repr(cls.alias)} field in target {address} must be an int or a string, "
                f"not {raw_value!r}. Use {SELECTOR_HELP}."
            )
        if raw_value is None:
            raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address} is required.")
        try:
            return str(parse_selector(raw_value))
        except SelectorError as e:
            raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address}: {e}") from None


class LaminaDependenciesField(Dependencies):
    help = help_text(
        """
        Addresses this target depends on besides those lamina infers. lamina infers a dependency
        on the target named by `image`/`base` (`":target"`), and on the `file`/`resource` target
        that owns an archive or OCI layout named by path, so `pants dependents`, `peek` and
        `--changed-since ... --changed-dependents=transitive` know which images use it.
        """
    )


class DockerLayerTarget(Target):
    alias = "docker_layer"
    core_fields = (*COMMON_TARGET_FIELDS, LaminaDependenciesField, DockerLayerImageField, DockerLayerSelectorField)
    help = help_text(
        """
        One or more layers taken from an existing image, byte for byte.

        Each `docker_layer` is extracted once by its own sandboxed process and cached by Pants
        (locally, and remotely when configured), keyed on the source image's content and the
        selector. `composed_image` targets stack them.

        Example:

            docker_layer(name="curl", image="image-a.tar", layer=-1)
            docker_layer(name="gcc", image="image-b.tar", layer="created_by=apt-get install.*gcc")
        """
    )


class ComposedImageBaseField(_ImageSourceField):
    alias = "base"
    allows_scratch = True
    help = help_text(
        f"""
        The image to build on: every layer and the config of this image come first. `"scratch"`
        starts from nothing (then `platform` is required). Otherwise one of:
        {IMAGE_FORMS}
        {IMAGE_MAP_HELP}
        """
    )


class ComposedImageLayersField(SpecialCasedDependencies):
    alias = "layers"
    help = help_text(
        """
        Addresses of `docker_layer` targets to stack on the base, in order: later layers win,
        as in a Dockerfile. Example: `layers=[":curl", ":gcc"]`.
        """
    )


class ComposedImagePackagesField(SpecialCasedDependencies):
    alias = "packages"
    help = help_text(
        """
        Addresses of targets `pants package` can build (`pex_binary`, `archive`,
        `python_distribution`, another `composed_image`, ...): each built artifact goes into the
        image's files layer under `files_dest`, at its path relative to `dist/` (as Pants'
        `docker_image` lays packages into its build context), modes kept (a PEX stays executable).
        Example: `packages=["src/app:app"]` puts `dist/src.app/app.pex` at
        `/app/src.app/app.pex` with `files_dest="/app"`.
        """
    )


class ComposedImageFilesField(SpecialCasedDependencies):
    alias = "files"
    help = help_text(
        """
        Addresses of `files` / `resources` / `relocated_files` targets whose files become one new,
        deterministic layer on top (sorted entries, uid/gid 0, mtime 0). Each file lands at its
        path relative to this BUILD file's directory, under `files_dest`.
        Example: `files=[":app_files"]`.
        """
    )


class ComposedImageFilesDestField(StringField):
    alias = "files_dest"
    default = "/"
    help = "Directory in the image under which `files` are placed. Example: `files_dest=\"/app\"`."

    @classmethod
    def compute_value(cls, raw_value: Optional[str], address: Address) -> str:
        value = super().compute_value(raw_value, address)
        assert value is not None
        if not value.startswith("/") or ".." in value.split("/"):
            raise InvalidFieldException(
                f"The {repr(cls.alias)} field in target {address} must be an absolute path inside the "
                f"image without '..', e.g. \"/app\"; got {value!r}."
            )
        return value


class ComposedImageEnvField(DictStringToStringField):
    alias = "env"
    help = "Environment variables set in the image (merged with the base's). Example: `env={\"PATH\": \"/bin\"}`."


class ComposedImageEntrypointField(StringSequenceField):
    alias = "entrypoint"
    help = "The image's ENTRYPOINT, exec form; setting it clears the base's CMD unless `cmd` is set too."


class ComposedImageCmdField(StringSequenceField):
    alias = "cmd"
    help = "The image's CMD, exec form. Example: `cmd=[\"/bin/sh\"]`."


class ComposedImageWorkdirField(StringField):
    alias = "workdir"
    help = "The image's working directory. Example: `workdir=\"/app\"`."


class ComposedImageUserField(StringField):
    alias = "user"
    help = "The user (and group) the image runs as. Example: `user=\"1000:1000\"`."


class ComposedImageLabelsField(DictStringToStringField):
    alias = "labels"
    help = "Labels added to the image's config. Example: `labels={\"org.opencontainers.image.source\": \"...\"}`."


_PORT = re.compile(r"^\d{1,5}(/(tcp|udp|sctp))?$")


class ComposedImageExposedPortsField(StringSequenceField):
    alias = "exposed_ports"
    help = "Ports the image exposes, `PORT[/PROTO]`. Example: `exposed_ports=[\"8080/tcp\"]`."

    @classmethod
    def compute_value(cls, raw_value: Optional[Iterable[str]], address: Address) -> Optional[tuple[str, ...]]:
        value = super().compute_value(raw_value, address)
        for port in value or ():
            if not _PORT.match(port) or not 0 < int(port.split("/")[0]) < 65536:
                raise InvalidFieldException(
                    f"The {repr(cls.alias)} field in target {address} has {port!r}, which is not "
                    "PORT[/tcp|udp|sctp] with PORT in 1-65535; e.g. \"8080/tcp\"."
                )
        return value


class ComposedImageVolumesField(StringSequenceField):
    alias = "volumes"
    help = "Volumes declared by the image. Example: `volumes=[\"/data\"]`."


class ComposedImageStopSignalField(StringField):
    alias = "stop_signal"
    help = "The signal that stops the container. Example: `stop_signal=\"SIGTERM\"`."


class ComposedImagePlatformField(StringField):
    alias = "platform"
    help = help_text(
        """
        `os/arch[/variant]` of the image, e.g. `"linux/amd64"`. Required with `base="scratch"`;
        otherwise it must agree with the base. Every layer's source image must have this platform.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[str], address: Address) -> Optional[str]:
        value = super().compute_value(raw_value, address)
        if value is not None:
            try:
                Platform.parse(value)
            except ValueError as e:
                raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address}: {e}.") from None
        return value


class ComposedImagePlatformsField(StringSequenceField):
    alias = "platforms"
    help = help_text(
        """
        Build a multi-platform image: one image per platform, under one OCI image index. For each
        platform the base and every `docker_layer` are resolved to that platform's image (from a
        multi-platform source: a registry index, an OCI layout or archive holding an index; or
        from a per-platform map, `image={"linux/amd64": "a-amd64.tar", "linux/arm64": "a-arm64.tar"}`),
        the same `layer` selector is applied to each, and each platform is checked and recorded in
        the audit trail on its own; each platform's extractions are their own cached processes.
        Outputs: `"oci"` and `"oci-archive"` hold the index (the default output_format is then
        `"oci"`), `"registry"` leaves it for `pants publish`, which pushes every platform and then
        the index; `"docker-archive"` and `"docker-daemon"` hold one platform: pick it with
        `--lamina-platform=linux/amd64`. Not with `platform`.

        Example:

            composed_image(
                name="app",
                base="//images:debian",  # a multi-platform OCI layout
                layers=[":tool"],
                platforms=["linux/amd64", "linux/arm64"],
            )
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[Iterable[str]], address: Address) -> Optional[tuple[str, ...]]:
        value = super().compute_value(raw_value, address)
        if value is not None:
            seen: dict[str, str] = {}
            for text in value:
                try:
                    key = str(Platform.parse(text).normalized())
                except ValueError as e:
                    raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address}: {e}.") from None
                if key in seen:
                    raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address} names {text!r} "
                                                f"twice (also as {seen[key]!r})")
                seen[key] = text
            if not value:
                raise InvalidFieldException(f"The {repr(cls.alias)} field in target {address} is empty; name the "
                                            'platforms, e.g. ["linux/amd64", "linux/arm64"], or remove it')
        return value


class ComposedImageAllowPlatformMismatchField(BoolField):
    alias = "allow_platform_mismatch"
    default = False
    help = "Stack layers whose source images are for another platform than the base (rarely right)."


class ComposedImageOnConflictField(StringField):
    alias = "on_conflict"
    default = "warn"
    valid_choices = ("warn", "error", "ignore")
    help = help_text(
        """
        What to do when two layers of the final stack provide a path with different content
        (e.g. both rewrite `var/lib/dpkg/status`) and the upper one was not built on the lower:
        `"warn"` (report and build), `"error"` (fail; nothing is written to `dist/`), `"ignore"`.
        Broken hard links always fail; whiteouts that would delete other images' files, ELF
        files missing libraries and scripts missing their interpreter are always warnings. A
        start command that would not start has its own policy, `on_start_failure`.
        """
    )


ON_START_FAILURE = ("warn", "error", "ignore")


class ComposedImageOnStartFailureField(StringField):
    alias = "on_start_failure"
    default = "warn"
    help = help_text(
        """
        What to do when the image's start command would not start: the check resolves
        `entrypoint` + `cmd` (set here or inherited from the base) as the engine does (a bare
        name on the image's `PATH`, a relative path from `workdir`) and reports, naming the
        layer that provides it (or that none does), an executable that is missing, is not a
        regular file, is not executable for `user`, is an ELF whose interpreter or libraries are
        missing, or is a `#!` script whose interpreter (or `#!/usr/bin/env NAME`'s NAME) is
        missing. `"warn"` (report and build), `"error"` (fail; nothing is written to `dist/`),
        `"ignore"` (do not check the start command). An image without `entrypoint` and `cmd`
        has nothing to check.

        Example:

            composed_image(
                name="app",
                base="//images:debian",
                layers=[":tools"],
                cmd=["/usr/local/bin/greet"],
                on_start_failure="error",
            )

        Scripts any layer (or `files`) adds are checked for their `#!` interpreter too; those
        are warnings, under `check_dependencies`.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[str], address: Address) -> str:
        if raw_value is not None and not isinstance(raw_value, str):
            raise InvalidFieldException(
                f"The {repr(cls.alias)} field in target {address} must be a string, not {raw_value!r}: "
                f"use one of {', '.join(repr(c) for c in ON_START_FAILURE)}, e.g. on_start_failure=\"error\"."
            )
        value = super().compute_value(raw_value, address)
        assert value is not None
        if value not in ON_START_FAILURE:
            raise InvalidFieldException(
                f"The {repr(cls.alias)} field in target {address} is {value!r}, which is not one of "
                f"{', '.join(repr(c) for c in ON_START_FAILURE)}: use \"error\" to fail the build when the "
                "start command would not start, \"warn\" to report it, \"ignore\" to skip the check."
            )
        return value


class ComposedImageAllowedConflictsField(StringSequenceField):
    alias = "allowed_conflicts"
    help = "Path globs whose conflicts are expected, e.g. `allowed_conflicts=[\"etc/ld.so.cache\"]`."


class ComposedImageCheckDependenciesField(BoolField):
    alias = "check_dependencies"
    default = True
    help = help_text(
        """
        Check that every ELF executable and library in the composed filesystem finds its
        interpreter and the shared libraries it needs (DT_NEEDED, on the standard paths, RUNPATH
        and the image's ld.so.conf), and that every executable `#!` script finds its interpreter
        (`#!/usr/bin/env NAME`: NAME on the image's PATH). Missing ones are reported as warnings. The image's own
        `files` are checked too: their binaries need their libraries in the stack, and they
        override what is below them without a conflict (as a Dockerfile's COPY does).
        """
    )


class ComposedImageMergePackageDatabasesField(BoolField):
    alias = "merge_package_databases"
    default = True
    help = help_text(
        """
        Every apt or dpkg run rewrites dpkg's `var/lib/dpkg/status` whole (apk its
        `lib/apk/db/installed`), so when the stack's layers come from different images the top
        layer's copy hides the packages the others installed (`dpkg -s curl` fails). With this on
        (the default), when more than one layer of different images changes such a database,
        one small deterministic layer goes on top (below the `files` layer) whose database is
        the merge: every package's stanza as the layer that installed it left it, sorted as dpkg
        writes it. The layers taken keep their digests; the merge layer is listed in the audit
        trail (`<name>.layers.json`, selector `merge-package-databases`), and the conflict on
        the database is then reported as merged, not as a conflict. A layer built on another
        (one image's layer on its own base) supersedes that one's database.

        The merge is three-way, package by package: each database is compared with the one it
        superseded (e.g. the base's, when both images are built on the stack's base), and only
        the layers that changed a package vote on it (one whose stanza is as it was below does
        not; one that lacks a package that was below removed it). So an upgrade in one image
        wins over another image's copy that still lists the base's version. A layer whose base
        is not in the stack changed the dpkg packages whose `var/lib/dpkg/info/NAME.list` (or
        `NAME:ARCH.list`) it writes; when no layer is known to have changed a package, every
        copy that has it votes. A package is its name (a dpkg `Multi-Arch: same` package its
        name and architecture), so two architectures of one package are a conflict.

        Layers that changed one package differently (version, dpkg Status, Architecture, or
        removed in one and kept in another) are a conflict, reported by name, versions and
        layers and graded by `on_conflict` (`"error"` fails the build); the highest of those
        layers' stanza is taken. apk's `etc/apk/world` (the packages asked for) is merged the
        same way, so that a later `apk add` keeps every layer's packages. dpkg's `status.d/` (distroless, one file per
        package) and `info/*.list` files are per package and need no merge; dpkg's `available`
        is left as the top layer has it. rpm's database is binary and cannot be merged: its
        conflict is reported as such. When no merge is needed, no layer is added.

        Example:

            composed_image(
                name="dev",
                base="//images:debian",
                layers=["//images:curl", "//images:gcc"],  # from two images on that base
                on_conflict="error",  # a package in two versions fails the build
            )

        `merge_package_databases=False` leaves the databases as the layers have them (the top
        one's wins).
        """
    )


class ComposedImageSbomField(BoolField):
    alias = "sbom"
    default = True
    help = help_text(
        """
        Write the image's SBOM beside it in `dist/`: `<name>.cdx.json`, CycloneDX 1.5 JSON
        (checked against the CycloneDX schema). It lists every package the image's dpkg
        (`status`, and distroless's `status.d/`) and apk databases list as installed, with its name, version, architecture and purl (e.g.
        `pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64&distro=debian-12`, the distro from
        the image's `os-release`), and the layer that brought it: its digest, source image and
        `docker_layer` target, as properties (`lamina:layer:*`). A package is the lowest layer's
        whose database lists it at the version the image shows: the base's packages stay the
        base's in a layer built on the same base, and a layer that upgraded one brought it.
        Every layer (the image's own files layer and the package database merge layer too) is a
        component of its own, named by its digest. The same inputs give the same bytes.

        `pants publish` attaches it to the pushed manifest as an OCI referrer (artifactType
        `application/vnd.cyclonedx+json`, the manifest its `subject`): listed by the registry's
        referrers API, else under the referrers tag `sha256-<hex>`, before any tag is written.
        That copy describes the image as pushed (compressed layers' digests).

        The packages are read once, by the cached process that merges the package databases,
        from the layers that hold a database. An `output_format="registry"` image whose layers
        stay in the registry (nothing here needs their bytes) gets no SBOM.

        Example:

            composed_image(
                name="dev",
                base="//images:debian",
                layers=["//images:curl"],
                sbom=False,  # no dev.cdx.json
            )
        """
    )


# Docker's reference grammar (distribution/reference): path components separated by '/', after an
# optional registry host (it has a '.' or a ':', or is localhost) with an optional port; tags.
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def repository_error(value: str) -> Optional[str]:
    """Why `value` is not a Docker repository name ([host[:port]/]path), or None."""
    if not value:
        return "is empty"
    if len(value) > 255:
        return "is longer than 255 characters"
    parts = value.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if not _DOMAIN.match(parts[0]):
            return f"has a registry host {parts[0]!r} that is not host[:port]"
        parts = parts[1:]
    for part in parts:
        if not _PATH_COMPONENT.match(part):
            return (f"has the path component {part!r}: components are lowercase letters and digits, "
                    "separated by '.', '_', '__' or dashes, between '/'")
    return None


class ComposedImageRepositoryField(StringField):
    alias = "repository"
    help = help_text(
        """
        The repository name the image is tagged with when loaded or pushed, e.g. `"team/dev"` or
        `"registry.example.com:5000/team/dev"` (Docker's grammar: lowercase path components
        separated by `/`, after an optional `host[:port]/`). Defaults to the target's name.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[str], address: Address) -> Optional[str]:
        value = super().compute_value(raw_value, address)
        problem = repository_error(value) if value is not None else None
        if problem:
            raise InvalidFieldException(
                f"The {repr(cls.alias)} field in target {address} {problem}: {value!r}. Write a Docker "
                "repository name, e.g. repository=\"team/dev\" or \"registry.example.com:5000/team/dev\" "
                "(no tag: tags go in `image_tags`)."
            )
        return value


class ComposedImageTagsField(StringSequenceField):
    alias = "image_tags"
    default = ("latest",)
    help = help_text(
        """
        Tags of `repository` written into the image archive, each a letter, digit or `_`, then up to
        127 letters, digits, `_`, `.` or `-`. Example: `image_tags=["v1", "latest"]`.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[Iterable[str]], address: Address) -> Optional[tuple[str, ...]]:
        value = super().compute_value(raw_value, address)
        for tag in value or ():
            if not _TAG.match(tag):
                raise InvalidFieldException(
                    f"The {repr(cls.alias)} field in target {address} has {tag!r}, which is not a Docker tag: "
                    "a letter, digit or '_', then up to 127 letters, digits, '_', '.' or '-'; e.g. "
                    "image_tags=[\"v1.2\", \"latest\"] (the repository goes in `repository`)."
                )
        return value


_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._/-]+)?$")


class ComposedImageRegistriesField(StringSequenceField):
    alias = "registries"
    help = help_text(
        """
        Registries `pants publish` pushes the image to, as `host[:port]` (optionally with a path
        prefix), e.g. `registries=["registry.example.com", "127.0.0.1:5000"]`. Each gets
        `repository:tag` for every `image_tags` entry. Blobs the registry has are skipped, blobs
        from another repository of the same registry are mounted, and the manifest goes last.
        """
    )

    @classmethod
    def compute_value(cls, raw_value: Optional[Iterable[str]], address: Address) -> Optional[tuple[str, ...]]:
        value = super().compute_value(raw_value, address)
        for registry in value or ():
            if not _REGISTRY.match(registry):
                raise InvalidFieldException(
                    f"The {repr(cls.alias)} field in target {address} has {registry!r}, which is not "
                    "host[:port][/prefix]; e.g. \"registry.example.com\" or \"127.0.0.1:5000\" "
                    "(no scheme, no tag)."
                )
        return value


class ComposedImageSkipPushField(BoolField):
    alias = "skip_push"
    default = False
    help = "If true, `pants publish` skips this image."


FILE_FORMATS = ("docker-archive", "oci", "oci-archive")  # written to dist/
OUTPUT_FORMATS = (*FILE_FORMATS, "docker-daemon", "registry")
# docker-daemon and registry write no image file: their ending only names the audit trail's stem.
FORMAT_ENDINGS = {"docker-archive": "tar", "oci": "oci", "oci-archive": "oci.tar", "docker-daemon": "image",
                  "registry": "image"}


class ComposedImageOutputFormatField(StringField):
    alias = "output_format"
    default = None
    valid_choices = OUTPUT_FORMATS
    help = help_text(
        """
        What `pants package` makes (by default `"docker-archive"`, and `"oci"` for a
        multi-platform image, `platforms`): `"docker-archive"` (a `.tar` in `dist/` for `docker load`),
        `"oci"` (an OCI layout directory, `.oci`), `"oci-archive"` (a tar of one, `.oci.tar`), or
        `"docker-daemon"`: the image loaded straight into the local Docker engine (`DOCKER_HOST`)
        under its `repository:tag`s, sending only the layers the engine does not already have on
        that stack, with no image file in `dist/` (only the `<name>.layers.json` audit trail);
        or `"registry"`: nothing but the audit trail, the image being for `pants publish` only.
        With `"registry"`, `scan_registry_layers=False` and no `files`, the layers of `docker://`
        sources are never downloaded: `pants package` reads their manifests and configs, and
        `pants publish` to the same registry mounts them (0 layer bytes moved).

        For large images, `"oci"` and `"docker-daemon"` are the cheapest to rebuild: an `"oci"`
        layout's blobs are the layers' own bytes, which Pants' cache already holds, and the
        engine already has the unchanged layers; an archive format is a new file as large as
        the whole image every time. `pants run` and `pants publish` work from any of them, and
        read the layers from Pants' cache, not from the packaged image.

        Example: `composed_image(name="dev", base="ubuntu.tar", layers=[":tools"],
        output_format="docker-daemon")`, then `pants package :dev` and `docker run dev:latest`.
        """
    )


class ComposedImageScanRegistryLayersField(BoolField):
    alias = "scan_registry_layers"
    default = True
    help = help_text(
        """
        Whether the composition check (`[lamina].check_compositions`) reads the layers of
        `docker://` sources, which means downloading them. With `False` the check leaves those
        layers out (conflicts with them, libraries they provide and, for a registry base, the start
        command check are not judged), and with `output_format="registry"` and no `files` no layer
        blob of them is downloaded at all.

        Example: `composed_image(name="svc", base="docker://registry.example.com/base@sha256:...",
        layers=[":app"], output_format="registry", scan_registry_layers=False,
        registries=["registry.example.com"])`.
        """
    )


class ComposedImageOutputPathField(OutputPathField):
    pass


class ComposedImageTarget(Target):
    alias = "composed_image"
    core_fields = (
        *COMMON_TARGET_FIELDS,
        LaminaDependenciesField,
        ComposedImageBaseField,
        ComposedImageLayersField,
        ComposedImageFilesField,
        ComposedImagePackagesField,
        ComposedImageFilesDestField,
        ComposedImageEnvField,
        ComposedImageEntrypointField,
        ComposedImageCmdField,
        ComposedImageWorkdirField,
        ComposedImageUserField,
        ComposedImageLabelsField,
        ComposedImageExposedPortsField,
        ComposedImageVolumesField,
        ComposedImageStopSignalField,
        ComposedImagePlatformField,
        ComposedImagePlatformsField,
        ComposedImageAllowPlatformMismatchField,
        ComposedImageOnConflictField,
        ComposedImageAllowedConflictsField,
        ComposedImageCheckDependenciesField,
        ComposedImageOnStartFailureField,
        ComposedImageMergePackageDatabasesField,
        ComposedImageSbomField,
        ComposedImageRepositoryField,
        ComposedImageTagsField,
        ComposedImageOutputFormatField,
        ComposedImageOutputPathField,
        ComposedImageScanRegistryLayersField,
        ComposedImageRegistriesField,
        ComposedImageSkipPushField,
    )
    help = help_text(
        """
        A container image composed from a base and `docker_layer`s at the manifest level: every
        reused layer keeps its exact bytes and digest, so registries and daemons that have it
        skip it. `pants package` writes it to `dist/`.

        Example:

            composed_image(
                name="dev",
                base="ubuntu.tar",
                layers=[":curl", ":gcc"],
                workdir="/app",
                repository="team/dev",
                image_tags=["v1"],
            )
        """
    )

    def validate(self) -> None:
        if self[ComposedImagePlatformField].value and self[ComposedImagePlatformsField].value:
            raise InvalidFieldException(
                f"The 'platform' and 'platforms' fields in target {self.address} are both set: give `platform` for "
                "one platform, or `platforms` for a multi-platform image."
            )
        if self[ComposedImagePlatformsField].value:
            return
        if self[ComposedImageBaseField].value == "scratch" and not self[ComposedImagePlatformField].value:
            raise InvalidFieldException(
                f"The 'platform' field in target {self.address} is required when base=\"scratch\": "
                "add e.g. platform=\"linux/amd64\"."
            )


def target_types() -> list[type[Target]]:
    return [DockerLayerTarget, ComposedImageTarget]
