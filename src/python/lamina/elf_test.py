"""Tests of the streaming ELF reader: dynamic facts in every class and byte order, limits, truncation, JSON."""
from __future__ import annotations

import os
import struct

import pytest

from lamina.elf import HEAD_LIMIT, ElfInfo, ElfScanner, is_elf, parse_elf
from lamina_testing.elffiles import make_elf


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_reads_interp_needed_soname_runpath_in_every_class_and_byte_order(bits: int, endian: str) -> None:
    data = make_elf(bits=bits, endian=endian, type="exec", machine=183, interp="/lib/ld-linux-aarch64.so.1",
                    needed=["libfoo.so.1", "libc.so.6"], soname="foo", runpath="$ORIGIN/../lib:/opt/x/lib")
    assert parse_elf(data) == ElfInfo(bits, endian, "exec", 183, "/lib/ld-linux-aarch64.so.1",
                                      ("libfoo.so.1", "libc.so.6"), "foo", ("$ORIGIN/../lib", "/opt/x/lib"))


def test_rpath_is_kept_apart_from_runpath() -> None:
    info = parse_elf(make_elf(needed=["liba.so"], rpath="/r1:/r2"))
    assert info is not None and info.rpath == ("/r1", "/r2") and info.runpath == ()


def test_a_static_executable_has_no_dynamic_facts() -> None:
    info = parse_elf(make_elf(type="exec"))
    assert info == ElfInfo(64, "little", "exec", 62)
    assert not info.is_dynamic


@pytest.mark.parametrize("data", [b"", b"\x7fEL", b"#!/bin/sh\necho hi\n", b"\x7fELF" + b"\x09" * 60],
                         ids=["empty", "short", "script", "bad-class"])
def test_not_elf_gives_none(data: bytes) -> None:
    assert parse_elf(data) is None


def test_a_file_cut_in_its_program_headers_is_incomplete() -> None:
    data = make_elf(needed=["liba.so"])
    info = parse_elf(data[:70])
    assert info is not None and not info.complete and info.needed == ()


def test_feeding_in_small_chunks_gives_the_same_facts() -> None:
    data = make_elf(bits=32, interp="/lib/ld.so", needed=["a.so", "b.so"], runpath="/x", gap=5000)
    scanner = ElfScanner(limit=1024)
    for i in range(0, len(data), 7):
        scanner.feed(data[i: i + 7])
    assert scanner.result() == parse_elf(data)


def test_a_dynamic_section_beyond_the_head_limit_is_still_read() -> None:
    data = make_elf(needed=["liba.so"], gap=100_000)
    assert parse_elf(data, limit=4096) == ElfInfo(64, "little", "dyn", 62, needed=("liba.so",))


def test_a_string_table_beyond_the_head_limit_is_skipped_gracefully() -> None:
    data = make_elf(needed=["liba.so"], gap=100_000, strtab_after_gap=True)
    info = parse_elf(data, limit=4096)
    assert info is not None and not info.complete and info.needed == ()
    assert parse_elf(data) is not None and parse_elf(data).needed == ("liba.so",)  # type: ignore[union-attr]


def test_the_scanner_keeps_at_most_its_limit_and_lets_go_once_the_facts_are_in() -> None:
    data = make_elf(needed=["liba.so"], gap=3 << 20)  # .dynamic 3 MiB in, its strings near the start
    scanner = ElfScanner(limit=1 << 20)
    kept = []
    for i in range(0, len(data), 1 << 16):
        scanner.feed(data[i: i + (1 << 16)])
        kept.append(len(scanner._head))
    assert max(kept) == 1 << 20 and kept[-1] == 0
    for _ in range(20):  # what follows is hashed by the caller, never kept here
        scanner.feed(b"\0" * (1 << 20))
    assert len(scanner._head) == 0
    assert scanner.result() == ElfInfo(64, "little", "dyn", 62, needed=("liba.so",))


def test_an_object_file_without_program_headers_is_decided_at_once() -> None:
    data = bytearray(make_elf(type="rel"))
    struct.pack_into("<H", data, 56, 0)  # e_phnum = 0, as in a .o file
    scanner = ElfScanner(limit=1 << 20)
    scanner.feed(bytes(data))
    scanner.feed(b"\0" * (2 << 20))
    assert len(scanner._head) == 0
    assert scanner.result() == ElfInfo(64, "little", "rel", 62)


def test_json_round_trip() -> None:
    info = ElfInfo(32, "big", "dyn", 8, "", ("a",), "s", ("r",), ("p",), complete=False)
    assert ElfInfo.from_json(info.to_json()) == info
    assert ElfInfo.from_json(ElfInfo(64, "little", "exec", 62).to_json()) == ElfInfo(64, "little", "exec", 62)


@pytest.mark.skipif(not os.path.isfile("/bin/ls"), reason="needs the machine's /bin/ls")
def test_a_real_dynamic_executable() -> None:
    with open("/bin/ls", "rb") as f:
        head = f.read(HEAD_LIMIT)
    if not is_elf(head):
        pytest.skip("/bin/ls is not ELF here")
    info = parse_elf(head)
    assert info is not None and info.complete
    if info.interp:  # a dynamically linked ls (the usual case) names libc
        assert any(n.startswith("libc.") for n in info.needed)
