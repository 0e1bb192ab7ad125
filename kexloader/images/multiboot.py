"""Multiboot 1 and 2 images (Xen, tboot, test kernels), entered in 32-bit protected mode with paging off.

Segments: the image's PT_LOADs (or the MB1 a.out-kludge range), one per module, the boot
information with its strings and memory map, and the purgatory (which drops from 64-bit mode).
Everything lies at or above 1 MiB and below 4 GiB: Xen puts its trampoline just below the top
of conventional memory and reads the BIOS data area in page 0 (Xen xen/arch/x86/boot/head.S).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from .. import __version__, legacybios
from ..cmdline import Cmdline
from ..errors import MalformedImageError, UnknownFormatError, UnsupportedImageError, UsageError
from ..formats import multiboot as mb
from ..handoff import attach_purgatory
from ..memory import Layout, SegmentData, validate
from ..kexec_abi import KEXEC_ARCH_X86_64
from ..model import GiB, LoadRequest, MiB, MultibootEntry, Plan, Range, Role, SystemFacts, align_up
from ..purgatory.program import Multiboot32Handoff
from .elfload import EM_386, EM_X86_64, ElfLoad, is_elf, read_elf

LOW_4G = Range(1 * MiB, 4 * GiB - 1 * MiB)
MODULES_LOW = Range(16 * MiB, 4 * GiB - 17 * MiB)  # modules bottom-up on a UEFI machine (see plan())
# Xen keeps the first word of a command line only when the loader calls itself GRUB 2, so we do not.
LOADER_NAME = f"kexloader {__version__}"

MB2Tag = tuple[int, int, bytes]  # (type, flags, body)
BootModule = tuple[int, int, str]  # (start, exclusive end, command line) of a loaded module


@dataclass(frozen=True)
class MB1Header:
    offset: int
    flags: int
    aout: object | None  # MB1AoutFields when MB1_AOUT_KLUDGE


@dataclass(frozen=True)
class MB2Header:
    offset: int
    tags: tuple[MB2Tag, ...]

    def tag(self, kind: int) -> MB2Tag | None:
        return next((t for t in self.tags if t[0] == kind), None)


def find_mb1(data: SegmentData) -> MB1Header | None:
    head = bytes(data[: mb.MB1_SEARCH + 12])
    magic = struct.pack("<I", mb.MB1_HEADER_MAGIC)
    pos = head.find(magic)
    while pos != -1 and pos + 12 <= len(head):
        if pos % mb.MB1_ALIGN == 0 and pos < mb.MB1_SEARCH:
            _, flags, checksum = struct.unpack_from("<III", head, pos)
            if mb.checksum_ok(mb.MB1_HEADER_MAGIC, flags, checksum):
                aout = None
                if flags & mb.MB1_AOUT_KLUDGE:
                    if pos + 32 > len(data):
                        return None
                    aout = mb.MB1AoutFields.parse(bytes(data[pos + 12:pos + 32]))
                return MB1Header(pos, flags, aout)
        pos = head.find(magic, pos + 1)
    return None


def find_mb2(data: SegmentData) -> MB2Header | None:
    head = bytes(data[: mb.MB2_SEARCH + 16])
    magic = struct.pack("<I", mb.MB2_HEADER_MAGIC)
    pos = head.find(magic)
    while pos != -1 and pos + 16 <= len(head):
        if pos % mb.MB2_ALIGN == 0 and pos < mb.MB2_SEARCH:
            _, arch, length, checksum = struct.unpack_from("<IIII", head, pos)
            if mb.checksum_ok(mb.MB2_HEADER_MAGIC, arch, length, checksum) and 16 <= length <= len(data) - pos:
                return MB2Header(pos, _mb2_tags(bytes(data[pos + 16:pos + length])))
        pos = head.find(magic, pos + 1)
    return None


def _mb2_tags(raw: bytes) -> tuple[MB2Tag, ...]:
    tags: list[MB2Tag] = []
    off = 0
    while off + 8 <= len(raw):
        kind, flags, size = struct.unpack_from("<HHI", raw, off)
        if size < 8 or off + size > len(raw):
            break
        if kind == mb.MB2_HTAG_END:
            break
        tags.append((kind, flags, raw[off + 8:off + size]))
        off += align_up(size, 8)
    return tuple(tags)


def probe_mb2(data: SegmentData) -> bool:
    return is_elf(data) and find_mb2(data) is not None


def probe_mb1(data: SegmentData) -> bool:
    found = find_mb1(data)
    return found is not None and not found.flags & mb.MB1_UNSUPPORTED and (found.aout is not None or is_elf(data))


# --- placement -------------------------------------------------------------------------------------

def _image_loads(req: LoadRequest, mb1: MB1Header | None) -> tuple[int, Sequence[ElfLoad]]:
    """(entry, loads) from ELF program headers, or from the MB1 a.out kludge."""
    data, name = req.kernel, req.kernel_name
    if mb1 is not None and mb1.aout is not None:
        a = cast("Mapping[str, int]", mb1.aout)  # a construct Container (a dict) of MB1AoutFields
        header_addr, load_addr, load_end_addr = a["header_addr"], a["load_addr"], a["load_end_addr"]
        start = mb1.offset - (header_addr - load_addr)
        end = len(data) if load_end_addr == 0 else start + (load_end_addr - load_addr)
        bss_end = max(a["bss_end_addr"], load_end_addr or load_addr + (end - start))
        if not (0 <= start <= end <= len(data)) or header_addr < load_addr:
            raise MalformedImageError(f"{name}: multiboot a.out fields point outside the file")
        return a["entry_addr"], (ElfLoad(load_addr, bss_end - load_addr, memoryview(data)[start:end]),)
    elf = read_elf(data, name, machines=(EM_386, EM_X86_64))
    return elf.entry, elf.loads


def _relocation(header: MB2Header | None, loads: Sequence[ElfLoad], layout: Layout) -> int:
    """How far to move the image for MB2's relocatable tag: 0 when its link address is usable."""
    tag = header.tag(mb.MB2_HTAG_RELOCATABLE) if header else None
    if tag is None:
        return 0
    r = mb.MB2Relocatable.parse(tag[2][:16].ljust(16, b"\0"))
    base = min(load.paddr for load in loads)
    span = max(load.paddr + load.memsz for load in loads) - base
    fits = all(any(u.contains(Range(load.paddr, align_up(load.memsz, 4096))) for u in layout.usable)
               for load in loads)
    if fits and r.min_addr <= base and base + span <= r.max_addr + 1 and base % max(r.align, 1) == 0:
        return 0
    from ..memory import allocate
    spot = allocate(layout.free(), align_up(span, 4096), align=max(r.align, 4096),
                    window=Range.between(max(r.min_addr, MiB), min(r.max_addr + 1, 4 * GiB)),
                    top_down=r.preference == 2)
    return spot.start - base


