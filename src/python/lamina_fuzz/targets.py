"""One fuzz target per reader of untrusted bytes: each takes the fuzz input and a Run, and reads it.

A target builds the reader's input (a file, a directory, a fake registry) from the bytes under
`run.root`, calls the reader and then uses what it returned the way lamina does (layers walked,
scanned and extracted into `run.out`). contract.check runs it and checks the contract.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from typing import Callable, Optional

from lamina.analyze.index import dumps, loads
from lamina.analyze.scan import scan_layer, scan_source
from lamina.blobs import DiffIdHasher, chunks, verified
from lamina.elf import ElfInfo, ElfScanner, parse_elf
from lamina.errors import LaminaError
from lamina.extract import extract
from lamina.image import Image, Layer
from lamina.model import COMPRESSION_MEDIA_TYPE, Descriptor, Platform, parse_json
from lamina.newlayer import read_files_layer_dir
from lamina.registry.auth import (
    Credentials,
    find_credentials,
    load_docker_config,
    merge_scopes,
    parse_challenges,
    parse_docker_config,
    parse_helper_output,
    parse_token_response,
    token_request,
)
from lamina.sources import open_image, sniff
from lamina.spec import parse_files, parse_spec
from lamina_fuzz.bundle import Bundle, decode, write_dir, write_tar
from lamina_fuzz.contract import ContractViolation, Run, check_error
from lamina_fuzz.fakeregistry import registry_image
from lamina_testing.tarref import lamina_members, tarfile_members

MAX_LAYERS = 8
_OTHER_DIFF_ID = "sha256:" + "0" * 64


def _platform(bundle: Bundle) -> Optional[Platform]:
    text = bundle.option("platform")
    if not text:
        return None
    try:
        return Platform.parse(text)
    except ValueError:
        return None


def _reference(kind: str, path: str, bundle: Bundle) -> str:
    tag = bundle.option("tag")
    return f"{kind}:{path}:{tag}" if tag else f"{kind}:{path}"


def use_layer(layer: Layer, what: str = "fuzz") -> None:
    """What lamina does with a layer it read: scan it (walk, hash, ELF) and check its diff_id."""
    scan_layer(layer, what, (), "")
    if layer.compression != "none":
        with verified(layer.opener_or_file(), layer.descriptor.digest, layer.descriptor.size, what,  # type: ignore[arg-type]
                      (layer.compression, layer.diff_id)) as f:
            for _ in chunks(f):
                pass


def use_image(image: Image, run: Run) -> None:
    """Every layer used on its own (an error in one does not hide the others), then the image extracted."""
    image.config
    str(image.platform)
    image.manifest_bytes
    for layer in image.layers[:MAX_LAYERS]:
        if not layer.has_bytes:
            continue
        try:
            use_layer(layer)
        except LaminaError as e:
            check_error(e)
    held = tuple(l for l in image.layers[:MAX_LAYERS] if l.has_bytes)
    extract(image, held, os.path.join(run.out, "bundle"), "fuzz")


# -- image sources ---------------------------------------------------------------------------------


def docker_archive(data: bytes, run: Run) -> None:
    """`docker save` archives, both formats: the members of a tar built from the input."""
    bundle = decode(data)
    path = run.path("image.tar")
    write_tar(bundle, path)
    run.inputs_written()
    use_image(open_image(_reference("docker-archive", path, bundle), platform=_platform(bundle)), run)


def oci_archive(data: bytes, run: Run) -> None:
    """OCI layouts as tar archives."""
    bundle = decode(data)
    path = run.path("image.tar")
    write_tar(bundle, path)
    run.inputs_written()
    use_image(open_image(_reference("oci-archive", path, bundle), platform=_platform(bundle)), run)


def oci_layout(data: bytes, run: Run) -> None:
    """OCI layout directories (symlinks included) and lamina bundles, opened and scanned as `lamina scan` does."""
    bundle = decode(data)
    path = run.path("layout")
    os.mkdir(path)
    write_dir(bundle, path)
    run.inputs_written()
    use_image(open_image(_reference("oci", path, bundle), platform=_platform(bundle)), run)
    scan_source("oci:" + path, platform=_platform(bundle))


def archive_bytes(data: bytes, run: Run) -> None:
    """Any file given as a bare path: sniffed, then read as what it looks like; the tar headers are the input."""
    path = run.path("image.tar")
    with open(path, "wb") as f:
        f.write(data)
    run.inputs_written()
    sniff(path)
    use_image(open_image(path), run)


def files_layer(data: bytes, run: Run) -> None:
    """A `lamina files-layer` directory: its description JSON and blob."""
    bundle = decode(data)
    path = run.path("files")
    os.mkdir(path)
    write_dir(bundle, path)
    run.inputs_written()
    use_layer(read_files_layer_dir(path))


def registry(data: bytes, run: Run) -> None:
    """A registry's answers (manifests, indexes, blobs, errors, 401 challenges, tokens) to one image pull."""
    bundle = decode(data)
    image = registry_image(bundle, run)
    if image is not None:
        use_image(image, run)


