"""bzImage (x86 boot protocol 2.12+) entered through its 64-bit entry point.

Segments: kernel (protected-mode part, memsz = init_size), initrd, command line, zero page,
purgatory. Placement follows kexec-tools' bzImage64 loader (top-down, kernel at or above
pref_address, initrd at or above 16 MiB) so plans are comparable with what it loads.
"""

from __future__ import annotations

from construct import ConstError, ConstructError

from .. import bootparams, cmdline, crash
from ..errors import MalformedImageError, UnknownFormatError, UnsupportedImageError
from ..formats import bzimage as bz
from ..handoff import attach_purgatory
from ..memory import ADDRESS_LIMIT, Layout, validate
from ..model import (MAP_ONLY, GiB, KEXEC_ARCH_X86_64, KEXEC_ON_CRASH, LinuxEntry, LoadRequest, MiB, Plan, Range,
                     Segment, SystemFacts, align_up)
from ..purgatory.program import Linux64Handoff

NAME = "bzImage64"
MIN_KERNEL_ADDR = 1 * MiB
MIN_INITRD_ADDR = 16 * MiB
LOW_MEMORY = Range(0, 1 * MiB)
SMALL_SEGMENTS = Range(1 * MiB, 4 * GiB - 1 * MiB)  # zero page, command line, purgatory: low, but above BIOS data


def probe(data) -> bool:
    return len(data) >= 0x206 and data[0x1FE:0x200] == b"\x55\xaa" and data[0x202:0x206] == bz.HEADER_MAGIC


def parse_header(data, name: str):
    """The setup header, checked for what a 64-bit kexec needs; errors name the file and the field."""
    if len(data) < 1024:
        if probe(data):
            raise MalformedImageError(f"{name}: truncated bzImage ({len(data)} bytes)")
        raise UnknownFormatError(f"{name}: not a kernel image kexloader knows")
    try:
        hdr = bz.SetupHeader.parse(bytes(data[bz.SETUP_HEADER_OFFSET:bz.SETUP_HEADER_OFFSET + bz.SETUP_HEADER_SIZE]))
    except ConstError:
        raise UnknownFormatError(f"{name}: not a bzImage (no 0xAA55 at 0x1fe and 'HdrS' at 0x202)") from None
    except ConstructError as e:
        raise MalformedImageError(f"{name}: corrupt setup header: {e}") from None
    version = f"{hdr.version >> 8}.{hdr.version & 0xFF:02}"
    if hdr.version < 0x020C:
        raise UnsupportedImageError(f"{name}: boot protocol {version} is too old; kexloader needs 2.12+ "
                                    "for the 64-bit entry point")
    if not hdr.xloadflags & bz.XLF_KERNEL_64:
        raise UnsupportedImageError(f"{name}: a 32-bit-only kernel (no XLF_KERNEL_64); kexloader boots x86-64 "
                                    "kernels through their 64-bit entry")
    if not hdr.loadflags & bz.LOADED_HIGH:
        raise UnsupportedImageError(f"{name}: a zImage (not loaded high); only bzImage is supported")
    setup = bz.setup_size(hdr.setup_sects)
    need = setup + hdr.syssize * 16
    if len(data) < need:
        raise MalformedImageError(f"{name}: truncated bzImage: {len(data)} bytes, the header says {need}")
    if hdr.init_size == 0 or hdr.cmdline_size == 0 or hdr.kernel_alignment & (hdr.kernel_alignment - 1):
        raise MalformedImageError(f"{name}: corrupt setup header (init_size {hdr.init_size:#x}, "
                                  f"cmdline_size {hdr.cmdline_size}, kernel_alignment {hdr.kernel_alignment:#x})")
    return hdr


