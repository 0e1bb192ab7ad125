"""The only importer of pyelftools: an ELF executable's entry point and PT_LOAD segments, bounds-checked.

pyelftools reads past the end of a truncated file without complaint and lets OverflowError escape
on hostile offsets (STYLE.md §3), so every size is checked against the blob here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import MalformedImageError, UnsupportedImageError

EM_386 = 3
EM_X86_64 = 62


@dataclass(frozen=True, slots=True)
class ElfLoad:
    paddr: int
    memsz: int
    data: object = field(repr=False)  # a slice of the file: p_filesz bytes


@dataclass(frozen=True, slots=True)
class ElfImage:
    elfclass: int  # 32 or 64
    machine: int  # e_machine
    elf_type: str  # ET_EXEC, ET_DYN, ...
    entry: int
    loads: tuple[ElfLoad, ...]
    notes: tuple[tuple[str, int, bytes], ...]  # (name, type, desc) of PT_NOTE segments


def is_elf(blob) -> bool:
    return bytes(blob[:4]) == b"\x7fELF"


def read_elf(blob, name: str, *, machines: tuple[int, ...] = (EM_386, EM_X86_64)) -> ElfImage:
    try:
        elf = ELFFile(io.BytesIO(blob))
        machine = elf.header["e_machine"]
        machine_no = {"EM_386": EM_386, "EM_X86_64": EM_X86_64}.get(machine, machine)
        if machine_no not in machines:
            raise UnsupportedImageError(f"{name}: ELF for {machine}, not x86")
        if elf.little_endian is False:
            raise UnsupportedImageError(f"{name}: big-endian ELF")
        loads, notes = [], []
        for seg in elf.iter_segments():
            kind = seg["p_type"]
            off, filesz, memsz = seg["p_offset"], seg["p_filesz"], seg["p_memsz"]
            if kind not in ("PT_LOAD", "PT_NOTE"):
                continue
            if off + filesz > len(blob) or filesz > memsz and kind == "PT_LOAD":
                raise MalformedImageError(f"{name}: {kind} at file offset {off:#x}+{filesz:#x} passes the end "
                                          f"of the file ({len(blob):#x}) or its memory size")
            if kind == "PT_LOAD" and memsz:
                loads.append(ElfLoad(seg["p_paddr"], memsz, memoryview(blob)[off:off + filesz]))
            elif kind == "PT_NOTE":
                notes.extend((n["n_name"], n["n_type"] if isinstance(n["n_type"], int) else -1,
                              bytes(n["n_desc"]) if isinstance(n["n_desc"], (bytes, bytearray)) else b"")
                             for n in seg.iter_notes())
        if not loads:
            raise MalformedImageError(f"{name}: ELF without loadable segments")
        return ElfImage(elf.elfclass, machine_no, elf.header["e_type"], elf.header["e_entry"], tuple(loads),
                        tuple(notes))
    except (ELFError, OverflowError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise MalformedImageError(f"{name}: not a usable ELF file: {e}") from e
    except Exception as e:  # pyelftools can raise construct errors of its vendored copy on hostile input
        if type(e).__module__.startswith("elftools"):
            raise MalformedImageError(f"{name}: not a usable ELF file: {e}") from e
        raise