# -- layer streams ---------------------------------------------------------------------------------


def _raw_layer(data: bytes, compression: str) -> Layer:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Layer(Descriptor(COMPRESSION_MEDIA_TYPE[compression], digest, len(data)),
                 digest if compression == "none" else _OTHER_DIFF_ID, 0, (),
                 opener=lambda: io.BytesIO(data), source="fuzz")  # type: ignore[arg-type, return-value]


def _hash_split(data: bytes, compression: str, step: int) -> object:
    hasher = DiffIdHasher(compression, "fuzz")
    try:
        for i in range(0, len(data), step):
            hasher.update(data[i:i + step])
        return hasher.digest()
    except LaminaError as e:
        check_error(e)
        return type(e)


def _layer_stream(compression: str) -> Callable[[bytes, Run], None]:
    def target(data: bytes, run: Run) -> None:
        whole = _hash_split(data, compression, max(len(data), 1))
        split = _hash_split(data, compression, 7)
        if whole != split:
            raise ContractViolation(f"the diff_id of a {compression} blob depends on how it is chunked: {whole} != {split}")
        use_layer(_raw_layer(data, compression))

    target.__doc__ = f"A {compression} layer blob: walked, scanned, diff_id hashed whole and in pieces."
    return target


def tar_differential(data: bytes) -> None:
    """lamina's tar reader against Python's tarfile (the reader layertar used before): where
    lamina reads the bytes, tarfile must read the same members and contents, or refuse them
    only by failing itself (RecursionError on a deep chain of extended headers, UnicodeDecodeError
    on a non-UTF-8 hdrcharset); tarfile refusing them as a bad tar (TarError) is a violation."""
    try:
        ours = lamina_members(data)
    except LaminaError as e:
        check_error(e)
        return
    try:
        theirs = tarfile_members(data)
    except (tarfile.TarError, EOFError) as e:
        raise ContractViolation(f"lamina reads {len(ours)} members where tarfile refuses the tar: {e!r}") from None
    except Exception:  # tarfile's own failures
        return
    if ours != theirs:
        diff = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        raise ContractViolation(f"lamina and tarfile read member {diff} differently: "
                                f"{_shown(ours, diff)} != {_shown(theirs, diff)} ({len(ours)} vs {len(theirs)} members)")


def _shown(read: list, i: int) -> str:  # type: ignore[type-arg]
    if i >= len(read):
        return "nothing"
    m, content = read[i]
    return repr((tuple(m), content if content is None or len(content) <= 32 else f"{len(content)} bytes"))