def plan(req: LoadRequest, facts: SystemFacts, usable: list[Range]) -> Plan:
    """Lay out a bzImage in `usable` memory (RAM, or the crash region for -p)."""
    hdr = parse_header(req.kernel, req.kernel_name)
    what = f"kernel ({req.kernel_name})"
    line = cmdline.encode(req.cmdline, capacity=hdr.cmdline_size, what=what)  # -p: again with elfcorehdr= below
    notes = [f"{req.kernel_name}: bzImage, boot protocol {hdr.version >> 8}.{hdr.version & 0xFF:02}"]
    above_4g = bool(hdr.xloadflags & bz.XLF_CAN_BE_LOADED_ABOVE_4G)
    layout = Layout(usable)

    setup = bz.setup_size(hdr.setup_sects)
    payload = memoryview(req.kernel)[setup:]
    memsz = align_up(max(hdr.init_size, len(payload)), 4096)
    kernel_top = ADDRESS_LIMIT if above_4g else 4 * GiB
    if hdr.relocatable_kernel:
        low = max(MIN_KERNEL_ADDR, hdr.pref_address)
        if req.crash:
            low = MIN_KERNEL_ADDR  # the crash region decides; pref_address is usually below it anyway
        kernel = layout.place("kernel", payload, memsz=memsz, align=hdr.kernel_alignment,
                              window=Range.between(low, kernel_top), what=req.kernel_name)
    else:
        kernel = layout.put("kernel", payload, hdr.pref_address, memsz, what=f"{req.kernel_name} (not relocatable)")
        notes.append(f"kernel is not relocatable: loaded at its pref_address {hdr.pref_address:#x}")

    initrd = None
    if req.initrd is not None:
        initrd_top = ADDRESS_LIMIT if above_4g else min(hdr.initrd_addr_max + 1, 4 * GiB)
        initrd = layout.place("initrd", req.initrd, window=Range.between(MIN_INITRD_ADDR, initrd_top),
                              what=req.initrd_name)

    kdump = None
    small = SMALL_SEGMENTS
    if req.crash:
        kdump = crash.prepare(layout, facts, cmdline=req.cmdline, capacity=hdr.cmdline_size, what=what,
                              target_release=crash.bzimage_release(req.kernel))
        line = cmdline.encode(kdump.cmdline, capacity=hdr.cmdline_size, what=what)
        notes += kdump.notes
        if not any(u.overlaps(SMALL_SEGMENTS) for u in usable):  # a crash region above 4 GiB (crashkernel=,high)
            small = Range.between(MIN_KERNEL_ADDR, ADDRESS_LIMIT)
    line_seg = layout.place("cmdline", line, window=small, what=f"{len(line) - 1} bytes")
    zero_page = bootparams.build_zero_page(
        bytes(req.kernel[:0x1000]), cmdline=Range(line_seg.mem, len(line) - 1),
        initrd=Range(initrd.mem, initrd.bufsz) if initrd else None, memmap=kdump.memmap if kdump else facts.memmap,
        running=facts.boot_params, acpi_rsdp=facts.acpi_rsdp)
    params = layout.place("boot-params", zero_page, window=small, what="zero page")

    handoff = Linux64Handoff(boot_params=params.mem, kernel_entry=kernel.mem + bz.KERNEL_64_ENTRY_OFFSET)
    entry = attach_purgatory(layout, handoff, req.purgatory, window=small, backup=kdump.backup if kdump else None)
    flags = KEXEC_ARCH_X86_64 | (KEXEC_ON_CRASH if req.crash else 0)
    segments, checked = tuple(layout.segments), list(usable)
    if facts.xen is not None:
        # Xen maps only the segments for the new image, and startup_64 reads the BIOS data area and puts
        # its 5-level trampoline in low memory before it builds its own page tables: have Xen map the
        # first MiB as well, without copying or zeroing it.
        segments += (Segment(MAP_ONLY, 0, LOW_MEMORY.size, b"", "first MiB, mapped for the kernel's early code"),)
        checked.append(LOW_MEMORY)
        notes.append("Xen target: the first MiB is mapped (not written) for the kernel's early code")
    result = Plan(entry=entry, flags=flags, segments=segments,
                  linux=LinuxEntry(boot_params=params.mem, kernel_entry=handoff.kernel_entry), notes=tuple(notes))
    validate(result, checked)
    return result
