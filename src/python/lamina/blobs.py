"""Streaming blob I/O: verified reads, hashing, copying and decompression in fixed-size chunks."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import zlib
from typing import BinaryIO, Callable, Iterator, Optional

from lamina.errors import DigestMismatch, InvalidSource

CHUNK = 1 << 20  # 1 MiB: every copy and hash works in pieces of this size.
_ZSTD_HEADER_MAX = 18  # the largest zstd frame header
_ZSTD_UNKNOWN_SIZE = (1 << 64) - 1  # a frame header's content size when it does not declare one
_ZSTD_FEED = 1 << 10  # zstd input per decompress call: at most ~32 MiB out, even from a bomb

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

Opener = Callable[[], BinaryIO]


def sniff_compression(head: bytes) -> str:
    """'gzip', 'zstd' or 'none' from a blob's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class VerifiedReader(io.RawIOBase):
    """Reads a stream of known digest and size; raises DigestMismatch at the end if it lies."""

    def __init__(self, raw: BinaryIO, digest: str, size: Optional[int], what: str) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._size = size
        self._what = what
        self._hash = hashlib.sha256()
        self._count = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._done:
            return 0
        want = len(buffer)
        if self._size is not None:
            want = min(want, max(self._size - self._count, 0) + 1)
        view = memoryview(buffer)[:want]
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:  # straight into the caller's buffer: no copy
            n = readinto(view) or 0
        else:
            data = self._raw.read(want) if want else b""
            n = len(data)
            view[:n] = data
        if not n:
            self._finish()
            return 0
        self._count += n
        if self._size is not None and self._count > self._size:
            raise DigestMismatch(f"{self._what}: blob is larger than its declared size {self._size}")
        self._hash.update(view[:n])
        return n

    def _finish(self) -> None:
        self._done = True
        if self._size is not None and self._count != self._size:
            raise DigestMismatch(
                f"{self._what}: blob has {self._count} bytes, its descriptor says {self._size} "
                "(truncated or corrupt)"
            )
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            raise DigestMismatch(f"{self._what}: blob content is {actual}, expected {self._digest}")

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class UncompressedCheckingReader(VerifiedReader):
    """Reads a layer's uncompressed stream; at its end, checks that it hashes to the layer's diff_id."""

    def __init__(self, raw: BinaryIO, diff_id: str, what: str) -> None:
        super().__init__(raw, diff_id, None, what)

    def _finish(self) -> None:
        self._done = True
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            raise DigestMismatch(f"{self._what}: uncompressed content is {actual}, the config says {self._digest}")


class TeeReader(io.RawIOBase):
    """Reads `raw` and writes every byte it reads to `sink`, if any (and counts it in `progress`, if
    given): one pass both stores a blob and feeds whatever reads it (a hash, a tar walk)."""

    def __init__(self, raw: BinaryIO, sink: Optional[BinaryIO], progress: Optional[Callable[[int], None]] = None) -> None:
        super().__init__()
        self._raw = raw
        self._sink = sink
        self._progress = progress
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:
            n = readinto(buffer) or 0
        else:
            data = self._raw.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        if n:
            if self._sink is not None:
                self._sink.write(memoryview(buffer)[:n])
            self.count += n
            if self._progress is not None:
                self._progress(n)
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def verified(opener: Opener, digest: str, size: Optional[int], what: str,
             diff_id: Optional[tuple[str, str]] = None) -> BinaryIO:
    """A buffered reader of `opener()` that checks digest and size when read to the end.

    With `diff_id` as (compression, diff_id), it also checks what the bytes decompress to.
    """
    stream = io.BufferedReader(VerifiedReader(opener(), digest, size, what), CHUNK)
    if diff_id is None or diff_id == ("none", digest):
        return stream  # type: ignore[return-value]  # an uncompressed blob's digest is its diff_id
    return io.BufferedReader(DiffIdCheckingReader(stream, diff_id[0], diff_id[1], what), CHUNK)  # type: ignore


