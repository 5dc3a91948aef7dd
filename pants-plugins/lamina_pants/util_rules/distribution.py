"""What a push sends of the layers Pants keeps: each uncompressed layer compressed once, in its own
process keyed on that layer's bytes alone (cached locally and remotely), so that re-publishing an
unchanged layer gives the same digest, compresses nothing and uploads nothing. Also for layers of an
engine image a destination registry already keeps (the push mounts those instead): whether it can is
known only when the push asks that registry, and the form is then the fallback."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Tuple

from pants.engine.addresses import Address
from pants.engine.fs import EMPTY_DIGEST, Digest, DigestContents, DigestSubset, PathGlobs, RemovePrefix
from pants.engine.rules import Get, MultiGet, collect_rules, rule

from lamina_pants.util_rules.core import LaminaRun, LaminaRunResult, read_only_dir
from lamina_pants.util_rules.layers import Bundle

SELECTION_FILE = "lamina-selection.json"  # lamina.extract.SELECTION_FILE
UNCOMPRESSED = "application/vnd.oci.image.layer.v1.tar"  # lamina.model.OCI_LAYER; distributable only
COMPRESSED_DIR = "__compressed"


@dataclass(frozen=True)
class CompressedLayersRequest:
    address: Address  # the image they are for (named in errors)
    bundles: Tuple[Bundle, ...]
    compression: str  # "gzip" or "zstd"


@dataclass(frozen=True)
class CompressedLayers:
    """Directories `lamina compress` wrote, one per uncompressed layer, by the name a process sees
    them under (read-only inputs)."""

    dirs: Tuple[Tuple[str, Digest], ...]


@dataclass(frozen=True)
class _CompressOne:
    address: Address
    blob: Digest  # a digest holding only the layer blob, at `path`
    path: str
    digest: str
    compression: str


@rule
async def compress_one(request: _CompressOne) -> Digest:
    # Its only input is the one blob: the same layer in any image, of any bundle, is one cache entry.
    blob_dir = read_only_dir("layer", request.blob)
    result = await Get(
        LaminaRunResult,
        LaminaRun(
            address=request.address,
            argv=("compress", f"{blob_dir}/{request.path}", f"--digest={request.digest}",
                  f"--compression={request.compression}", f"--out={COMPRESSED_DIR}"),
            input_digest=EMPTY_DIGEST,
            read_only_inputs=((blob_dir, request.blob),),
            output_directory=COMPRESSED_DIR,
            description=f"lamina: compress layer {request.digest[:19]} ({request.compression})",
        ),
    )
    return await Get(Digest, RemovePrefix(result.output_digest, COMPRESSED_DIR))


def _uncompressed_layers(selection: bytes) -> list[str]:
    data = json.loads(selection)
    return [
        layer["descriptor"]["digest"]
        for layer in data.get("layers", [])
        if layer.get("descriptor", {}).get("mediaType") == UNCOMPRESSED
    ]


@rule
async def compressed_layers(request: CompressedLayersRequest) -> CompressedLayers:
    selections = await MultiGet(
        Get(DigestContents, DigestSubset(b.digest, PathGlobs([SELECTION_FILE]))) for b in request.bundles
    )
    wanted: dict = {}  # layer digest -> (bundle digest, path of its blob)
    for bundle, contents in zip(request.bundles, selections):
        if bundle.shallow:  # no bytes here: its layers are in the registry, as they are kept there
            continue
        for entry in contents:
            for digest in _uncompressed_layers(entry.content):
                path = "blobs/sha256/" + digest.split(":", 1)[1]
                wanted.setdefault(digest, (bundle.digest, path))
    blobs = await MultiGet(Get(Digest, DigestSubset(bundle, PathGlobs([path]))) for bundle, path in wanted.values())
    dirs = await MultiGet(
        Get(Digest, _CompressOne(request.address, blob, path, digest, request.compression))
        for blob, (digest, (_, path)) in zip(blobs, wanted.items())
    )
    return CompressedLayers(tuple((read_only_dir("compressed", d), d) for d in dirs))


def rules() -> Iterable:
    return collect_rules()
