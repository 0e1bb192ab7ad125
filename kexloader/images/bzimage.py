"""bzImage (x86 boot protocol 2.12+) entered through its 64-bit entry point.

Segments: kernel (protected-mode part, memsz = init_size), initrd, command line, zero page,
purgatory. Placement follows kexec-tools' bzImage64 loader (top-down, kernel at or above
pref_address, initrd at or above 16 MiB) so plans are comparable with what it loads.
"""

from __future__ import annotations

from construct import ConstError, ConstructError, Container

from .. import initramfs
from ..cmdline import Cmdline
from ..errors import MalformedImageError, UnknownFormatError, UnsupportedImageError
from ..formats import bzimage as bz
from ..memory import ADDRESS_LIMIT, Layout, SegmentData
from ..model import GiB, LoadRequest, MiB, Plan, Range, Role, SystemFacts, align_up
from . import linuxboot

NAME = "bzImage64"
MIN_KERNEL_ADDR = 1 * MiB
MIN_INITRD_ADDR = 16 * MiB


def probe(data: SegmentData) -> bool:
    return len(data) >= 0x206 and data[0x1FE:0x200] == b"\x55\xaa" and data[0x202:0x206] == bz.HEADER_MAGIC


def parse_header(data: SegmentData, name: str) -> Container:
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
    end = bz.header_end(hdr.jump)
    if end < bz.HEADER_END_MIN:
        # the zero page gets the header up to where the image says it ends: it must hold what we read of it
        raise MalformedImageError(f"{name}: corrupt setup header: its jump (0x200: {hdr.jump:#06x}) ends it at "
                                  f"{end:#x}, before init_size (protocol 2.10+ headers reach {bz.HEADER_END_MIN:#x})")
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
    Cmdline(req.cmdline).check(hdr.cmdline_size, what=what)  # refused before anything is placed
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
        kernel = layout.place(Role.KERNEL, payload, memsz=memsz, align=hdr.kernel_alignment,
                              window=Range.between(low, kernel_top), what=req.kernel_name)
    else:
        kernel = layout.put(Role.KERNEL, payload, hdr.pref_address, memsz, what=f"{req.kernel_name} (not relocatable)")
        notes.append(f"kernel is not relocatable: loaded at its pref_address {hdr.pref_address:#x}")

    initrd = None
    initrd_top = ADDRESS_LIMIT if above_4g else min(hdr.initrd_addr_max + 1, 4 * GiB)
    if req.initrd_parts:  # several initrds: back to back, each on its own page (initramfs.place)
        initrd = initramfs.place(layout, req.initrd_parts, window=Range.between(MIN_INITRD_ADDR, initrd_top))
        notes.append(f"initramfs of {len(req.initrd_parts)} parts: {initramfs.describe(req.initrd_parts)}")
    elif req.initrd is not None:
        initrd = layout.place(Role.INITRD, req.initrd, window=Range.between(MIN_INITRD_ADDR, initrd_top),
                              what=req.initrd_name)

    release = None
    if req.crash:  # the kdump code only for -p: a plain -l does not import it
        from .. import crash
        release = crash.bzimage_release(req.kernel)
    return linuxboot.finish(layout, req, facts, usable, header_page=bytes(req.kernel[:0x1000]),
                            capacity=hdr.cmdline_size, what=what, target_release=release,
                            initrd=initrd, kernel_entry=kernel.mem + bz.KERNEL_64_ENTRY_OFFSET, notes=notes)