class Window(io.RawIOBase):
    """At most `n` bytes of a stream from its current position, read in pieces of at most CHUNK,
    never all in memory; short if the stream ends first. A tar member, or one upload chunk's body.

    Closing it closes `stream` only if it `owns` it (an upload reads several windows of one stream)."""

    def __init__(self, stream: BinaryIO, n: int, owns: bool = False) -> None:
        super().__init__()
        self._stream = stream
        self._left = n
        self._owns = owns

    def readable(self) -> bool:
        return True

    def extent(self) -> Optional[tuple[int, int, int]]:
        """(fd, offset, length) of the bytes left to read, when `stream` is a file (see file_extent)."""
        try:
            return self._stream.fileno(), self._stream.tell(), self._left
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None

    def read(self, size: Optional[int] = -1) -> bytes:  # type: ignore[override]
        if self._left <= 0:
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.read(min(want, CHUNK))
        self._left -= len(data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            if self._owns:
                self._stream.close()
        finally:
            super().close()


def chunks(stream: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    while True:
        data = stream.read(chunk)
        if not data:
            return
        yield data


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """(digest, size) of everything left in `stream`."""
    h = hashlib.sha256()
    n = 0
    for data in chunks(stream):
        h.update(data)
        n += len(data)
    return "sha256:" + h.hexdigest(), n


def sha256_file(path: str) -> tuple[str, int]:
    with open(path, "rb") as f:
        return sha256_stream(f)


def copy_stream(src: BinaryIO, dst: BinaryIO) -> int:
    n = 0
    for data in chunks(src):
        dst.write(data)
        n += len(data)
    return n


class _ZstdReader(io.RawIOBase):
    """zstd decompression (frames one after another) that turns truncation and corruption into
    InvalidSource; fed _ZSTD_FEED bytes at a time, so a bomb never yields much at once."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        import zstandard

        self._zstd = zstandard
        self._raw = raw
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False  # input went into the current frame
        self._pending = b""  # compressed input read, from self._at on not yet fed
        self._at = 0
        self._carry = b""  # input fed to a frame that ended before it
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self._pos >= len(self._out):
            if self._d.eof:  # the next frame
                self._d = self._zstd.ZstdDecompressor().decompressobj()
                self._fed = False
            if self._carry:  # fed to the last frame, not consumed by it: at most _ZSTD_FEED bytes
                feed, self._carry = self._carry, b""
            else:
                if self._at >= len(self._pending):
                    self._pending, self._at = self._raw.read(CHUNK), 0
                    if not self._pending:
                        if self._fed and not self._d.eof:
                            raise InvalidSource("truncated zstd layer")
                        return 0
                feed = self._pending[self._at:self._at + _ZSTD_FEED]
                self._at += len(feed)
            try:
                self._out = self._d.decompress(feed)
            except self._zstd.ZstdError as e:  # keep it one line for the user
                raise InvalidSource(f"corrupt zstd layer: {e}") from e
            self._pos = 0
            self._fed = True
            if self._d.eof and self._d.unused_data:  # the next frame starts inside what was fed
                self._carry = self._d.unused_data
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _GzipReader(io.RawIOBase):
    """gzip decompression, member after member, that turns truncation and corruption into
    InvalidSource: whatever follows a member must be another member (as DiffIdHasher, which
    computes diff_ids, reads them: a layer is read the same way wherever it is read). At most
    CHUNK bytes come out per step, so a bomb never yields much at once."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._d = zlib.decompressobj(wbits=31)
        self._fed = False  # input went into the current member
        self._pending = b""
        self._out = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self._pos >= len(self._out):
            if self._d.eof:  # the next member, if anything follows
                rest = self._d.unused_data
                self._d, self._fed = zlib.decompressobj(wbits=31), False
                self._pending = rest + self._pending
            data = self._d.unconsumed_tail  # input the last step had no room to decompress
            if not data:
                if not self._pending:
                    self._pending = self._raw.read(CHUNK)
                    if not self._pending:
                        if self._fed:
                            raise InvalidSource("corrupt or truncated gzip layer: truncated gzip layer")
                        return 0
                data, self._pending = self._pending, b""
            try:
                self._out = self._d.decompress(data, CHUNK)
            except zlib.error as e:
                raise InvalidSource(f"corrupt or truncated gzip layer: {e}") from e
            self._pos, self._fed = 0, True
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def decompressed(stream: BinaryIO, compression: str) -> BinaryIO:
    """A reader of the uncompressed bytes of `stream`."""
    if compression == "none":
        return stream
    if compression == "gzip":
        return io.BufferedReader(_GzipReader(stream), CHUNK)  # type: ignore[return-value]
    if compression == "zstd":
        return io.BufferedReader(_ZstdReader(stream), CHUNK)  # type: ignore[return-value]
    raise ValueError(compression)


def fsync_outputs() -> bool:
    """Whether finished outputs are fsync'ed before their atomic rename: yes, unless
    LAMINA_NO_FSYNC=1 (set where something else takes the output over, as Pants does from its
    sandboxes, so a sync there would only cost time)."""
    return os.environ.get("LAMINA_NO_FSYNC", "") != "1"


def file_extent(stream: BinaryIO) -> Optional[tuple[int, int, int]]:
    """(fd, offset, length) when `stream`, not yet read, reads a byte range of a regular file:
    a plain file from its position to its end, or a tar member's window. None otherwise."""
    extent = getattr(stream, "extent", None)
    if callable(extent):
        return extent()  # type: ignore[no-any-return]
    if not isinstance(stream, (io.BufferedReader, io.FileIO)):
        return None
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
        pos = stream.tell()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return (fd, pos, st.st_size - pos) if stat.S_ISREG(st.st_mode) else None


def copy_extent(src: BinaryIO, dst: BinaryIO, size: int, what: str) -> bool:
    """Copy a blob of known size from `src` (see file_extent) to `dst`'s position by
    copy_file_range, inside the kernel, for a blob already verified (the bytes are copied
    exactly; a short source is an error). False, with nothing written, when `src` is not such a
    range of the right length or the file systems cannot do it."""
    extent = file_extent(src)
    copy_range = getattr(os, "copy_file_range", None)
    if extent is None or extent[2] != size or copy_range is None:
        return False
    src_fd, src_off, _ = extent
    dst.flush()
    dst_fd, start = dst.fileno(), dst.tell()
    done = 0
    try:
        while done < size:
            n = copy_range(src_fd, dst_fd, min(size - done, 1 << 30), src_off + done, start + done)
            if n == 0:
                raise DigestMismatch(f"{what}: blob has {done} bytes, its descriptor says {size} (truncated or corrupt)")
            done += n
    except OSError:  # EXDEV, ENOSYS, EOPNOTSUPP...: undo, and let the caller copy
        os.ftruncate(dst_fd, start)
        dst.seek(start)
        return False
    dst.seek(start + size)
    return True


def copy_extent_verified(src: BinaryIO, dst: BinaryIO, digest: str, size: int, what: str) -> bool:
    """copy_extent, then hash the bytes as written to `dst`: DigestMismatch if they are not the
    blob. False, with nothing written, when the kernel cannot copy it; the caller then copies
    through user space (whose errors name a wrong size precisely)."""
    dst.flush()
    start = dst.tell()
    if not copy_extent(src, dst, size, what):
        return False
    dst_fd = dst.fileno()
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    pos = start
    while pos < start + size:
        n = os.preadv(dst_fd, [view[: min(CHUNK, start + size - pos)]], pos)
        if n <= 0:
            raise DigestMismatch(f"{what}: could not read back the copied blob")
        h.update(view[:n])
        pos += n
    actual = "sha256:" + h.hexdigest()
    if actual != digest:
        raise DigestMismatch(f"{what}: blob content is {actual}, expected {digest}")
    return True


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link `src` to `dst` when they share a file system, else copy in chunks."""
    try:
        os.link(src, dst)
        return
    except OSError:
        pass
    with open(src, "rb") as s, open(dst, "wb") as d:
        copy_stream(s, d)


class DiffIdHasher:
    """Hashes the uncompressed form of a blob fed in compressed chunks, in the same pass as a copy."""

    def __init__(self, compression: str, what: str) -> None:
        self._what = what
        self._hash = hashlib.sha256()
        self._compression = compression
        self._d = self._new()
        self._frame_head = bytearray()  # the first bytes of the current zstd frame (its header)
        self._frame_out = 0  # what the current zstd frame decompressed to so far

    def _new(self):  # type: ignore[no-untyped-def]
        if self._compression == "gzip":
            return zlib.decompressobj(wbits=31)
        if self._compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        return None

    def update(self, data: bytes) -> None:
        if self._d is None:
            self._hash.update(data)
            return
        try:
            if self._compression == "gzip":
                self._feed_gzip(data)
            else:
                for i in range(0, len(data), _ZSTD_FEED):
                    self._feed_zstd(data[i:i + _ZSTD_FEED])
        except zlib.error as e:
            raise InvalidSource(f"{self._what}: corrupt gzip layer ({e})") from e
        except Exception as e:
            if type(e).__name__ == "ZstdError":
                raise InvalidSource(f"{self._what}: corrupt zstd layer ({e})") from e
            raise

    # Both feeders bound the output of one step, so a small blob that inflates to gigabytes
    # (a decompression bomb) is hashed piece by piece, never held in memory whole. Concatenated
    # gzip members and zstd frames decompress as one stream, wherever the chunks split them.

    def _feed_gzip(self, data: bytes) -> None:
        while True:
            if self._d.eof:
                if not data:
                    return
                self._d = self._new()  # the next member
            out = self._d.decompress(data, CHUNK)  # at most CHUNK bytes out per call
            self._hash.update(out)
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            if not data and len(out) < CHUNK:  # a full CHUNK out: more may be waiting
                return

    def _feed_zstd(self, data: bytes) -> None:  # zstandard has no output limit: _ZSTD_FEED bytes in per call
        while data:
            if self._d.eof:
                self._d = self._new()
                self._frame_head, self._frame_out = bytearray(), 0
            if len(self._frame_head) < _ZSTD_HEADER_MAX:
                self._frame_head += data[: _ZSTD_HEADER_MAX - len(self._frame_head)]
            out = self._d.decompress(data)
            self._frame_out += len(out)
            self._hash.update(out)
            if self._d.eof:
                self._check_frame_size()
            data = self._d.unused_data if self._d.eof else b""

    def _check_frame_size(self) -> None:
        """Fed in pieces, libzstd can end a frame without checking the content size its header
        declares (fed whole, it does): check it here, so the pieces do not change the verdict."""
        import zstandard

        try:
            size = zstandard.get_frame_parameters(bytes(self._frame_head)).content_size
        except zstandard.ZstdError:
            return  # no frame header to hold it to (a skippable frame)
        if size != _ZSTD_UNKNOWN_SIZE and size != self._frame_out:
            raise InvalidSource(f"{self._what}: corrupt zstd layer (a frame declares {size} bytes of content "
                                f"and holds {self._frame_out})")

    def digest(self) -> str:
        if self._d is not None and not self._d.eof:
            raise InvalidSource(f"{self._what}: truncated {self._compression} layer")
        return "sha256:" + self._hash.hexdigest()


class DiffIdCheckingReader(io.RawIOBase):
    """Passes a layer blob's bytes through; at their end, checks that they decompress to `diff_id`."""

    def __init__(self, raw: BinaryIO, compression: str, diff_id: str, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._hasher = DiffIdHasher(compression, what)
        self._diff_id = diff_id
        self._what = what
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        if not data:
            if not self._done:
                self._done = True
                actual = self._hasher.digest()
                if actual != self._diff_id:
                    raise DigestMismatch(
                        f"{self._what}: uncompressed content is {actual}, the config says {self._diff_id}"
                    )
            return 0
        self._hasher.update(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
