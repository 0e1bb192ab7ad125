"""The Linux zero page handed to the new kernel, built fresh from the image's header and the system facts.

Not copied from the running kernel: only fields that describe the hardware (screen_info,
hardware_subarch, the ACPI RSDP, and on UEFI machines efi_info through kexloader/efiboot.py) are taken
from it. The setup_data chain (RNG seed, SETUP_E820_EXT, SETUP_EFI) is one segment (`place_setup_data`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .formats import bootparams as bp
from .errors import MalformedImageError, SystemFactsError
from .formats import bzimage as bz
from .memory import Layout
from .model import MemRegion, MiB, Range, Role

TYPE_OF_LOADER_KEXEC = 0xD0  # boot.rst loader ID 0xD ("kexec-tools"), version 0: we stand in for it
SCREEN_INFO_DEFAULT = bytes([0, 0, 0, 0, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 25, 1, 16, 0]).ljust(bp.SCREEN_INFO_SIZE, b"\0")
HARDWARE_SUBARCH = slice(0x23C, 0x248)  # hardware_subarch + hardware_subarch_data
HEADER_VERSION_END = 0x208  # "HdrS" at 0x202, the protocol version at 0x206


def build_zero_page(image: bytes, *, cmdline: Range, initrd: Range | None, memmap: Sequence[MemRegion],
                    running: bytes | None, acpi_rsdp: int | None, setup_data: int = 0,
                    efi_info: bytes | None = None, screen_info: bytes | None = None) -> bytes:
    """4096 bytes of `struct boot_params` for a 64-bit boot protocol entry.

    image: the bzImage (only its first sectors are read); cmdline: where the NUL-terminated command
    line sits (size without NUL); running: the current kernel's boot_params, if known; efi_info: the
    32 bytes of the EFI hand-off (kexloader/efiboot.py), or None for none; screen_info: 64 bytes that replace
    the running kernel's (--reset-vga: SCREEN_INFO_DEFAULT, the purgatory's mode 3). Memory maps of more than 128
    entries: the first 128 go here, the rest in SETUP_E820_EXT (`e820_extension`)."""
    page = bytearray(bp.BOOT_PARAMS_SIZE)
    # The header as the image declares it, and no further: bytes past it are not header (boot.rst).
    jump = struct.unpack_from("<H", image, 0x200)[0]
    end = min(bz.header_end(jump), bp.OFFSETS["hdr"] + bz.SETUP_HEADER_SIZE)
    # Past "HdrS" and the version at least; a bzImage must reach init_size, which images.bzimage.parse_header
    # checks before this, while vmlinux's synthetic 2.06 header ends at cmdline_size.
    if end < HEADER_VERSION_END:
        raise MalformedImageError(f"setup header ends at {end:#x} (jump {jump:#06x}), before its version")
    if image[0x1FE:0x200] != b"\x55\xaa" or image[0x202:0x206] != bz.HEADER_MAGIC:
        raise MalformedImageError("no Linux setup header (boot flag 0xAA55 and \"HdrS\" at 0x202)")
    page[bp.OFFSETS["hdr"]:end] = image[bp.OFFSETS["hdr"]:end]

    # Fields written in place (struct.pack_into at bootparam.h's offsets, formats/bootparams.OFFSETS): the
    # construct BootParams describes the same page, but parsing and rebuilding it cost ~5 ms per plan.
    if running:
        if len(running) < HARDWARE_SUBARCH.stop:
            raise SystemFactsError(f"the running kernel's boot_params is {len(running)} bytes, not 4096")
        page[0:bp.SCREEN_INFO_SIZE] = running[:bp.SCREEN_INFO_SIZE]
        page[HARDWARE_SUBARCH] = running[HARDWARE_SUBARCH]
    else:
        page[0:bp.SCREEN_INFO_SIZE] = SCREEN_INFO_DEFAULT
    if screen_info is not None:
        if len(screen_info) != bp.SCREEN_INFO_SIZE:
            raise ValueError(f"screen_info is {len(screen_info)} bytes, not {bp.SCREEN_INFO_SIZE}")
        page[0:bp.SCREEN_INFO_SIZE] = screen_info
    _put(page, "acpi_rsdp_addr", "<Q", acpi_rsdp or 0)
    if efi_info is not None:
        if len(efi_info) != EFI_INFO_SIZE:
            raise ValueError(f"efi_info is {len(efi_info)} bytes, not {EFI_INFO_SIZE}")
        page[bp.OFFSETS["efi_info"]:bp.OFFSETS["efi_info"] + EFI_INFO_SIZE] = efi_info

    _put(page, "type_of_loader", "<B", TYPE_OF_LOADER_KEXEC)
    _put(page, "loadflags", "<B", 0)  # as kexec-tools and the kernel's kexec_file loader: no heap, no KEEP_SEGMENTS
    _put_split(page, "cmd_line_ptr", "ext_cmd_line_ptr", cmdline.start)
    _put_split(page, "ramdisk_image", "ext_ramdisk_image", initrd.start if initrd else 0)
    _put_split(page, "ramdisk_size", "ext_ramdisk_size", initrd.size if initrd else 0)
    _put(page, "setup_data", "<Q", setup_data)  # physical address of the first struct setup_data, or 0

    entries = [r for r in memmap if r.range.size]
    table = entries[:bp.E820_MAX_ENTRIES_ZEROPAGE]
    for i, r in enumerate(table):
        struct.pack_into("<QQI", page, bp.OFFSETS["e820_table"] + i * bp.E820Entry.sizeof(),
                         r.range.start, r.range.size, r.type)
    _put(page, "e820_entries", "<B", len(table))
    _put(page, "alt_mem_k", "<I", _kib_above_1m(entries))
    return bytes(page)


EFI_INFO_SIZE = 0x20
FIELDS = {  # the zero-page offsets of what build_zero_page writes, the setup header's from boot.rst
    **bp.OFFSETS, "type_of_loader": 0x210, "loadflags": 0x211, "ramdisk_image": 0x218, "ramdisk_size": 0x21C,
    "cmd_line_ptr": 0x228, "setup_data": 0x250,
}


def _put(page: bytearray, name: str, fmt: str, value: int) -> None:
    struct.pack_into(fmt, page, FIELDS[name], value)


def _put_split(page: bytearray, low: str, high: str, value: int) -> None:
    """A 64-bit value kept as a 32-bit header field and its ext_ high half in the zero page."""
    _put(page, low, "<I", value & 0xFFFFFFFF)
    _put(page, high, "<I", value >> 32)


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



def _kib_above_1m(memmap: Sequence[MemRegion]) -> int:
    """KiB of RAM from 1 MiB to the first hole (the legacy alt_mem_k field)."""
    for r in memmap:
        if r.is_ram and r.range.start <= MiB < r.range.end:
            return min((r.range.end - MiB) >> 10, 0xFFFFFFFF)
    return 0
