"""Tests of streaming blob I/O: verified reads, decompression errors, diff_id hashing in any chunking."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tracemalloc
import zlib

import pytest
import zstandard

from lamina.blobs import DiffIdHasher, copy_extent_verified, decompressed, sha256_stream, sniff_compression, verified
from lamina.errors import DigestMismatch, InvalidSource
from lamina_testing.images import compress, sha

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


# --- copy_extent_verified: the kernel copies, then the copy is hashed ---------------------------


def _extent_case(tmp_path, data: bytes, prefix: bytes = b"junk" * 100):  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.write_bytes(prefix + data + b"trailer")
    f = open(src, "rb")
    f.seek(len(prefix))
    return f


class _Range(io.RawIOBase):
    """A stream that says it is `length` bytes at `offset` of an open file (as a tar member's window)."""

    def __init__(self, f, offset: int, length: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.f, self.offset, self.length = f, offset, length

    def extent(self):  # type: ignore[no-untyped-def]
        return self.f.fileno(), self.offset, self.length


def test_copy_extent_verified_copies_a_file_range_and_checks_the_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = DATA * 40  # several chunks
    prefix = b"junk" * 100
    src = tmp_path / "src"
    src.write_bytes(prefix + data)
    with open(src, "rb") as f, open(tmp_path / "dst", "w+b") as out:
        out.write(b"header")
        assert copy_extent_verified(_Range(f, len(prefix), len(data)), out, sha(data), len(data), "blob")
        assert out.tell() == 6 + len(data)
        out.write(b"after")
    assert (tmp_path / "dst").read_bytes() == b"header" + data + b"after"


def test_copy_extent_verified_from_a_plain_file_reads_from_its_position(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with _extent_case(tmp_path, DATA, prefix=b"") as f, open(tmp_path / "dst", "w+b") as out:
        # the file holds DATA + b"trailer": a plain file's range runs to its end, so the size
        # does not match and the caller is told to copy through user space
        assert not copy_extent_verified(f, out, sha(DATA), len(DATA), "blob")
        assert out.tell() == 0 and (tmp_path / "dst").stat().st_size == 0
    (tmp_path / "exact").write_bytes(DATA)
    with open(tmp_path / "exact", "rb") as f, open(tmp_path / "dst", "w+b") as out:
        assert copy_extent_verified(f, out, sha(DATA), len(DATA), "blob")
    assert (tmp_path / "dst").read_bytes() == DATA


def test_copy_extent_verified_refuses_bytes_that_are_not_the_blob(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open(_write(tmp_path, DATA), "rb") as f, open(tmp_path / "dst", "w+b") as out:
        with pytest.raises(DigestMismatch, match=r"blob: blob content is sha256:.*, expected sha256:0000"):
            copy_extent_verified(f, out, "sha256:" + "0" * 64, len(DATA), "blob")


def test_copy_extent_verified_reports_a_truncated_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open(_write(tmp_path, DATA), "rb") as f, open(tmp_path / "dst", "w+b") as out:
        with pytest.raises(DigestMismatch, match="truncated"):  # a window longer than the file
            copy_extent_verified(_Range(f, 0, len(DATA) + 10), out, sha(DATA), len(DATA) + 10, "blob")


def test_copy_extent_verified_leaves_other_streams_and_failing_kernels_to_the_caller(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    with open(tmp_path / "dst", "w+b") as out:
        assert not copy_extent_verified(io.BytesIO(DATA), out, sha(DATA), len(DATA), "blob")

        def cross_device(*args):  # type: ignore[no-untyped-def]
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", cross_device)
        out.write(b"kept")
        with open(_write(tmp_path, DATA), "rb") as f:
            assert not copy_extent_verified(f, out, sha(DATA), len(DATA), "blob")
        assert out.tell() == 4
    assert (tmp_path / "dst").read_bytes() == b"kept"


def _write(tmp_path, data: bytes):  # type: ignore[no-untyped-def]
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path


def test_gzip_and_zstd_layers_read_alike_wherever_they_are_read() -> None:
    """decompressed() (the tar walks, extract --index) and DiffIdHasher (diff_id checks) agree: a
    stream of several members or frames reads whole; bytes after the last gzip member that do
    not start another one are refused by both (gzip.GzipFile alone skips trailing zeros)."""
    import gzip as _gzip

    import zstandard

    two = _gzip.compress(DATA[:5000], mtime=0) + _gzip.compress(DATA[5000:], mtime=0)
    assert decompressed(io.BytesIO(two), "gzip").read() == DATA
    frames = b"".join(zstandard.ZstdCompressor().compress(DATA[i:i + 700]) for i in range(0, len(DATA), 700))
    assert decompressed(io.BytesIO(frames), "zstd").read() == DATA
    padded = _gzip.compress(DATA, mtime=0) + b"\0" * 64
    with pytest.raises(InvalidSource, match="corrupt or truncated gzip layer"):
        decompressed(io.BytesIO(padded), "gzip").read()
    hasher = DiffIdHasher("gzip", "l")
    with pytest.raises(InvalidSource, match="corrupt gzip layer"):
        hasher.update(padded)


@pytest.mark.parametrize("step", [10, 7, 1])
def test_a_zstd_frame_holding_less_than_it_declares_is_corrupt_however_it_is_fed(step: int) -> None:
    # found by lamina_fuzz: fed in pieces, libzstd ended this frame (declared size 3584, one empty
    # raw block) without an error, and DiffIdHasher hashed it as empty content
    data = bytes.fromhex("28b52ffd60000d010000")
    hasher = DiffIdHasher("zstd", "layer")
    with pytest.raises(InvalidSource, match="corrupt zstd layer"):
        for i in range(0, len(data), step):
            hasher.update(data[i:i + step])
        hasher.digest()