def plan(req: LoadRequest, facts: SystemFacts, usable: list[Range], *, version: int = 2) -> Plan:
    data, name = req.kernel, req.kernel_name
    mb1 = find_mb1(data) if version == 1 else None
    mb2 = find_mb2(data) if version == 2 else None
    if version == 1 and mb1 is None or version == 2 and mb2 is None:
        raise UnknownFormatError(f"{name}: no valid multiboot{'' if version == 1 else ' 2'} header")
    if mb1 is not None and mb1.flags & mb.MB1_UNSUPPORTED:
        raise UnsupportedImageError(f"{name}: multiboot header asks for flags {mb1.flags & mb.MB1_UNSUPPORTED:#x} "
                                    "that no loader understands")
    if mb2 is not None:
        _check_mb2_requests(mb2, name)
    if req.initrd is not None:  # kexec-tools ignores it here with a getopt warning; silently losing it is worse
        raise UsageError(f"{name}: a multiboot image takes modules, not an initrd",
                         hint="use --module=FILE (Xen: --module=\"vmlinuz ARGS\" --module=initrd.img), or --vmm")
    layout = Layout(usable)
    entry, loads = _image_loads(req, mb1)
    delta = _relocation(mb2, loads, layout)
    for load in loads:
        layout.put(Role.KERNEL, load.data, load.paddr + delta, align_up(load.memsz, 4096), what=name)
    entry += delta
    base = min(load.paddr for load in loads) + delta
    if entry + 16 > 4 * GiB or any(s.range.end > 4 * GiB for s in layout.segments):
        raise UnsupportedImageError(f"{name}: a multiboot image must lie below 4 GiB")

    modules: list[BootModule] = []
    # On a UEFI machine the map is cut into pieces near the top of memory, where a top-down placement put the
    # dom0 kernel just below the spot Xen relocates it to (the top of the highest 2 MiB-aligned RAM run), so
    # that the two overlap; Xen's move_memory() then copies through two separate mappings whose order makes
    # memmove run backwards, and the kernel arrives corrupt ("ELF: not an ELF binary", Xen 4.20). Bottom-up
    # from 16 MiB, the modules lie far below where Xen moves them.
    low_first = legacybios.needed(facts) and not req.crash
    for module in req.modules:
        seg = layout.place(Role.MODULE, module.data, window=MODULES_LOW if low_first else LOW_4G,
                           top_down=not low_first, what=module.name)
        modules.append((seg.mem, seg.mem + module.data.__len__(), module.cmdline))

    notes = [f"{name}: multiboot {version} image, entry {entry:#x}" + (f", relocated by {delta:#x}" if delta else "")]
    args, mem_lower = req.cmdline, None
    if legacybios.needed(facts) and not req.crash:
        facts, args, mem_lower, more = _bios_area(layout, facts, usable, args, name)
        notes += more
    # The image's name first, as kexec-tools does: Xen drops the first word unless the loader is GRUB 2.
    cmdline = f"{name} {args}".strip()
    info_size = 4096 + sum(len(m[2]) + 1 for m in modules) + len(cmdline) + 64 + 24 * len(facts.memmap) + 16 * len(modules)
    info_seg = layout.place(Role.MBI, bytes(info_size), window=LOW_4G, what=f"multiboot {version} information")
    if version == 1:
        info = build_mb1_info(info_seg.mem, cmdline, modules, facts, mem_lower=mem_lower)
        magic = mb.MB1_BOOTLOADER_MAGIC
    else:
        assert mb2 is not None  # version 2 without a header was refused above
        has_reloc = mb2.tag(mb.MB2_HTAG_RELOCATABLE) is not None
        info = build_mb2_info(info_seg.mem, cmdline, modules, facts, load_base=base if has_reloc else None,
                              mem_lower=mem_lower)
        magic = mb.MB2_BOOTLOADER_MAGIC
    layout.replace(info_seg, info)

    handoff = Multiboot32Handoff(magic=magic, info=info_seg.mem, entry=entry)
    start = attach_purgatory(layout, handoff, req.purgatory, window=LOW_4G)
    result = Plan(entry=start, flags=KEXEC_ARCH_X86_64, segments=tuple(layout.segments),
                  multiboot=MultibootEntry(magic=magic, info=info_seg.mem, entry=entry), notes=tuple(notes))
    validate(result, usable)
    return result


