"""Tiny ELF files built by code for tests: headers, PT_INTERP and a dynamic section, nothing runnable."""
from __future__ import annotations

import struct
from typing import Optional, Sequence

ET = {"rel": 1, "exec": 2, "dyn": 3}
TEXT_VADDR = 0x400000
DATA_VADDR = 0x800000  # the second PT_LOAD: file offsets and addresses differ by another amount


def make_elf(
    *,
    bits: int = 64,
    endian: str = "little",
    type: str = "dyn",
    machine: int = 62,
    interp: Optional[str] = None,
    needed: Sequence[str] = (),
    soname: Optional[str] = None,
    runpath: Optional[str] = None,
    rpath: Optional[str] = None,
    gap: int = 0,
    strtab_after_gap: bool = False,
) -> bytes:
    """An ELF file: header, program headers, interp, .dynstr, `gap` zero bytes, then .dynamic.

    Two PT_LOAD segments map the text part and the data part (which starts after the gap) at
    different addresses, so finding DT_STRTAB's file offset needs the segment mapping.
    With `strtab_after_gap`, .dynstr sits after the gap too (beyond a reader's head limit).
    """
    e = "<" if endian == "little" else ">"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    strings = bytearray(b"\0")

    def add(text: str) -> int:
        off = len(strings)
        strings.extend(text.encode() + b"\0")
        return off

    dyn: list[tuple[int, int]] = [(1, add(n)) for n in needed]
    if soname is not None:
        dyn.append((14, add(soname)))
    if rpath is not None:
        dyn.append((15, add(rpath)))
    if runpath is not None:
        dyn.append((29, add(runpath)))
    has_dynamic = bool(dyn) or soname is not None
    phnum = 2 + (1 if interp is not None else 0) + (1 if has_dynamic else 0)
    interp_bytes = (interp.encode() + b"\0") if interp is not None else b""
    interp_off = ehsize + phnum * phentsize
    text_end = interp_off + len(interp_bytes)
    strtab_off = text_end if not strtab_after_gap else text_end + gap
    data_off = text_end + (0 if strtab_after_gap else len(strings)) + gap
    if strtab_after_gap:
        data_off = strtab_off + len(strings)
        strtab_vaddr = DATA_VADDR + (strtab_off - (text_end + gap))
        data_start = text_end + gap
    else:
        strtab_vaddr = TEXT_VADDR + strtab_off
        data_start = data_off
    dyn_entries = dyn + [(5, strtab_vaddr), (10, len(strings)), (0, 0)]
    dyn_fmt = e + ("qQ" if bits == 64 else "iI")
    dynamic = b"".join(struct.pack(dyn_fmt, t, v) for t, v in dyn_entries) if has_dynamic else b""
    total = data_off + len(dynamic)

    if bits == 64:
        header = b"\x7fELF" + bytes([2, 1 if endian == "little" else 2, 1]) + b"\0" * 9
        header += struct.pack(e + "HHIQQQIHHHHHH", ET.get(type, 3), machine, 1, 0, ehsize, 0, 0, ehsize,
                              phentsize, phnum, 64, 0, 0)
    else:
        header = b"\x7fELF" + bytes([1, 1 if endian == "little" else 2, 1]) + b"\0" * 9
        header += struct.pack(e + "HHIIIIIHHHHHH", ET.get(type, 3), machine, 1, 0, ehsize, 0, 0, ehsize,
                              phentsize, phnum, 40, 0, 0)

    def ph(p_type: int, offset: int, vaddr: int, size: int) -> bytes:
        if bits == 64:
            return struct.pack(e + "IIQQQQQQ", p_type, 5, offset, vaddr, vaddr, size, size, 0x1000)
        return struct.pack(e + "IIIIIIII", p_type, offset, vaddr, vaddr, size, size, 5, 0x1000)

    data_size = total - data_start
    phdrs = ph(1, 0, TEXT_VADDR, data_start) + ph(1, data_start, DATA_VADDR, data_size)
    if interp is not None:
        phdrs += ph(3, interp_off, TEXT_VADDR + interp_off, len(interp_bytes))
    if has_dynamic:
        phdrs += ph(2, data_off, DATA_VADDR + (data_off - data_start), len(dynamic))
    out = header + phdrs + interp_bytes
    if strtab_after_gap:
        out += b"\0" * gap + bytes(strings)
    else:
        out += bytes(strings) + b"\0" * gap
    out += dynamic
    assert len(out) == total
    return out
