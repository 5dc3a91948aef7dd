"""The Docker engine (lamina.engine_api): resolve a name to an image ID, export it, load incrementally."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import posixpath
import re
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

from lamina.blobs import CHUNK, TeeReader, chunks
from lamina.engine_api import DEFAULT_HOST, EngineApiError, NotFound
from lamina.errors import DigestMismatch, InvalidSource, LaminaError
from lamina.formats.docker_archive import read_docker_archive
from lamina.formats.store import TarSource
from lamina.formats.write import header_bytes
from lamina.image import Image
from lamina.model import canonical_json, sha256_digest

# Incremental load: `docker load` (tarexport's Load; checked on Docker 20.10) looks each layer up in the
# engine's layer store by its chain ID *before* it opens that layer's file in the archive. So an archive
# whose manifest.json lists layer paths the tar does not contain loads fine when the engine already has
# those layers on the same parents. `load` asks the engine for the RootFS of every local image, computes
# the chain IDs it has, and leaves out each layer whose chain ID is among them. If the engine loses a
# layer in between (an image removed), the load fails naming the missing file, and the full tar is sent.


class DaemonError(LaminaError):
    """The Docker engine is unreachable, lacks an image, or refused an operation."""


def engine_name(environ: Mapping[str, str]) -> str:
    """How the engine is named in messages: DOCKER_HOST's value, or the default socket."""
    host = environ.get("DOCKER_HOST")
    return f"DOCKER_HOST={host}" if host else f"{DEFAULT_HOST} (DOCKER_HOST is not set)"


@dataclass(frozen=True)
class Engine:
    """A connected engine API (lamina.engine_api) and how to name its engine in errors."""

    api: Any  # engine_api.SocketApi | engine_api.SdkApi
    name: str


def connect(environ: Mapping[str, str], timeout: float = 600.0) -> Engine:
    """A client for the engine DOCKER_HOST (and DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) name; DaemonError if none answers."""
    from lamina.engine_api import open_api

    name = engine_name(environ)
    try:
        api = open_api(environ, timeout)
        api.ping()
    except _api_errors() as e:
        raise DaemonError(f"cannot reach the Docker engine at {name}: {_short(e)}; start it or point DOCKER_HOST "
                          "at a running one") from e
    return Engine(api, name)


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def _api_errors() -> tuple[type[BaseException], ...]:
    """What a failed engine call raises: the API's errors, and the socket's (OSErrors; http.client's
    protocol errors; requests' are OSErrors too)."""
    import http.client

    return EngineApiError, OSError, http.client.HTTPException


def _inspect(engine: Engine, name: str) -> dict:
    try:
        return dict(engine.api.inspect_image(name))
    except NotFound:
        raise DaemonError(f"no image {name!r} in the Docker engine at {engine.name}; build or pull it first, "
                          "or check the name (`docker images`)") from None
    except _api_errors() as e:
        raise DaemonError(f"asking the Docker engine at {engine.name} about {name!r} failed: {_short(e)}") from e


def resolve(engine: Engine, name: str) -> str:
    """The image ID (sha256:...) `name` (a tag or an ID) names in the engine now."""
    return str(_inspect(engine, name)["Id"])


_LOOKS_LIKE_ID = re.compile(r"sha256:[0-9a-f]{64}")


