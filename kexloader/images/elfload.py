"""The only importer of pyelftools: an ELF executable's entry point and PT_LOAD segments, bounds-checked.

pyelftools reads past the end of a truncated file without complaint and lets OverflowError escape
on hostile offsets (seen with pyelftools 0.33), so every size is checked against the blob here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import cast

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_CORE_NOTE_N_TYPE, ENUM_NOTE_N_TYPE
from elftools.elf.segments import NoteSegment

from ..errors import MalformedImageError, UnsupportedImageError

EM_386 = 3
EM_X86_64 = 62
PN_XNUM = 0xFFFF  # e_phnum saying "the count is in section 0's sh_info" (System V ABI, Program Header)
PHDR_SIZE = {32: 32, 64: 56}  # Elf32_Phdr, Elf64_Phdr
# A kernel or Xen has a handful of program headers (Debian's vmlinux 5, xen-syms 2); the cap keeps a hostile
# count from costing pyelftools seconds per million headers.
MAX_PROGRAM_HEADERS = 1024


@dataclass(frozen=True, slots=True)
class ElfLoad:
    paddr: int
    memsz: int
    data: memoryview = field(repr=False)  # a slice of the file: p_filesz bytes
    vaddr: int = 0
    align: int = 0  # p_align
    flags: int = 0  # p_flags (PF_X 1, PF_W 2, PF_R 4)


@dataclass(frozen=True, slots=True)
class ElfImage:
    elfclass: int  # 32 or 64
    machine: int  # e_machine
    elf_type: str  # ET_EXEC, ET_DYN, ...
    entry: int
    loads: tuple[ElfLoad, ...]
    notes: tuple[tuple[str, int, bytes], ...]  # (name, type, desc) of PT_NOTE segments
    interp: bool = False  # has a PT_INTERP (a program, not a kernel)


def _note_type(value: int | str) -> int:
    """The note type as a number: pyelftools names the GNU ones (NT_GNU_BUILD_ID ...) whatever the owner."""
    if isinstance(value, int):
        return value
    return ENUM_NOTE_N_TYPE.get(value, ENUM_CORE_NOTE_N_TYPE.get(value, -1))


def is_elf(blob: bytes | bytearray | memoryview) -> bool:
    return bytes(blob[:4]) == b"\x7fELF"


def _check_program_headers(elf: ELFFile, size: int, name: str) -> None:
    """The program header table is where the header says, of the class's entry size, inside the file."""
    count, entsize, offset = elf.header["e_phnum"], elf.header["e_phentsize"], elf.header["e_phoff"]
    if count == PN_XNUM or count > MAX_PROGRAM_HEADERS:
        raise MalformedImageError(f"{name}: {'PN_XNUM' if count == PN_XNUM else count} program headers: "
                                  f"not a kernel (at most {MAX_PROGRAM_HEADERS})")
    if count and entsize != PHDR_SIZE[elf.elfclass]:
        raise MalformedImageError(f"{name}: program header entries of {entsize} bytes in an ELF{elf.elfclass} "
                                  f"file (they are {PHDR_SIZE[elf.elfclass]})")
    if offset + count * entsize > size:
        raise MalformedImageError(f"{name}: the program header table ({count} at file offset {offset:#x}) passes "
                                  f"the end of the file ({size:#x})")


def read_elf(blob: bytes | bytearray | memoryview, name: str, *,
             machines: tuple[int, ...] = (EM_386, EM_X86_64)) -> ElfImage:
    try:
        elf = ELFFile(io.BytesIO(blob))
        machine = elf.header["e_machine"]
        machine_no = {"EM_386": EM_386, "EM_X86_64": EM_X86_64}.get(machine, machine)
        if machine_no not in machines:
            raise UnsupportedImageError(f"{name}: ELF for {machine}, not x86")
        if elf.little_endian is False:
            raise UnsupportedImageError(f"{name}: big-endian ELF")
        _check_program_headers(elf, len(blob), name)
        loads: list[ElfLoad] = []
        notes: list[tuple[str, int, bytes]] = []
        interp = False
        for seg in elf.iter_segments():
            kind = seg["p_type"]
            off, filesz, memsz = seg["p_offset"], seg["p_filesz"], seg["p_memsz"]
            interp = interp or kind == "PT_INTERP"
            if kind not in ("PT_LOAD", "PT_NOTE"):
                continue
            if off + filesz > len(blob) or filesz > memsz and kind == "PT_LOAD":
                raise MalformedImageError(f"{name}: {kind} at file offset {off:#x}+{filesz:#x} passes the end "
                                          f"of the file ({len(blob):#x}) or its memory size")
            if kind == "PT_LOAD" and memsz:
                loads.append(ElfLoad(seg["p_paddr"], memsz, memoryview(blob)[off:off + filesz],
                                     vaddr=seg["p_vaddr"], align=seg["p_align"], flags=seg["p_flags"]))
            elif kind == "PT_NOTE":
                notes.extend((n["n_name"], _note_type(n["n_type"]), bytes(n.get("n_descdata", b"")))
                             for n in cast(NoteSegment, seg).iter_notes())  # pyelftools: PT_NOTE
        if not loads:
            raise MalformedImageError(f"{name}: ELF without loadable segments")
        return ElfImage(elf.elfclass, machine_no, elf.header["e_type"], elf.header["e_entry"], tuple(loads),
                        tuple(notes), interp)
    except (ELFError, OverflowError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise MalformedImageError(f"{name}: not a usable ELF file: {e}") from e
    except Exception as e:  # pyelftools can raise construct errors of its vendored copy on hostile input
        if type(e).__module__.startswith("elftools"):
            raise MalformedImageError(f"{name}: not a usable ELF file: {e}") from e
        raise
