"""formats/elfcore.py: sizes and offsets from the ELF-64 spec (interfaces.md §5.2), symmetry, notes, bad input.

Expected bytes are packed here with `struct`, independently of the construct declarations under test;
the parser is also run on /proc/kcore's real first 512 bytes (written by a Debian 6.1 kernel).
"""

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexloader.formats import elfcore as ec

KCORE = Path(__file__).resolve().parents[2] / "fixtures" / "kdump" / "qemu-debian12-root" / "proc" / "kcore"


def test_sizes():
    assert ec.Elf64_Ehdr.sizeof() == 64 and ec.Elf64_Phdr.sizeof() == 56 and ec.Elf64_Nhdr.sizeof() == 12


def test_core_header_bytes_match_the_spec_layout():
    ph = ec.Phdr(ec.PT_LOAD, 7, 0x1122334455, 0xFFFF888000100000, 0x100000, 0x2000, 0x3000, 0)
    note = ec.Phdr(ec.PT_NOTE, 0, 0x7D43A400, 0, 0x7D43A400, 368, 368, 0)
    got = ec.build_core([note, ph])
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    # e_type @16, e_machine @18, e_version @20, e_entry @24, e_phoff @32, e_shoff @40, e_flags @48,
    # e_ehsize @52, e_phentsize @54, e_phnum @56, e_shentsize @58, e_shnum @60, e_shstrndx @62
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, 2, 0, 0, 0)
    # p_type @0, p_flags @4, p_offset @8, p_vaddr @16, p_paddr @24, p_filesz @32, p_memsz @40, p_align @48
    p0 = struct.pack("<IIQQQQQQ", 4, 0, 0x7D43A400, 0, 0x7D43A400, 368, 368, 0)
    p1 = struct.pack("<IIQQQQQQ", 1, 7, 0x1122334455, 0xFFFF888000100000, 0x100000, 0x2000, 0x3000, 0)
    assert got == ehdr + p0 + p1
    assert len(got) == 64 + 2 * 56


def test_parse_is_the_inverse_of_build():
    phdrs = [ec.Phdr(ec.PT_NOTE, 0, 0x1000 * i, 0, 0x1000 * i, 368, 368, 0) for i in range(1, 65)]
    phdrs.append(ec.Phdr(ec.PT_LOAD, 7, 0x100000, 0xFF11000000100000, 0x100000, 1 << 30, 1 << 30, 0))
    h = ec.parse_headers(ec.build_core(phdrs))
    assert h.e_type == ec.ET_CORE and h.e_machine == ec.EM_X86_64 and h.phdrs == tuple(phdrs)


def test_real_kcore_headers():
    h = ec.parse_headers(KCORE.read_bytes())
    assert h.e_type == ec.ET_CORE and h.e_machine == ec.EM_X86_64
    assert [p.p_type for p in h.phdrs] == [ec.PT_NOTE] + [ec.PT_LOAD] * 7
    text = h.phdrs[1]  # the kernel-text mapping comes first, as fs/proc/kcore.c adds it first
    assert (text.p_vaddr, text.p_paddr, text.p_memsz) == (0xFFFFFFFF82600000, 0x3A200000, 0x3430000)
    ram = [p for p in h.phdrs if p.p_type == ec.PT_LOAD and p.p_paddr in (0x1000, 0x100000)]
    assert [(p.p_vaddr - p.p_paddr, p.p_memsz) for p in ram] == [(0xFF39E5C840000000, 0x9E000),
                                                                 (0xFF39E5C840000000, 0x7FEE0000)]


@pytest.mark.parametrize("mutate, words", [
    (lambda b: b[:63], "too short"),
    (lambda b: b"\x7fELG" + b[4:], "no ELF magic"),
    (lambda b: b[:4] + b"\x01" + b[5:], "not an ELF64 little-endian"),
    (lambda b: b[:5] + b"\x02" + b[6:], "not an ELF64 little-endian"),
    (lambda b: b[:54] + struct.pack("<H", 32) + b[56:], "e_phentsize 32"),
    (lambda b: b[:300], "past the 0x12c bytes read"),
], ids=["short", "magic", "elf32", "big-endian", "phentsize", "truncated-phdrs"])
def test_bad_headers_name_the_problem(mutate, words):
    with pytest.raises(ec.ElfCoreError, match=words):
        ec.parse_headers(mutate(KCORE.read_bytes()))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutants_raise_only_elfcoreerror(data):
    blob = bytearray(KCORE.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        ec.parse_headers(bytes(blob[:cut]))
    except ec.ElfCoreError:
        pass


def test_core_header_refuses_no_or_too_many_phdrs():
    with pytest.raises(ec.ElfCoreError, match="0 program headers"):
        ec.build_core([])
    with pytest.raises(ec.ElfCoreError, match="does not fit"):
        ec.build_core([ec.Phdr(ec.PT_LOAD, 7, -1, 0, 0, 0, 0, 0)])


def test_notes_roundtrip_padding_and_terminator():
    a = ec.build_note(b"CORE", ec.NT_PRSTATUS, bytes(range(7)))
    assert a == struct.pack("<III", 5, 7, 1) + b"CORE\0\0\0\0" + bytes(range(7)) + b"\0"
    b = ec.build_note(b"VMCOREINFO", 0, b"OSRELEASE=6.1.0\n")
    blob = a + b + bytes(12) + b"garbage after the empty header"
    assert list(ec.iter_notes(blob)) == [ec.Note(b"CORE", 1, bytes(range(7))),
                                         ec.Note(b"VMCOREINFO", 0, b"OSRELEASE=6.1.0\n")]


def test_a_note_running_past_its_buffer_is_an_error():
    blob = ec.build_note(b"CORE", 1, bytes(336))
    with pytest.raises(ec.ElfCoreError, match="runs past the end"):
        list(ec.iter_notes(blob[:100]))