def listed_names(engine: Engine) -> dict[str, str]:
    """The image ID each name the engine's image list answers for means now, from one call: every
    tag as listed (`busybox:latest`, `localhost:5000/app:1`), a `:latest` tag also without it
    (the engine's default), and every image's full ID. One list answers all of a build's engine
    names at once; a name not in it (a short ID, a digest, `docker.io/library/...`) is for
    `resolve`, which asks the engine to parse it."""
    try:
        listed = engine.api.list_images()
    except _api_errors() as e:
        raise DaemonError(f"listing the images of the Docker engine at {engine.name} failed: {_short(e)}") from e
    names: dict[str, str] = {}
    ids: dict[str, str] = {}
    for item in listed:
        image_id = item.get("Id") if isinstance(item, dict) else None
        if not isinstance(image_id, str) or not image_id.startswith("sha256:"):
            continue
        ids[image_id] = image_id
        for tag in item.get("RepoTags") or ():
            # a tag spelled like an ID (repository "sha256") is read by the engine as an ID: not listed
            if not isinstance(tag, str) or tag.startswith("<none>") or _LOOKS_LIKE_ID.fullmatch(tag):
                continue
            names[tag] = image_id
            if tag.endswith(":latest"):
                names.setdefault(tag[:-len(":latest")], image_id)
    names.update(ids)  # an ID means that image whatever a tag is called
    return names


def _saved_name(engine: Engine, name: str, image_id: str) -> Optional[str]:
    """The tag to save `name` under (so the archive keeps it), or None when `name` is an ID."""
    if name.startswith("sha256:") or image_id.startswith("sha256:" + name):
        return None
    tags = _inspect(engine, image_id).get("RepoTags") or []
    for candidate in (name, name + ":latest"):
        if candidate in tags:
            return candidate
    return None


@dataclass(frozen=True)
class Exported:
    image_id: str
    path: str
    size: int
    # Where the engine says the image came from: registry manifests (HOST/REPO@sha256:...) it was
    # pulled from or pushed to, whose compressed layer blobs a push can mount instead of sending.
    repo_digests: tuple[str, ...] = ()
    # What the layers asked for hold, by diff_id, read as they streamed by: the diff_id is the
    # hash of the bytes written to that file, so an extraction of it links it and indexes it
    # without reading it.
    contents: Mapping[str, "Streamed"] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Streamed:
    """A layer file an export wrote, hashed and indexed in one pass."""

    path: str  # absolute
    identity: tuple[int, int, int]  # (st_dev, st_ino, st_size) when it was written: it is that file still
    content: Any  # lamina.analyze.scan.LayerContent