def _bios_area(layout: Layout, facts: SystemFacts, usable: list[Range], args: str,
               name: str) -> tuple[SystemFacts, str, int, list[str]]:
    """On a UEFI machine: page 0 and an EBDA for Xen's legacy-BIOS entry (kexloader/legacybios.py), the memory map
    with page 0 and the EBDA reserved, `no-real-mode`. Returns (facts for the information structure, command line,
    mem_lower in KiB, notes)."""
    lower, _ = _meminfo(facts)
    area = legacybios.build(facts, lower)
    pages = [Range(0, legacybios.PAGE)] + ([Range(area.ebda_page, legacybios.PAGE)] if area else [])
    if area is None or not all(any(u.contains(p) for u in usable) for p in pages):
        raise UnsupportedImageError(
            f"{name}: on a UEFI machine a multiboot kernel needs a BIOS data area in page 0 and an EBDA below "
            f"640 KiB (Xen's trampoline goes below it), but the memory map has {lower} KiB of RAM from 0 and "
            f"{'no' if area is None else 'not'} usable pages there")
    layout.put(Role.BIOS_DATA, area.page0, 0, legacybios.PAGE, what="BIOS data area (UEFI machine)")
    acpi, xsdt = None, None
    if area.tables:
        size = len(legacybios.build_acpi_blob(area.tables, 0)[0])
        seg = layout.place(Role.ACPI, bytes(size), window=LOW_4G, what="XSDT and copies of the ACPI tables")
        blob, xsdt = legacybios.build_acpi_blob(area.tables, seg.mem)
        layout.replace(seg, blob)
        acpi = Range(seg.mem, seg.memsz)
    layout.put(Role.EBDA, area.ebda_page_data(xsdt), area.ebda_page, legacybios.PAGE,
               what="EBDA" + (" with an RSDP" if xsdt is not None else ""))
    args, added = legacybios.with_no_real_mode(args)
    facts = dataclasses.replace(facts, memmap=tuple(legacybios.memmap_for(facts.memmap, area, acpi)))
    return facts, args, area.mem_lower, list(area.notes) + ([added] if added else [])


SUPPLIED_MB2_TAGS = {mb.MB2_TAG_CMDLINE, mb.MB2_TAG_LOADER_NAME, mb.MB2_TAG_MODULE, mb.MB2_TAG_BASIC_MEMINFO,
                     mb.MB2_TAG_MMAP, mb.MB2_TAG_LOAD_BASE}


