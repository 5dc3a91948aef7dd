"""The compose spec (JSON) the CLI and the Pants plugin hand to `lamina compose`, parsed and checked."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from lamina.compose import ConfigOverrides
from lamina.errors import SpecError
from lamina.model import Platform


@dataclass(frozen=True)
class LayerSpec:
    source: str
    layer: Optional[str]  # selector; None = the layers a bundle was extracted with
    name: Optional[str]  # how the source is recorded in annotations (default: the source text)
    target: Optional[str] = None  # the build target that asked for it, named in errors
    # The caller vouches that `source` is a bundle `lamina extract` wrote, whose blobs it verified
    # (the Pants plugin's own cached extractions): its layers are then not hashed again.
    verified: bool = False


@dataclass(frozen=True)
class FileSpec:
    src: str
    dest: str


@dataclass(frozen=True)
class Spec:
    base: Optional[LayerSpec]  # None = scratch
    platform: Optional[Platform]
    layers: tuple[LayerSpec, ...]
    files: tuple[FileSpec, ...]
    file_dirs: tuple[FileSpec, ...]
    config: ConfigOverrides
    tags: tuple[str, ...]
    format: str
    allow_platform_mismatch: bool
    target: Optional[str] = None  # the build target this image is for: the audit names it for the base and files layers
    files_layer: Optional[str] = None  # a directory from `lamina files-layer`, used instead of files/file_dirs
    # Directories from `lamina compress`: the compressed forms of uncompressed layers, which a push
    # sends instead of compressing them itself (the Pants plugin's cached compressions).
    compressed: tuple[str, ...] = ()
    # Merge the package databases (dpkg status, apk installed) the stack's layers from different
    # images each rewrote, into one small layer on top (see lamina.pkgdb); only when needed.
    merge_package_databases: bool = True
    package_db_layer: Optional[str] = None  # a directory from `lamina package-db-layer`, used as it is
    # False: the stack's layers hold no package database (their indexes say so, see
    # pkgdb.databases_in_index): nothing is merged, no layer is read for one, an SBOM lists no packages.
    package_databases: bool = True


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{where} must be a string, not {value!r}")
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where} must be a list of strings, not {value!r}")
    return tuple(value)


def _str_map(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(f"{where} must be an object of strings, not {value!r}")
    return tuple(value.items())


def _layer(value: Any, where: str) -> LayerSpec:
    if isinstance(value, str):
        return LayerSpec(value, None, None)
    if not isinstance(value, dict) or "source" not in value:
        raise SpecError(f"{where} must be an object with a source")
    layer = value.get("layer")
    if layer is not None and not isinstance(layer, (str, int)):
        raise SpecError(f"{where}.layer must be a selector string or an index")
    name = value.get("name")
    target = value.get("target")
    verified = value.get("verified", False)
    if not isinstance(verified, bool):
        raise SpecError(f"{where}.verified must be true or false, not {verified!r}")
    return LayerSpec(_str(value["source"], f"{where}.source"), None if layer is None else str(layer),
                     None if name is None else _str(name, f"{where}.name"),
                     None if target is None else _str(target, f"{where}.target"), verified)


def _files(value: Any, where: str, default_dest: Optional[str]) -> tuple[FileSpec, ...]:
    if not isinstance(value, list):
        raise SpecError(f"{where} must be a list")
    out = []
    for i, f in enumerate(value):
        if not isinstance(f, dict):
            raise SpecError(f"{where}[{i}] must be an object with src and dest")
        dest = f.get("dest", default_dest)
        if dest is None:
            raise SpecError(f"{where}[{i}] needs a dest: the file's path in the image, e.g. \"/app/main.py\"")
        out.append(FileSpec(_str(f.get("src"), f"{where}[{i}].src"), _str(dest, f"{where}[{i}].dest")))
    return tuple(out)


def parse_files(data: Any) -> tuple[tuple[FileSpec, ...], tuple[FileSpec, ...]]:
    """(files, file_dirs) of a spec, or of a files-only spec `{"files": [...], "file_dirs": [...]}`
    (what `lamina files-layer` reads)."""
    if not isinstance(data, dict):
        raise SpecError("a files spec is a JSON object with files and file_dirs")
    return _files(data.get("files", []), "files", None), _files(data.get("file_dirs", []), "file_dirs", "/")


_CONFIG_KEYS = {"env", "entrypoint", "cmd", "workdir", "user", "labels", "exposed_ports", "volumes", "stop_signal"}
_KEYS = {"base", "platform", "layers", "files", "file_dirs", "config", "tags", "format", "allow_platform_mismatch",
         "target", "files_layer", "compressed", "merge_package_databases", "package_db_layer",
         "package_databases"}


def parse_spec(data: Any) -> Spec:
    if not isinstance(data, dict):
        raise SpecError("a compose spec is a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise SpecError(f"unknown spec keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    base_value = data.get("base", "scratch")
    base = None if base_value == "scratch" else _layer(base_value, "base")
    platform = None
    if data.get("platform"):
        try:
            platform = Platform.parse(_str(data["platform"], "platform"))
        except ValueError as e:
            raise SpecError(str(e)) from e
    if base is None and platform is None:
        raise SpecError("a scratch base needs a platform, e.g. \"platform\": \"linux/amd64\"")
    layers_value = data.get("layers", [])
    if not isinstance(layers_value, list):
        raise SpecError("layers must be a list")
    config_value = data.get("config", {})
    if not isinstance(config_value, dict):
        raise SpecError("config must be an object")
    unknown = set(config_value) - _CONFIG_KEYS
    if unknown:
        raise SpecError(f"unknown config keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
    c = config_value
    config = ConfigOverrides(
        env=_str_map(c.get("env", {}), "config.env"),
        entrypoint=_str_list(c["entrypoint"], "config.entrypoint") if c.get("entrypoint") is not None else None,
        cmd=_str_list(c["cmd"], "config.cmd") if c.get("cmd") is not None else None,
        workdir=_str(c["workdir"], "config.workdir") if c.get("workdir") is not None else None,
        user=_str(c["user"], "config.user") if c.get("user") is not None else None,
        labels=_str_map(c.get("labels", {}), "config.labels"),
        exposed_ports=_str_list(c.get("exposed_ports", []), "config.exposed_ports"),
        volumes=_str_list(c.get("volumes", []), "config.volumes"),
        stop_signal=_str(c["stop_signal"], "config.stop_signal") if c.get("stop_signal") is not None else None,
    )
    files, file_dirs = parse_files(data)
    files_layer = _str(data["files_layer"], "files_layer") if data.get("files_layer") is not None else None
    if files_layer is not None and (files or file_dirs):
        raise SpecError("files_layer is the layer made of the image's files: give it, or files/file_dirs, not both")
    fmt = _str(data.get("format", "docker-archive"), "format")
    if fmt not in ("docker-archive", "oci", "oci-archive"):
        raise SpecError(f"format {fmt!r} is not one of docker-archive, oci, oci-archive")
    allow = data.get("allow_platform_mismatch", False)
    if not isinstance(allow, bool):
        raise SpecError("allow_platform_mismatch must be true or false")
    merge = data.get("merge_package_databases", True)
    if not isinstance(merge, bool):
        raise SpecError(f"merge_package_databases must be true or false, not {merge!r}")
    package_db_layer = (_str(data["package_db_layer"], "package_db_layer")
                        if data.get("package_db_layer") is not None else None)
    databases = data.get("package_databases", True)
    if not isinstance(databases, bool):
        raise SpecError(f"package_databases must be true or false, not {databases!r}")
    if not databases and package_db_layer is not None:
        raise SpecError("package_databases false says the stack holds no package database: give no package_db_layer")
    return Spec(
        base=base,
        platform=platform,
        layers=tuple(_layer(v, f"layers[{i}]") for i, v in enumerate(layers_value)),
        files=files,
        file_dirs=file_dirs,
        config=config,
        tags=_str_list(data.get("tags", []), "tags"),
        format=fmt,
        allow_platform_mismatch=allow,
        target=_str(data["target"], "target") if data.get("target") is not None else None,
        files_layer=files_layer,
        compressed=_str_list(data.get("compressed", []), "compressed"),
        merge_package_databases=merge,
        package_db_layer=package_db_layer,
        package_databases=databases,
    )