def export(engine: Engine, name: str, out_path: str) -> Exported:
    """`docker save` of `name` to `out_path`, streamed in chunks to a temporary file renamed into place.

    The archive is checked to hold the image ID `name` resolved to (a tag moved meanwhile is an error).
    """
    image_id = resolve(engine, name)
    tag = _saved_name(engine, name, image_id)
    parent = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lamina-tmp-", dir=parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                for data in engine.api.get_image(tag or image_id, chunk_size=CHUNK):
                    out.write(data)
                    size += len(data)
            except _api_errors() as e:
                raise DaemonError(f"exporting {name!r} from the Docker engine at {engine.name} failed: {_short(e)}") from e
            out.flush()
            os.fsync(out.fileno())
        archive = TarSource(tmp)
        saved = read_docker_archive(archive, name)
        # the ID is the config's digest (graph-driver store) or a manifest's (containerd store, Docker 25+)
        if saved.config_descriptor.digest != image_id and archive.blob_size(image_id) is None:
            raise DaemonError(f"{name!r} changed while it was exported (it was {image_id}, the archive holds "
                              f"{saved.config_descriptor.digest}); run the export again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Exported(image_id, out_path, size)


class _Stream(io.RawIOBase):
    """The engine's export stream (an iterator of chunks) as a file to read from."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._data = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Closes the engine's stream too (its connection), also when the reader stops early."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self._pos >= len(self._data):
            try:
                self._data, self._pos = next(self._chunks), 0
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


class _HashingSink:
    """Writes to a file and hashes what it writes."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> None:
        self._out.write(data)
        self.hash.update(data)


def wanted_diff_ids(selector: Any, diff_ids: Sequence[str]) -> frozenset[str]:
    """The diff_ids of the layers an index, slice or digest selector (lamina.select) picks from a
    stack of `diff_ids` (an engine's layers are uncompressed: digest and diff_id are one); none
    for a selector that needs more than the stack (created_by, path), or picks nothing here."""
    from lamina.select import by_position

    if selector is None:
        return frozenset()
    picked = by_position(selector, diff_ids)
    if picked is not None:
        return frozenset(picked)
    if selector.kind == "digest":
        matches = [d for d in diff_ids if d.startswith(selector.value)]
        return frozenset(matches) if len(set(matches)) == 1 else frozenset()
    return frozenset()


def export_unpacked(engine: Engine, name: str, out_dir: str, index_for: Any = None) -> Exported:
    """`docker save` of `name`, unpacked as it streams into the new directory `out_dir` (each member
    written once, in chunks; links kept inside it), for reading as `docker-archive:out_dir`: the
    layers are then files of their own, which an extraction links instead of copying. Checked to
    hold the image ID `name` resolved to. For a temporary read: nothing is synced to disk.

    `index_for` (a lamina.select.Selector): the layers it picks from the engine's RootFS are
    indexed as they stream by (Exported.contents), so that nothing reads them again to index them."""
    from lamina.analyze.scan import scan_content
    from lamina.formats.store import DirSource
    from lamina.formats.tarindex import safe_member_path

    info = _inspect(engine, name)
    image_id = str(info["Id"])
    rootfs = info.get("RootFS")
    layers = rootfs.get("Layers") if isinstance(rootfs, dict) else None
    diff_ids = [str(d) for d in layers] if isinstance(layers, list) else []
    wanted = wanted_diff_ids(index_for, diff_ids)
    # Docker 25+ names each blob by its digest: only the layers asked for are indexed. Docker's own
    # format (`<v1 id>/layer.tar`, in the order of those IDs, not the RootFS's) says which layer a
    # file is only by its hash, at its end: every layer file is indexed as it streams by, and the
    # index kept for those asked for. That costs CPU on the others, while the engine, which
    # streams slower than lamina indexes, sends them.
    contents: dict[str, Any] = {}
    repo_digests = tuple(d for d in (info.get("RepoDigests") or ()) if isinstance(d, str) and "@sha256:" in d)
    tag = _saved_name(engine, name, image_id)
    os.makedirs(out_dir)
    size = 0
    links: list[tuple[str, str]] = []
    try:
        stream = io.BufferedReader(_Stream(iter(engine.api.get_image(tag or image_id, chunk_size=CHUNK))), CHUNK)
        with stream, tarfile.open(fileobj=stream, mode="r|") as tf:
            for member_info in tf:
                member = safe_member_path(member_info.name, f"the export of {name}")
                path = os.path.join(out_dir, member)
                if member_info.isdir():
                    os.makedirs(path, exist_ok=True)
                elif member_info.isreg():
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    f = tf.extractfile(member_info)
                    if member.startswith("blobs/sha256/"):
                        scan = "sha256:" + member[len("blobs/sha256/"):] in wanted
                    elif member.endswith("/layer.tar"):
                        scan = bool(wanted)
                    else:
                        scan = False
                    try:
                        out = open(path, "xb")  # a file written once: nothing replaces what was hashed
                    except FileExistsError:
                        raise DaemonError(f"the export of {name!r} holds {member!r} twice") from None
                    with out:
                        if scan:  # written, hashed and indexed in one pass; kept if it is a layer asked for
                            sink = _HashingSink(out)
                            tee = TeeReader(f, sink)  # type: ignore[arg-type]
                            try:
                                found: Any = scan_content(tee, f"the export of {name!r}: {member}")  # type: ignore[arg-type]
                            except LaminaError:
                                found = None  # lamina refuses it as a layer: the extraction reads it again and says why
                            for _ in chunks(tee):  # type: ignore[arg-type]
                                pass
                            size += tee.count
                            digest = "sha256:" + sink.hash.hexdigest()
                            out.flush()
                            if found is not None and digest in wanted:
                                st = os.fstat(out.fileno())
                                contents[digest] = Streamed(os.path.abspath(path), (st.st_dev, st.st_ino, st.st_size), found)
                        else:
                            for data in chunks(f):  # type: ignore[arg-type]
                                out.write(data)
                                size += len(data)
                elif member_info.issym() or member_info.islnk():
                    linked = (member_info.linkname if member_info.islnk()
                              else posixpath.join(posixpath.dirname(member), member_info.linkname))
                    links.append((member, safe_member_path(posixpath.normpath(linked), f"the export of {name}")))
    except (tarfile.TarError, EOFError) as e:
        raise DaemonError(f"the export of {name!r} from the Docker engine at {engine.name} is not a readable "
                          f"tar ({e})") from e
    except _api_errors() as e:
        raise DaemonError(f"exporting {name!r} from the Docker engine at {engine.name} failed: {_short(e)}") from e
    try:
        for member, target in links:  # docker save links a layer it holds twice to its first copy
            path = os.path.join(out_dir, member)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.link(os.path.join(out_dir, target), path)
    except FileNotFoundError as e:
        raise DaemonError(f"the export of {name!r} links to a member it does not hold ({e.filename})") from e
    except FileExistsError as e:
        raise DaemonError(f"the export of {name!r} holds {e.filename!r} twice") from e
    saved = read_docker_archive(DirSource(out_dir), name)
    if saved.config_descriptor.digest != image_id and DirSource(out_dir).blob_size(image_id) is None:
        raise DaemonError(f"{name!r} changed while it was exported (it was {image_id}, the archive holds "
                          f"{saved.config_descriptor.digest}); run the export again")
    return Exported(image_id, out_dir, size, repo_digests, contents)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of every prefix of a layer stack: the key the engine's layer store uses."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


def engine_chain_ids(engine: Engine) -> frozenset[str]:
    """The chain IDs of every layer stack the engine's images (intermediate ones included) are built of."""
    have: set[str] = set()
    try:
        listed = engine.api.image_ids()
    except _api_errors() as e:
        raise DaemonError(f"listing images of the Docker engine at {engine.name} failed: {_short(e)}") from e
    for image_id in dict.fromkeys(listed):
        try:
            rootfs = engine.api.inspect_image(image_id).get("RootFS") or {}
        except NotFound:
            continue  # removed since it was listed
        except _api_errors() as e:
            raise DaemonError(f"inspecting {image_id} in the Docker engine at {engine.name} failed: {_short(e)}") from e
        have.update(chain_ids([str(d) for d in rootfs.get("Layers") or []]))
    return frozenset(have)


@dataclass(frozen=True)
class LoadPlan:
    """Which layers of an image go into the tarball (`send`, by index) and which the engine has (`skip`)."""

    send: tuple[int, ...]
    skip: tuple[int, ...]


def plan_load(image: Image, present: frozenset[str]) -> LoadPlan:
    """Skip a layer when the engine has its chain ID, i.e. the same layer on the same parents."""
    send: list[int] = []
    skip: list[int] = []
    for i, chain_id in enumerate(chain_ids(image.diff_ids)):
        (skip if chain_id in present else send).append(i)
    return LoadPlan(tuple(send), tuple(skip))


def _layer_name(image: Image, i: int) -> str:
    return f"blobs/sha256/{image.layers[i].descriptor.hex}"


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return header_bytes(info)  # ustar; GNU base-256 size for a layer of 8 GiB or more


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def load_tarball(image: Image, tags: Sequence[str], plan: LoadPlan) -> Iterator[bytes]:
    """A `docker load` tarball, generated in chunks: manifest.json and the config, then the layers in `plan.send`.

    manifest.json lists every layer; the skipped ones are simply absent from the tar.
    """
    config_name = image.config_descriptor.hex + ".json"
    manifest = canonical_json([{"Config": config_name, "RepoTags": list(tags),
                                "Layers": [_layer_name(image, i) for i in range(len(image.layers))]}])
    for name, data in (("manifest.json", manifest), (config_name, image.config_bytes)):
        yield _header(name, len(data)) + data + _pad(len(data))
    written: set[str] = set()
    for i in plan.send:
        layer = image.layers[i]
        name = _layer_name(image, i)
        if name in written:
            continue
        written.add(name)
        if not layer.has_bytes:
            raise InvalidSource(f"{image.source}: layer {i} ({layer.descriptor.digest}) has no bytes in this source "
                                "and the Docker engine does not have it")
        yield _header(name, layer.descriptor.size)
        with layer.open_blob(f"{image.source}: layer {i} ({layer.descriptor.digest})") as stream:
            sent = 0
            for data in chunks(stream):
                sent += len(data)
                yield data
        if sent != layer.descriptor.size:
            raise DigestMismatch(f"{image.source}: layer {i} has {sent} bytes, its descriptor says {layer.descriptor.size}")
        yield _pad(sent)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


@dataclass(frozen=True)
class LoadReport:
    image_id: str
    tags: tuple[str, ...]
    sent_bytes: int  # of layer blobs in the tarball
    skipped_bytes: int  # of layer blobs left out because the engine had them
    layers_sent: int
    layers_skipped: int
    fell_back: str = ""  # why the sparse tarball was refused, when it was and the full one was sent

    def summary(self) -> str:
        named = ", ".join(self.tags) if self.tags else "(untagged)"
        total = self.layers_sent + self.layers_skipped
        note = (f"; the engine refused the load without the layers it has ({self.fell_back}), so the full "
                "image was sent") if self.fell_back else ""
        return (f"loaded {self.image_id} as {named} \u2014 sent {self.sent_bytes} bytes, skipped {self.skipped_bytes} "
                f"bytes ({self.layers_skipped} of {total} layers already in the engine){note}")


def _post_load(engine: Engine, body: Iterator[bytes]) -> list[str]:
    """POST /images/load; the engine's messages, DaemonError carrying its error text."""
    messages: list[str] = []
    try:
        for item in engine.api.load_image(body):
            if not isinstance(item, dict):
                continue
            if item.get("error") or item.get("errorDetail"):
                detail = item.get("errorDetail") or {}
                raise DaemonError(str(detail.get("message") or item.get("error")))
            if item.get("stream"):
                messages.append(str(item["stream"]).strip())
    except _api_errors() as e:
        raise DaemonError(_short(e)) from e
    return messages


def load(engine: Engine, image: Image, tags: Sequence[str] = (), present: Optional[frozenset[str]] = None) -> LoadReport:
    """Load `image` into the engine under `tags` (default: the tags it carries), sending only missing layers.

    `present` (chain IDs the engine has) is asked of the engine unless given.
    """
    tags = tuple(tags) or image.tags
    plan = plan_load(image, engine_chain_ids(engine) if present is None else present)
    fell_back = ""
    try:
        _post_load(engine, load_tarball(image, tags, plan))
    except DaemonError as e:
        if not plan.skip:
            raise DaemonError(f"loading {image.source} into the Docker engine at {engine.name} failed: {e}") from e
        # Whatever the engine's words (Docker's own layer store names the missing file; the
        # containerd image store of newer engines says it differently): send everything once.
        plan = LoadPlan(tuple(range(len(image.layers))), ())
        fell_back = " ".join(str(e).split())[:200] or "no reason given"
        try:
            _post_load(engine, load_tarball(image, tags, plan))
        except DaemonError as again:
            raise DaemonError(f"loading {image.source} into the Docker engine at {engine.name} failed: {again}") from again
    sizes = {i: image.layers[i].descriptor.size for i in range(len(image.layers))}
    sent_digests = {image.layers[i].descriptor.digest: sizes[i] for i in plan.send}
    return LoadReport(
        image_id=image.config_descriptor.digest,
        tags=tags,
        sent_bytes=sum(sent_digests.values()),
        skipped_bytes=sum(sizes[i] for i in plan.skip),
        layers_sent=len(plan.send),
        layers_skipped=len(plan.skip),
        fell_back=fell_back,
    )