def with_checksums(data: bytes) -> bytes:
    """`data` with the checksum of each header made right, headers found as a reader would (after
    each header its data, for the types that have some): a mutated header still reads, so the
    differential check gets past the checksums to the fields behind them."""
    out = bytearray(data)
    pos = 0
    while pos + 512 <= len(out) and any(out[pos:pos + 512]):
        out[pos + 148:pos + 156] = b" " * 8
        out[pos + 148:pos + 155] = b"%06o\0" % sum(out[pos:pos + 512])
        try:
            size = max(0, int(bytes(out[pos + 124:pos + 136]).split(b"\0")[0].strip() or b"0", 8))
        except ValueError:
            break  # (or base-256: the rest is left as it is)
        pos += 512 + (0 if out[pos + 156:pos + 157] in (b"1", b"2", b"3", b"4", b"5", b"6") else -(-size // 512) * 512)
    return bytes(out)


def layer_tar(data: bytes, run: Run) -> None:
    """An uncompressed layer blob: the tar reader (against tarfile, also with its checksums made
    right), the walker, content hashing, ELF heads."""
    tar_differential(data)
    fixed = with_checksums(data)
    if fixed != data:
        tar_differential(fixed)
    _layer_tar(data, run)


_layer_tar = _layer_stream("none")
layer_gzip = _layer_stream("gzip")
layer_zstd = _layer_stream("zstd")


def elf(data: bytes, run: Run) -> None:
    """ELF heads: whole, streamed in pieces (same facts), and with a small head limit."""
    info = parse_elf(data)
    scanner = ElfScanner()
    step = 1 + (data[-1] if data else 0)
    for i in range(0, len(data), step):
        scanner.feed(data[i:i + step])
    if scanner.result() != info:
        raise ContractViolation(f"ELF facts depend on the chunking: {scanner.result()} != {info}")
    if info is not None and ElfInfo.from_json(json.loads(json.dumps(info.to_json()))) != info:
        raise ContractViolation(f"ELF facts do not survive the index: {info}")
    small = ElfScanner(limit=max(64, len(data) // 2))
    for i in range(0, len(data), 64):
        small.feed(data[i:i + 64])
    small.result()


# -- registry and Docker texts ---------------------------------------------------------------------


def www_authenticate(data: bytes, run: Run) -> None:
    """WWW-Authenticate values (as urllib3 decodes headers: latin-1) and the token requests they ask for."""
    header = data.decode("latin-1")
    merge_scopes(tuple(header.split()))
    for challenge in parse_challenges(header):
        if challenge.scheme == "bearer":
            for creds in (None, Credentials("user", "secret"), Credentials(identity_token="refresh")):
                token_request(challenge, ("repository:team/app:pull",), creds)


def token_response(data: bytes, run: Run) -> None:
    """A token endpoint's JSON answer."""
    parse_token_response(data, "https://auth.fuzz/token")


def docker_config(data: bytes, run: Run) -> None:
    """A Docker config.json, and a credential helper's `get` output."""
    path = run.path("config.json")
    with open(path, "wb") as f:
        f.write(data)
    run.inputs_written()
    config = load_docker_config(path)
    if parse_docker_config(data, path) != config:
        raise ContractViolation("load_docker_config and parse_docker_config disagree")
    if not config.cred_helpers and not config.creds_store:  # helpers would run programs named by the input
        creds = find_credentials(config, "registry.fuzz")
        if creds is not None:
            creds.basic
    parse_helper_output(data, "fuzz")


# -- lamina's own JSON -----------------------------------------------------------------------------


def spec(data: bytes, run: Run) -> None:
    """A compose spec, and a files-only spec, as the CLI reads them."""
    doc = parse_json(data, "spec.json")
    try:
        parse_files(doc)
    except LaminaError as e:
        check_error(e)
    parse_spec(doc)


def layer_index(data: bytes, run: Run) -> None:
    """A layer index (`lamina scan`'s output); once written back, it must read again the same."""
    once = loads(dumps(loads(data, "index.json")), "written")  # dumps normalizes (a directory's size is dropped)
    if loads(dumps(once), "again") != once:
        raise ContractViolation("a layer index does not survive dumps/loads")


# Targets whose input holds JSON documents: the fuzzer also mutates those as JSON (mutator.py).
JSON_TARGETS = frozenset({"docker_archive", "oci_layout", "oci_archive", "registry", "token_response", "docker_config",
                          "spec", "layer_index", "files_layer"})

TARGETS: dict[str, Callable[[bytes, Run], None]] = {
    "docker_archive": docker_archive,
    "oci_layout": oci_layout,
    "oci_archive": oci_archive,
    "archive_bytes": archive_bytes,
    "layer_tar": layer_tar,
    "layer_gzip": layer_gzip,
    "layer_zstd": layer_zstd,
    "elf": elf,
    "www_authenticate": www_authenticate,
    "token_response": token_response,
    "registry": registry,
    "docker_config": docker_config,
    "spec": spec,
    "layer_index": layer_index,
    "files_layer": files_layer,
}
