"""A streaming ELF reader: interpreter, DT_NEEDED, SONAME, RUNPATH/RPATH from a file's bytes fed in order."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping, Optional

MAGIC = b"\x7fELF"
HEAD_LIMIT = 8 << 20  # at most this much of a file's start is kept while streaming it
SEGMENT_LIMIT = 1 << 20  # PT_DYNAMIC / PT_INTERP / string tables beyond HEAD_LIMIT: at most this much each

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
_TYPES = {1: "rel", 2: "exec", 3: "dyn", 4: "core"}

# e_machine -> the Debian multiarch triplets its libraries live under.
TRIPLETS: Mapping[int, tuple[str, ...]] = {
    3: ("i386-linux-gnu",),
    8: ("mips-linux-gnu", "mipsel-linux-gnu", "mips64el-linux-gnuabi64"),
    20: ("powerpc-linux-gnu",),
    21: ("powerpc64le-linux-gnu", "powerpc64-linux-gnu"),
    22: ("s390x-linux-gnu",),
    40: ("arm-linux-gnueabihf", "arm-linux-gnueabi"),
    62: ("x86_64-linux-gnu",),
    183: ("aarch64-linux-gnu",),
    243: ("riscv64-linux-gnu",),
    258: ("loongarch64-linux-gnu",),
}
# OCI architecture names -> e_machine.
MACHINES: Mapping[str, int] = {
    "386": 3, "amd64": 62, "arm": 40, "arm64": 183, "ppc64le": 21, "ppc64": 21, "s390x": 22,
    "riscv64": 243, "mips": 8, "mipsle": 8, "mips64": 8, "mips64le": 8, "loong64": 258,
}


@dataclass(frozen=True)
class ElfInfo:
    """What the dynamic loader needs of one ELF file."""

    bits: int  # 32 or 64
    endian: str  # "little" or "big"
    type: str  # "exec", "dyn", "rel", "core" or the number
    machine: int  # e_machine (62 = x86-64, 183 = aarch64, ...)
    interp: str = ""
    needed: tuple[str, ...] = ()
    soname: str = ""
    runpath: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    complete: bool = True  # False when the dynamic section or its strings lay beyond what was read

    @property
    def is_dynamic(self) -> bool:
        return bool(self.interp or self.needed)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bits": self.bits, "endian": self.endian, "type": self.type, "machine": self.machine}
        for key in ("interp", "soname"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        for key in ("needed", "runpath", "rpath"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if not self.complete:
            out["complete"] = False
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ElfInfo:
        return ElfInfo(
            bits=int(data["bits"]),
            endian=str(data["endian"]),
            type=str(data["type"]),
            machine=int(data["machine"]),
            interp=str(data.get("interp", "")),
            needed=tuple(str(n) for n in data.get("needed", ())),
            soname=str(data.get("soname", "")),
            runpath=tuple(str(n) for n in data.get("runpath", ())),
            rpath=tuple(str(n) for n in data.get("rpath", ())),
            complete=bool(data.get("complete", True)),
        )


@dataclass(frozen=True)
class _Header:
    bits: int
    endian: str
    type: str
    machine: int
    phoff: int
    phentsize: int
    phnum: int

    @property
    def fmt(self) -> str:
        return "<" if self.endian == "little" else ">"

    @property
    def ph_end(self) -> int:
        return self.phoff + self.phentsize * self.phnum


@dataclass(frozen=True)
class _Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int


def _header(data: bytes) -> Optional[_Header]:
    if len(data) < 52 or data[:4] != MAGIC or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    bits = 64 if data[4] == 2 else 32
    endian = "little" if data[5] == 1 else "big"
    e = "<" if endian == "little" else ">"
    if bits == 64:
        if len(data) < 64:
            return None
        e_type, machine = struct.unpack_from(e + "HH", data, 16)
        (phoff,) = struct.unpack_from(e + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 54)
        if phnum and phentsize < 56:
            return None
    else:
        e_type, machine = struct.unpack_from(e + "HH", data, 16)
        (phoff,) = struct.unpack_from(e + "I", data, 28)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 42)
        if phnum and phentsize < 32:
            return None
    if phnum == 0xFFFF:  # PN_XNUM: the count is in a section header; not worth supporting
        return None
    return _Header(bits, endian, _TYPES.get(e_type, str(e_type)), machine, phoff, phentsize, phnum)


def _segments(h: _Header, data: bytes) -> list[_Segment]:
    out = []
    for i in range(h.phnum):
        off = h.phoff + i * h.phentsize
        if h.bits == 64:
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(h.fmt + "IIQQQQ", data, off)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(h.fmt + "IIIII", data, off)
        out.append(_Segment(p_type, p_offset, p_vaddr, p_filesz))
    return out


class ElfScanner:
    """Fed a file's bytes in order, keeps only what the ELF facts need: the head and a few segments.

    Memory is bounded by `limit` plus SEGMENT_LIMIT per wanted segment, whatever the file's size.
    """

    def __init__(self, limit: int = HEAD_LIMIT) -> None:
        self._limit = limit
        self._head = bytearray()
        self._pos = 0  # bytes fed so far
        self._header: Optional[_Header] = None
        self._segments: Optional[list[_Segment]] = None
        self._wanted: dict[int, int] = {}  # offset -> size of ranges beyond the head to keep
        self._kept: dict[int, bytearray] = {}
        self._not_elf = False
        self._done: Optional[ElfInfo] = None  # the facts, decided before the end of the file

    def feed(self, data: bytes) -> None:
        if self._not_elf or self._done is not None or not data:
            self._pos += len(data)
            return
        start, end = self._pos, self._pos + len(data)
        if start < self._limit:
            self._head += data[: self._limit - start]
        if self._segments is None:
            self._read_headers(final=False)
        for off, size in self._wanted.items():
            lo, hi = max(off, start), min(off + size, end)
            if lo < hi:
                self._kept[off] += data[lo - start: hi - start]
        self._pos = end
        self._settle()

    def _settle(self) -> None:
        """Once the segments the facts come from have streamed by, decide and drop the kept bytes."""
        if self._segments is None:
            return
        ends = [s.offset + s.filesz for s in self._segments if s.type in (PT_DYNAMIC, PT_INTERP)]
        if ends and self._pos < max(ends):
            return
        info = self._compute()
        # Complete, or past the head limit so that no later byte can complete it: decided.
        if info is not None and (info.complete or self._pos >= self._limit):
            self._done = info
            self._head = bytearray()
            self._kept = {}
            self._wanted = {}

    def _read_headers(self, final: bool) -> None:
        if (len(self._head) >= 4 or final) and self._head[:4] != MAGIC:
            self._not_elf = True
            self._head = bytearray()
            return
        if self._header is None and (len(self._head) >= 64 or final):
            self._header = _header(bytes(self._head[:64]))
            if self._header is None:
                self._not_elf = True
                self._head = bytearray()
                return
        h = self._header
        if h is None or len(self._head) < h.ph_end:
            if h is not None and h.ph_end > self._limit:
                self._segments = []  # program headers beyond the limit: no facts beyond the header
            return
        self._segments = _segments(h, bytes(self._head[: h.ph_end]))
        for seg in self._segments:
            if seg.type in (PT_DYNAMIC, PT_INTERP) and seg.offset + seg.filesz > self._limit:
                self._want(seg.offset, seg.filesz)

    def _want(self, offset: int, size: int) -> None:
        """Keep [offset, offset + size) as it streams by (the current chunk starts at self._pos)."""
        if size <= SEGMENT_LIMIT and offset >= self._pos and offset not in self._wanted:
            self._wanted[offset] = size
            self._kept[offset] = bytearray()

    def _read(self, offset: int, size: int) -> Optional[bytes]:
        if offset + size <= len(self._head):
            return bytes(self._head[offset: offset + size])
        for off, kept in self._kept.items():
            if off <= offset and offset + size <= off + len(kept):
                return bytes(kept[offset - off: offset - off + size])
        return None

    def result(self) -> Optional[ElfInfo]:
        """The facts, or None when the bytes are not an ELF file."""
        if self._done is not None:
            return self._done
        return self._compute()

    def _compute(self) -> Optional[ElfInfo]:
        if self._not_elf:
            return None
        if self._segments is None:
            self._read_headers(final=True)
        h = self._header
        if h is None:
            return None
        if self._segments is None:  # a file cut short in its program headers
            return ElfInfo(h.bits, h.endian, h.type, h.machine, complete=False)
        complete = bool(self._segments) or h.phnum == 0
        interp = ""
        for seg in self._segments:
            if seg.type == PT_INTERP:
                raw = self._read(seg.offset, seg.filesz)
                if raw is None:
                    complete = False
                else:
                    interp = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        dynamic = next((s for s in self._segments if s.type == PT_DYNAMIC), None)
        info = ElfInfo(h.bits, h.endian, h.type, h.machine, interp, complete=complete)
        if dynamic is None:
            return info
        raw = self._read(dynamic.offset, dynamic.filesz)
        if raw is None:
            return _replace(info, complete=False)
        return self._dynamic(info, h, raw)

    def _dynamic(self, info: ElfInfo, h: _Header, raw: bytes) -> ElfInfo:
        entry = "qQ" if h.bits == 64 else "iI"
        size = struct.calcsize(h.fmt + entry)
        tags: list[tuple[int, int]] = []
        for off in range(0, len(raw) - size + 1, size):
            tag, value = struct.unpack_from(h.fmt + entry, raw, off)
            if tag == DT_NULL:
                break
            tags.append((tag, value))
        strtab = next((v for t, v in tags if t == DT_STRTAB), None)
        strsz = next((v for t, v in tags if t == DT_STRSZ), 0)
        if strtab is None:
            return info
        base = self._offset_of(strtab)
        complete = info.complete
        if base is None:
            return _replace(info, complete=False)

        def string(value: int) -> Optional[str]:
            if strsz and value >= strsz:
                return None
            start = base + value  # type: ignore[operator]
            want = min(4096, strsz - value) if strsz else 4096
            data = self._read(start, want) or self._read_upto(start)
            if data is None or b"\0" not in data:
                return None
            return data.split(b"\0", 1)[0].decode("utf-8", "replace")

        values: dict[int, list[str]] = {DT_NEEDED: [], DT_SONAME: [], DT_RPATH: [], DT_RUNPATH: []}
        for tag, value in tags:
            if tag in values:
                text = string(value)
                if text is None:
                    complete = False
                else:
                    values[tag].append(text)

        def paths(tag: int) -> tuple[str, ...]:
            return tuple(p for text in values[tag] for p in text.split(":") if p)

        return ElfInfo(info.bits, info.endian, info.type, info.machine, info.interp, tuple(values[DT_NEEDED]),
                       values[DT_SONAME][0] if values[DT_SONAME] else "", paths(DT_RUNPATH), paths(DT_RPATH),
                       complete)

    def _read_upto(self, offset: int) -> Optional[bytes]:
        """Whatever is kept from `offset` on (a string near the end of what was read)."""
        if offset < len(self._head):
            return bytes(self._head[offset: offset + 4096])
        return None

    def _offset_of(self, vaddr: int) -> Optional[int]:
        for seg in self._segments or ():
            if seg.type == PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        return None


def _replace(info: ElfInfo, complete: bool) -> ElfInfo:
    import dataclasses

    return dataclasses.replace(info, complete=complete)


def parse_elf(data: bytes, limit: int = HEAD_LIMIT) -> Optional[ElfInfo]:
    """The ELF facts of a file from its first bytes (None if it is not ELF)."""
    scanner = ElfScanner(limit)
    scanner.feed(data)
    return scanner.result()


def is_elf(head: bytes) -> bool:
    return head[:4] == MAGIC
