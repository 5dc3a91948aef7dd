from __future__ import annotations

import gzip
import hashlib
import io
import tracemalloc
import zlib

import pytest
import zstandard

from lamina.blobs import DiffIdHasher, decompressed, sha256_stream, sniff_compression, verified
from lamina.errors import DigestMismatch, InvalidSource
from lamina.testing.images import compress, sha

DATA = bytes(range(256)) * 300


def _opener(data: bytes):  # type: ignore[no-untyped-def]
    return lambda: io.BytesIO(data)


def test_verified_reads_matching_blob() -> None:
    with verified(_opener(DATA), sha(DATA), len(DATA), "blob") as f:
        assert f.read() == DATA


@pytest.mark.parametrize(
    "data, size, message",
    [
        (DATA[:-1] + b"\0", len(DATA), r"blob: blob content is sha256:[0-9a-f]{64}, expected " + sha(DATA)),
        (DATA[:1000], len(DATA), rf"blob: blob has 1000 bytes, its descriptor says {len(DATA)} \(truncated or corrupt\)"),
        (DATA + b"x", len(DATA), rf"blob: blob is larger than its declared size {len(DATA)}"),
    ],
    ids=["flipped", "short", "long"],
)
def test_verified_raises_when_blob_lies(data: bytes, size: int, message: str) -> None:
    with pytest.raises(DigestMismatch, match=message):
        with verified(_opener(data), sha(DATA), size, "blob") as f:
            f.read()


def test_verified_checks_diff_id_when_asked() -> None:
    blob = compress(DATA, "gzip")
    with verified(_opener(blob), sha(blob), len(blob), "l", ("gzip", sha(DATA))) as f:
        assert f.read() == blob
    with pytest.raises(DigestMismatch, match="l: uncompressed content is " + sha(DATA) + ", the config says " + sha(b"")):
        with verified(_opener(blob), sha(blob), len(blob), "l", ("gzip", sha(b""))) as f:
            f.read()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_sniff_and_decompress(compression: str) -> None:
    blob = compress(DATA, compression)
    assert sniff_compression(blob[:4]) == compression
    assert decompressed(io.BytesIO(blob), compression).read() == DATA


def test_decompress_truncated_gzip_is_invalid_source() -> None:
    blob = compress(DATA, "gzip")
    with pytest.raises(InvalidSource, match="corrupt or truncated gzip layer"):
        decompressed(io.BytesIO(blob[: len(blob) // 2]), "gzip").read()


def test_decompress_corrupt_zstd_is_invalid_source() -> None:
    blob = bytearray(compress(DATA, "zstd"))
    blob[5] ^= 0xFF  # frame header
    with pytest.raises(InvalidSource, match="corrupt zstd layer"):
        decompressed(io.BytesIO(bytes(blob)), "zstd").read()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("piece", [1, 7, 1 << 20], ids=["bytewise", "small", "whole"])
def test_diff_id_hasher_hashes_uncompressed_bytes_in_any_chunking(compression: str, piece: int) -> None:
    blob = compress(DATA, compression)
    h = DiffIdHasher(compression, "l")
    for i in range(0, len(blob), piece):
        h.update(blob[i:i + piece])
    assert h.digest() == sha(DATA)


def test_diff_id_hasher_joins_concatenated_gzip_members_and_zstd_frames() -> None:
    for compression, blob in [
        ("gzip", gzip.compress(DATA[:100], mtime=0) + gzip.compress(DATA[100:], mtime=0)),
        ("zstd", zstandard.ZstdCompressor().compress(DATA[:100]) + zstandard.ZstdCompressor().compress(DATA[100:])),
    ]:
        h = DiffIdHasher(compression, "l")
        h.update(blob)
        assert h.digest() == sha(DATA), compression


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_diff_id_hasher_reports_truncation(compression: str) -> None:
    blob = compress(DATA, compression)
    h = DiffIdHasher(compression, "layer 3")
    h.update(blob[: len(blob) // 2])
    with pytest.raises(InvalidSource, match=f"^layer 3: truncated {compression} layer$"):
        h.digest()


def test_diff_id_hasher_reports_corrupt_gzip() -> None:
    blob = bytearray(compress(DATA, "gzip"))
    blob[12] ^= 0xFF
    h = DiffIdHasher("gzip", "l")
    with pytest.raises(InvalidSource, match="l: corrupt gzip layer"):
        h.update(bytes(blob))
        h.digest()


def test_sha256_stream_counts_bytes() -> None:
    assert sha256_stream(io.BytesIO(DATA)) == (sha(DATA), len(DATA))


def test_zstd_frames_and_gzip_members_may_end_exactly_at_a_chunk_edge() -> None:
    frames = [zstandard.ZstdCompressor().compress(DATA[:100]), zstandard.ZstdCompressor().compress(DATA[100:])]
    members = [gzip.compress(DATA[:100], mtime=0), gzip.compress(DATA[100:], mtime=0)]
    for compression, pieces in [("zstd", frames), ("gzip", members)]:
        h = DiffIdHasher(compression, "l")
        for piece in pieces + [b""]:
            h.update(piece)
        assert h.digest() == sha(DATA), compression


def _bomb(compression: str, size: int) -> bytes:
    zeros = b"\0" * (1 << 22)
    if compression == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(c.compress(zeros) for _ in range(size // len(zeros))) + c.flush()
    z = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    return b"".join(z.compress(zeros) for _ in range(size // len(zeros))) + z.flush()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_diff_id_hasher_memory_stays_bounded_on_a_decompression_bomb(compression: str) -> None:
    size = 256 << 20
    blob = _bomb(compression, size)
    assert len(blob) < size // 500  # it is a bomb
    h = DiffIdHasher(compression, "l")
    tracemalloc.start()
    try:
        for i in range(0, len(blob), 1 << 20):
            h.update(blob[i:i + (1 << 20)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    zeros = hashlib.sha256()
    for _ in range(size >> 20):
        zeros.update(bytes(1 << 20))
    assert h.digest() == "sha256:" + zeros.hexdigest()
    assert peak < 48 << 20, f"peak {peak >> 20} MiB"
