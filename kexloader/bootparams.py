"""The Linux zero page handed to the new kernel, built fresh from the image's header and the system facts.

Not copied from the running kernel: only fields that describe the hardware (screen_info,
hardware_subarch, the ACPI RSDP, and on UEFI machines efi_info through kexloader/efiboot.py) are taken
from it. The setup_data chain (RNG seed, SETUP_E820_EXT, SETUP_EFI) is one segment (`place_setup_data`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .formats import bootparams as bp
from .errors import MalformedImageError
from .formats import bzimage as bz
from .memory import Layout
from .model import MemRegion, MiB, Range, Role

TYPE_OF_LOADER_KEXEC = 0xD0  # boot.rst loader ID 0xD ("kexec-tools"), version 0: we stand in for it
SCREEN_INFO_DEFAULT = bytes([0, 0, 0, 0, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 25, 1, 16, 0]).ljust(bp.SCREEN_INFO_SIZE, b"\0")
HARDWARE_SUBARCH = slice(0x23C, 0x248)  # hardware_subarch + hardware_subarch_data
HEADER_VERSION_END = 0x208  # "HdrS" at 0x202, the protocol version at 0x206


def build_zero_page(image: bytes, *, cmdline: Range, initrd: Range | None, memmap: Sequence[MemRegion],
                    running: bytes | None, acpi_rsdp: int | None, setup_data: int = 0,
                    efi_info: bytes | None = None) -> bytes:
    """4096 bytes of `struct boot_params` for a 64-bit boot protocol entry.

    image: the bzImage (only its first sectors are read); cmdline: where the NUL-terminated command
    line sits (size without NUL); running: the current kernel's boot_params, if known; efi_info: the
    32 bytes of the EFI hand-off (kexloader/efiboot.py), or None for none. Memory maps of more than 128
    entries: the first 128 go here, the rest in SETUP_E820_EXT (`e820_extension`)."""
    page = bytearray(bp.BOOT_PARAMS_SIZE)
    # The header as the image declares it, and no further: bytes past it are not header (boot.rst).
    jump = struct.unpack_from("<H", image, 0x200)[0]
    end = min(bz.header_end(jump), bp.OFFSETS["hdr"] + bz.SETUP_HEADER_SIZE)
    # Past "HdrS" and the version at least (parsing checks the magic); a bzImage must reach init_size, which
    # images.bzimage.parse_header checks before this, while vmlinux's synthetic 2.06 header ends at cmdline_size.
    if end < HEADER_VERSION_END:
        raise MalformedImageError(f"setup header ends at {end:#x} (jump {jump:#06x}), before its version")
    page[bp.OFFSETS["hdr"]:end] = image[bp.OFFSETS["hdr"]:end]
    params = bp.BootParams.parse(bytes(page))
    hdr = params.hdr

    params.screen_info = running[: bp.SCREEN_INFO_SIZE] if running else SCREEN_INFO_DEFAULT
    if running:
        page_subarch = running[HARDWARE_SUBARCH]
        hdr.hardware_subarch, hdr.hardware_subarch_data = struct.unpack("<IQ", page_subarch)
    params.acpi_rsdp_addr = acpi_rsdp or 0
    if efi_info is not None:
        params.efi_info = efi_info

    hdr.type_of_loader = TYPE_OF_LOADER_KEXEC
    hdr.loadflags = 0  # as kexec-tools and the kernel's kexec_file loader: no heap, no KEEP_SEGMENTS
    hdr.cmd_line_ptr, params.ext_cmd_line_ptr = _split(cmdline.start)
    if initrd:
        hdr.ramdisk_image, params.ext_ramdisk_image = _split(initrd.start)
        hdr.ramdisk_size, params.ext_ramdisk_size = _split(initrd.size)
    else:
        hdr.ramdisk_image = hdr.ramdisk_size = params.ext_ramdisk_image = params.ext_ramdisk_size = 0
    hdr.setup_data = setup_data  # physical address of the first struct setup_data, or 0

    entries = [r for r in memmap if r.range.size]
    table = [dict(addr=r.range.start, size=r.range.size, type=r.type) for r in entries[:bp.E820_MAX_ENTRIES_ZEROPAGE]]
    params.e820_table = table + [dict(addr=0, size=0, type=0)] * (bp.E820_MAX_ENTRIES_ZEROPAGE - len(table))
    params.e820_entries = len(table)
    params.alt_mem_k = _kib_above_1m(entries)
    zero_page: bytes = bp.BootParams.build(params)
    return zero_page


VIDEO_TYPES = {0x23: "VESA framebuffer", 0x70: "EFI framebuffer"}  # screen_info.orig_video_isVGA (VIDEO_TYPE_*)
VIDEO_CAPABILITY_64BIT_BASE = 1 << 1


def describe_screen(running: bytes | None) -> str | None:
    """One note on the framebuffer the next kernel gets in screen_info (copied from the running kernel's boot
    screen_info), or None for VGA text / no screen. Offsets: struct screen_info, include/uapi/linux/screen_info.h."""
    if not running or len(running) < bp.SCREEN_INFO_SIZE or running[0x0F] not in VIDEO_TYPES:
        return None
    width, height, depth, base = struct.unpack_from("<HHHI", running, 0x12)
    line = struct.unpack_from("<H", running, 0x24)[0]
    caps, ext_base = struct.unpack_from("<II", running, 0x36)
    if caps & VIDEO_CAPABILITY_64BIT_BASE:
        base |= ext_base << 32
    return (f"screen: {VIDEO_TYPES[running[0x0F]]} {width}x{height}x{depth} at {base:#x}, {line} bytes a line "
            f"(the running kernel's boot screen_info): the next kernel's efifb or simpledrm takes it over")


def e820_extension(memmap: Sequence[MemRegion]) -> bytes | None:
    """The SETUP_E820_EXT payload for the entries past the zero page's 128 (boot.rst: the kernel appends them
    to its e820 table, e820__memory_setup_extended), or None when all fit."""
    entries = [r for r in memmap if r.range.size]
    rest = entries[bp.E820_MAX_ENTRIES_ZEROPAGE:]
    return bp.e820_records((r.range.start, r.range.size, r.type) for r in rest) if rest else None


def place_setup_data(layout: Layout, records: Sequence[tuple[int, bytes]], window: Range) -> int:
    """Put the setup_data chain of `records` ((type, payload), in chain order) in one segment; its address for
    hdr.setup_data, or 0 when there is nothing to chain."""
    if not records:
        return 0
    size = len(bp.build_setup_chain(records, 0))
    names = ", ".join("SETUP_" + bp.SETUP_TYPES.get(kind, str(kind)) for kind, _ in records)
    seg = layout.place(Role.SETUP_DATA, bytes(size), window=window, what=names)
    layout.replace(seg, bp.build_setup_chain(records, seg.mem))
    return seg.mem


def _split(value: int) -> tuple[int, int]:
    return value & 0xFFFFFFFF, value >> 32


def _kib_above_1m(memmap: Sequence[MemRegion]) -> int:
    """KiB of RAM from 1 MiB to the first hole (the legacy alt_mem_k field)."""
    for r in memmap:
        if r.is_ram and r.range.start <= MiB < r.range.end:
            return min((r.range.end - MiB) >> 10, 0xFFFFFFFF)
    return 0
