"""ELF64 core-file structures: the header a kdump kernel reads at `elfcorehdr=`, /proc/kcore, /proc/vmcore.

Layouts from the System V ABI / ELF-64 Object File Format 1.5 ('File Header', 'Program Header', 'Note
Sections'; little endian, x86-64): Elf64_Ehdr (64 bytes), Elf64_Phdr (56 bytes), Elf64_Nhdr (12 bytes, name and
descriptor each padded to 4 bytes). Pure encode/decode; what goes into a header is kexloader/crash.py's job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from construct import Array, Bytes, Const, ConstructError, Int16ul, Int32ul, Int64ul, Struct

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
PF_X, PF_W, PF_R = 1, 2, 4
NT_PRSTATUS = 1
EHDR_SIZE = 64
PHDR_SIZE = 56
NHDR_SIZE = 12

# e_ident: magic, class, data, version, OS ABI (System V = 0), ABI version, padding.
Ident = Struct(
    "magic" / Const(ELF_MAGIC),
    "ei_class" / Bytes(1),
    "ei_data" / Bytes(1),
    "ei_version" / Bytes(1),
    "ei_osabi" / Bytes(1),
    "ei_abiversion" / Bytes(1),
    "pad" / Bytes(7),
)

Elf64_Ehdr = Struct(
    "e_ident" / Ident,  # 0x00
    "e_type" / Int16ul,  # 0x10
    "e_machine" / Int16ul,  # 0x12
    "e_version" / Int32ul,  # 0x14
    "e_entry" / Int64ul,  # 0x18
    "e_phoff" / Int64ul,  # 0x20
    "e_shoff" / Int64ul,  # 0x28
    "e_flags" / Int32ul,  # 0x30
    "e_ehsize" / Int16ul,  # 0x34
    "e_phentsize" / Int16ul,  # 0x36
    "e_phnum" / Int16ul,  # 0x38
    "e_shentsize" / Int16ul,  # 0x3a
    "e_shnum" / Int16ul,  # 0x3c
    "e_shstrndx" / Int16ul,  # 0x3e
)
assert Elf64_Ehdr.sizeof() == EHDR_SIZE

Elf64_Phdr = Struct(
    "p_type" / Int32ul,  # 0x00
    "p_flags" / Int32ul,  # 0x04
    "p_offset" / Int64ul,  # 0x08
    "p_vaddr" / Int64ul,  # 0x10
    "p_paddr" / Int64ul,  # 0x18
    "p_filesz" / Int64ul,  # 0x20
    "p_memsz" / Int64ul,  # 0x28
    "p_align" / Int64ul,  # 0x30
)
assert Elf64_Phdr.sizeof() == PHDR_SIZE

Elf64_Nhdr = Struct(
    "n_namesz" / Int32ul,
    "n_descsz" / Int32ul,
    "n_type" / Int32ul,
)
assert Elf64_Nhdr.sizeof() == NHDR_SIZE

PN_XNUM = 0xFFFF  # e_phnum at or above this needs extended numbering, which core headers here never use


class ElfCoreError(ValueError):
    """Bytes that are not the ELF64 little-endian structure they should be."""


@dataclass(frozen=True, slots=True)
class Phdr:
    """One program header with the spec's field names."""

    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int = 0


def build_core(phdrs: Sequence[Phdr], *, machine: int = EM_X86_64) -> bytes:
    """An ET_CORE ELF header followed at once by its program headers (e_phoff = 64), as the kdump kernel
    reads it: `64 + e_phnum * 56` bytes from the header's address (Linux fs/proc/vmcore.c,
    parse_crash_elf64_headers)."""
    if not 0 < len(phdrs) < PN_XNUM:
        raise ElfCoreError(f"{len(phdrs)} program headers; a core header needs 1 to {PN_XNUM - 1}")
    ehdr: bytes = Elf64_Ehdr.build(dict(
        e_ident=dict(ei_class=bytes([ELFCLASS64]), ei_data=bytes([ELFDATA2LSB]), ei_version=bytes([EV_CURRENT]),
                     ei_osabi=b"\0", ei_abiversion=b"\0", pad=bytes(7)),
        e_type=ET_CORE, e_machine=machine, e_version=EV_CURRENT, e_entry=0, e_phoff=EHDR_SIZE, e_shoff=0,
        e_flags=0, e_ehsize=EHDR_SIZE, e_phentsize=PHDR_SIZE, e_phnum=len(phdrs), e_shentsize=0, e_shnum=0,
        e_shstrndx=0))
    try:
        return ehdr + b"".join(Elf64_Phdr.build(vars_of(p)) for p in phdrs)
    except ConstructError as e:
        raise ElfCoreError(f"a program header field does not fit: {e}") from None