def _check_mb2_requests(header: MB2Header, name: str) -> None:
    """The spec: a required information request we cannot satisfy means we must not boot the image."""
    for kind, flags, body in header.tags:
        if kind == mb.MB2_HTAG_INFO_REQUEST and not flags & mb.MB2_HTAG_OPTIONAL:
            wanted = struct.unpack(f"<{len(body) // 4}I", body[: len(body) // 4 * 4])
            missing = sorted(set(wanted) - SUPPLIED_MB2_TAGS)
            if missing:
                raise UnsupportedImageError(f"{name}: requires multiboot 2 information tags {missing} "
                                            "that kexloader does not provide")


def _meminfo(facts: SystemFacts) -> tuple[int, int]:
    """mem_lower (KiB of RAM from 0, at most 640) and mem_upper (KiB from 1 MiB to the first hole)."""
    lower = upper = 0
    for r in facts.memmap:
        if r.is_ram and r.range.start == 0:
            lower = min(r.range.end, 640 * 1024) >> 10
        if r.is_ram and r.range.start <= MiB < r.range.end:
            upper = min((r.range.end - MiB) >> 10, 0xFFFFFFFF)
    return lower, upper


def _mmap_entries(facts: SystemFacts) -> list[tuple[int, int, int]]:
    return [(r.range.start, r.range.size, r.type if r.type in (1, 2, 3, 4, 5) else 2) for r in facts.memmap]


class _Blob:
    """Strings and tables after the info structure, addressed from `base`."""

    def __init__(self, base: int, start: int):
        self.base, self.data = base, bytearray(start)

    def add(self, raw: bytes, align: int = 4) -> int:
        self.data += bytes(-len(self.data) % align)
        addr = self.base + len(self.data)
        self.data += raw
        return addr

    def string(self, text: str) -> int:
        return self.add(Cmdline(text).encode(None), 1)


def build_mb1_info(base: int, cmdline: str, modules: Sequence[BootModule], facts: SystemFacts, *,
                   mem_lower: int | None = None) -> bytes:
    blob = _Blob(base, mb.MB1Info.sizeof())
    lower, upper = _meminfo(facts)
    lower = lower if mem_lower is None else mem_lower
    mmap = b"".join(mb.MB1MmapEntry.build(dict(size=20, base_addr=s, length=n, type=t))
                    for s, n, t in _mmap_entries(facts))
    mods = b"".join(mb.MB1Module.build(dict(mod_start=s, mod_end=e, string=blob.string(c), reserved=0))
                    for s, e, c in modules)
    flags = mb.MBI_MEMLIMITS | mb.MBI_CMDLINE | mb.MBI_MEMMAP | mb.MBI_LOADERNAME | (mb.MBI_MODULES if modules else 0)
    info = dict(flags=flags, mem_lower=lower, mem_upper=upper, boot_device=0, cmdline=blob.string(cmdline),
                mods_count=len(modules), mods_addr=blob.add(mods) if modules else 0, syms=bytes(16),
                mmap_length=len(mmap), mmap_addr=blob.add(mmap), drives_length=0, drives_addr=0, config_table=0,
                boot_loader_name=blob.string(LOADER_NAME), apm_table=0, vbe=bytes(16), framebuffer=bytes(28))
    blob.data[: mb.MB1Info.sizeof()] = mb.MB1Info.build(info)
    return bytes(blob.data)


def build_mb2_info(base: int, cmdline: str, modules: Sequence[BootModule], facts: SystemFacts, *, load_base: int | None,
                   mem_lower: int | None = None) -> bytes:
    lower, upper = _meminfo(facts)
    lower = lower if mem_lower is None else mem_lower
    mmap = b"".join(mb.MB2MmapEntry.build(dict(base_addr=s, length=n, type=t, reserved=0))
                    for s, n, t in _mmap_entries(facts))
    tags = [mb.mb2_tag(mb.MB2_TAG_BASIC_MEMINFO, mb.MB2BasicMeminfo.build(dict(mem_lower=lower, mem_upper=upper))),
            mb.mb2_tag(mb.MB2_TAG_MMAP, mb.MB2Mmap.build(dict(entry_size=24, entry_version=0, entries=mmap)))]
    if load_base is not None:
        tags.append(mb.mb2_tag(mb.MB2_TAG_LOAD_BASE, struct.pack("<I", load_base)))
    tags.append(mb.mb2_tag(mb.MB2_TAG_CMDLINE, Cmdline(cmdline).encode(None)))
    tags.append(mb.mb2_tag(mb.MB2_TAG_LOADER_NAME, LOADER_NAME.encode() + b"\0"))
    for start, end, line in modules:
        tags.append(mb.mb2_tag(mb.MB2_TAG_MODULE, mb.MB2Module.build(dict(mod_start=start, mod_end=end,
                                                                              cmdline=Cmdline(line).encode(None)))))
    tags.append(mb.mb2_tag(mb.MB2_TAG_END, b""))
    body = b"".join(tags)
    header: bytes = mb.MB2InfoHeader.build(dict(total_size=8 + len(body), reserved=0))
    return header + body