def vars_of(p: Phdr) -> dict[str, int]:
    return {name: getattr(p, name) for name in Phdr.__slots__}


@dataclass(frozen=True, slots=True)
class ElfHeaders:
    """An ELF64 little-endian file's header fields that matter here, and its program headers."""

    e_type: int
    e_machine: int
    phdrs: tuple[Phdr, ...]


def parse_headers(blob: bytes) -> ElfHeaders:
    """The ELF header and program headers of an ELF64 little-endian file (or its first bytes: /proc/kcore is
    read only as far as its program headers). Raises ElfCoreError on anything else or on truncation."""
    blob = bytes(blob)
    if len(blob) < EHDR_SIZE:
        raise ElfCoreError(f"{len(blob)} bytes is too short for an ELF header")
    try:
        eh = Elf64_Ehdr.parse(blob)
    except ConstructError:
        raise ElfCoreError("no ELF magic") from None
    if eh.e_ident.ei_class != bytes([ELFCLASS64]) or eh.e_ident.ei_data != bytes([ELFDATA2LSB]):
        raise ElfCoreError("not an ELF64 little-endian file")
    if eh.e_phnum and eh.e_phentsize != PHDR_SIZE:
        raise ElfCoreError(f"e_phentsize {eh.e_phentsize}, expected {PHDR_SIZE}")
    end = eh.e_phoff + eh.e_phnum * PHDR_SIZE
    if end > len(blob):
        raise ElfCoreError(f"program headers end at {end:#x}, past the {len(blob):#x} bytes read")
    table = Array(eh.e_phnum, Elf64_Phdr).parse(blob[eh.e_phoff:end])
    phdrs = tuple(Phdr(**{k: getattr(p, k) for k in Phdr.__slots__}) for p in table)
    return ElfHeaders(eh.e_type, eh.e_machine, phdrs)


@dataclass(frozen=True, slots=True)
class Note:
    name: bytes  # without the terminating NUL
    type: int
    desc: bytes


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def build_note(name: bytes, type_: int, desc: bytes) -> bytes:
    """One note: Nhdr, name with its NUL padded to 4, descriptor padded to 4."""
    raw_name = name + b"\0"
    return (cast(bytes, Elf64_Nhdr.build(dict(n_namesz=len(raw_name), n_descsz=len(desc), n_type=type_)))
            + raw_name.ljust(_pad4(len(raw_name)), b"\0") + desc.ljust(_pad4(len(desc)), b"\0"))


def iter_notes(blob: bytes) -> Iterator[Note]:
    """The notes in a PT_NOTE's bytes, stopping (as the kernel's vmcore code does) at an all-zero header or
    at the end. A note that claims to run past the end raises ElfCoreError."""
    blob = bytes(blob)
    off = 0
    while off + NHDR_SIZE <= len(blob):
        nh = Elf64_Nhdr.parse(blob[off:off + NHDR_SIZE])
        if nh.n_namesz == 0 and nh.n_descsz == 0 and nh.n_type == 0:
            return
        name_at = off + NHDR_SIZE
        desc_at = name_at + _pad4(nh.n_namesz)
        end = desc_at + _pad4(nh.n_descsz)
        if end > len(blob):
            raise ElfCoreError(f"note at {off:#x} ({nh.n_namesz}+{nh.n_descsz} bytes) runs past the end {len(blob):#x}")
        yield Note(blob[name_at:name_at + nh.n_namesz].rstrip(b"\0"), nh.n_type, blob[desc_at:desc_at + nh.n_descsz])
        off = end
