"""Field-by-field decoding of a 4096-byte `struct boot_params` (the x86 "zero page"), for diffing two of them.

Self-contained on purpose (the tool must keep working while kexloader's own formats change): offsets from
arch/x86/include/uapi/asm/bootparam.h and screen_info.h, as tabled in shared/reference/interfaces.md
§2.1/§2.2. Every one of the 4096 bytes belongs to exactly one field, so any differing byte has a name.
"""

from __future__ import annotations

import dataclasses
import struct

SIZE = 0x1000

SETUP_DATA_TYPES = {1: "SETUP_E820_EXT", 2: "SETUP_DTB", 3: "SETUP_PCI", 4: "SETUP_EFI",
                    5: "SETUP_APPLE_PROPERTIES", 6: "SETUP_JAILHOUSE", 7: "SETUP_CC_BLOB", 8: "SETUP_IMA",
                    9: "SETUP_RNG_SEED", 10: "SETUP_KEXEC_KHO"}
E820_TYPES = {1: "RAM", 2: "RESERVED", 3: "ACPI", 4: "NVS", 5: "UNUSABLE", 7: "PMEM", 12: "PRAM"}


@dataclasses.dataclass(frozen=True)
class Field:
    offset: int
    size: int
    name: str
    kind: str = "int"  # int (little endian, size 1/2/4/8), bytes, e820

    def raw(self, page: bytes) -> bytes:
        return bytes(page[self.offset:self.offset + self.size])

    def value(self, page: bytes):
        raw = self.raw(page)
        if self.kind == "int":
            return int.from_bytes(raw, "little")
        if self.kind == "e820":
            addr, size, typ = struct.unpack("<QQI", raw)
            return (addr, size, typ)
        return raw

    def show(self, page: bytes) -> str:
        v = self.value(page)
        if self.kind == "int":
            return f"{v:#x}"
        if self.kind == "e820":
            addr, size, typ = v
            if not (addr or size or typ):
                return "(empty)"
            return f"[{addr:#x}, {addr + size:#x}) {E820_TYPES.get(typ, typ)}"
        if not any(v):
            return f"{len(v)} zero bytes"
        if len(v) <= 16:
            return v.hex(" ")
        nz = sum(1 for b in v if b)
        return f"{len(v)} bytes, {nz} non-zero, first {v[:16].hex(' ')}"


def _table() -> list[Field]:
    f: list[Field] = []

    def add(off, size, name, kind="int"):
        f.append(Field(off, size, name, kind))

    # struct screen_info (0x00..0x3f)
    for off, size, name in [
        (0x00, 1, "orig_x"), (0x01, 1, "orig_y"), (0x02, 2, "ext_mem_k"), (0x04, 2, "orig_video_page"),
        (0x06, 1, "orig_video_mode"), (0x07, 1, "orig_video_cols"), (0x08, 1, "screen_info.flags"),
        (0x09, 1, "screen_info.unused2"), (0x0A, 2, "orig_video_ega_bx"), (0x0C, 2, "screen_info.unused3"),
        (0x0E, 1, "orig_video_lines"), (0x0F, 1, "orig_video_isVGA"), (0x10, 2, "orig_video_points"),
        (0x12, 2, "lfb_width"), (0x14, 2, "lfb_height"), (0x16, 2, "lfb_depth"), (0x18, 4, "lfb_base"),
        (0x1C, 4, "lfb_size"), (0x20, 2, "cl_magic"), (0x22, 2, "cl_offset"), (0x24, 2, "lfb_linelength"),
        (0x26, 1, "red_size"), (0x27, 1, "red_pos"), (0x28, 1, "green_size"), (0x29, 1, "green_pos"),
        (0x2A, 1, "blue_size"), (0x2B, 1, "blue_pos"), (0x2C, 1, "rsvd_size"), (0x2D, 1, "rsvd_pos"),
        (0x2E, 2, "vesapm_seg"), (0x30, 2, "vesapm_off"), (0x32, 2, "pages"), (0x34, 2, "vesa_attributes"),
        (0x36, 4, "capabilities"), (0x3A, 4, "ext_lfb_base"), (0x3E, 2, "screen_info._reserved"),
    ]:
        add(off, size, name)
    add(0x40, 0x14, "apm_bios_info", "bytes")
    add(0x54, 4, "_pad2", "bytes")
    add(0x58, 8, "tboot_addr")
    add(0x60, 0x10, "ist_info", "bytes")
    add(0x70, 8, "acpi_rsdp_addr")
    add(0x78, 8, "_pad3", "bytes")
    add(0x80, 0x10, "hd0_info", "bytes")
    add(0x90, 0x10, "hd1_info", "bytes")
    add(0xA0, 0x10, "sys_desc_table", "bytes")
    add(0xB0, 0x10, "olpc_ofw_header", "bytes")
    add(0xC0, 4, "ext_ramdisk_image")
    add(0xC4, 4, "ext_ramdisk_size")
    add(0xC8, 4, "ext_cmd_line_ptr")
    add(0xCC, 0x13C - 0xCC, "_pad4", "bytes")
    add(0x13C, 4, "cc_blob_address")
    add(0x140, 0x80, "edid_info", "bytes")
    for off, name in [(0x1C0, "efi_loader_signature"), (0x1C4, "efi_systab"), (0x1C8, "efi_memdesc_size"),
                      (0x1CC, "efi_memdesc_version"), (0x1D0, "efi_memmap"), (0x1D4, "efi_memmap_size"),
                      (0x1D8, "efi_systab_hi"), (0x1DC, "efi_memmap_hi")]:
        add(off, 4, name)
    add(0x1E0, 4, "alt_mem_k")
    add(0x1E4, 4, "scratch")
    add(0x1E8, 1, "e820_entries")
    add(0x1E9, 1, "eddbuf_entries")
    add(0x1EA, 1, "edd_mbr_sig_buf_entries")
    add(0x1EB, 1, "kbd_status")
    add(0x1EC, 1, "secure_boot")
    add(0x1ED, 2, "_pad5", "bytes")
    add(0x1EF, 1, "sentinel")
    add(0x1F0, 1, "_pad6", "bytes")
    # struct setup_header (0x1f1..0x26b)
    for off, size, name in [
        (0x1F1, 1, "hdr.setup_sects"), (0x1F2, 2, "hdr.root_flags"), (0x1F4, 4, "hdr.syssize"),
        (0x1F8, 2, "hdr.ram_size"), (0x1FA, 2, "hdr.vid_mode"), (0x1FC, 2, "hdr.root_dev"),
        (0x1FE, 2, "hdr.boot_flag"), (0x200, 2, "hdr.jump"), (0x202, 4, "hdr.header"), (0x206, 2, "hdr.version"),
        (0x208, 4, "hdr.realmode_swtch"), (0x20C, 2, "hdr.start_sys_seg"), (0x20E, 2, "hdr.kernel_version"),
        (0x210, 1, "hdr.type_of_loader"), (0x211, 1, "hdr.loadflags"), (0x212, 2, "hdr.setup_move_size"),
        (0x214, 4, "hdr.code32_start"), (0x218, 4, "hdr.ramdisk_image"), (0x21C, 4, "hdr.ramdisk_size"),
        (0x220, 4, "hdr.bootsect_kludge"), (0x224, 2, "hdr.heap_end_ptr"), (0x226, 1, "hdr.ext_loader_ver"),
        (0x227, 1, "hdr.ext_loader_type"), (0x228, 4, "hdr.cmd_line_ptr"), (0x22C, 4, "hdr.initrd_addr_max"),
        (0x230, 4, "hdr.kernel_alignment"), (0x234, 1, "hdr.relocatable_kernel"), (0x235, 1, "hdr.min_alignment"),
        (0x236, 2, "hdr.xloadflags"), (0x238, 4, "hdr.cmdline_size"), (0x23C, 4, "hdr.hardware_subarch"),
        (0x240, 8, "hdr.hardware_subarch_data"), (0x248, 4, "hdr.payload_offset"), (0x24C, 4, "hdr.payload_length"),
        (0x250, 8, "hdr.setup_data"), (0x258, 8, "hdr.pref_address"), (0x260, 4, "hdr.init_size"),
        (0x264, 4, "hdr.handover_offset"), (0x268, 4, "hdr.kernel_info_offset"),
    ]:
        add(off, size, name)
    add(0x26C, 0x290 - 0x26C, "_pad7", "bytes")
    for i in range(16):
        add(0x290 + 4 * i, 4, f"edd_mbr_sig_buffer[{i}]")
    for i in range(128):
        add(0x2D0 + 20 * i, 20, f"e820_table[{i}]", "e820")
    add(0xCD0, 0xD00 - 0xCD0, "_pad8", "bytes")
    add(0xD00, 0x1EC, "eddbuf", "bytes")
    add(0xEEC, SIZE - 0xEEC, "_pad9", "bytes")
    return f


FIELDS = _table()
BY_NAME = {f.name: f for f in FIELDS}

# every byte named exactly once
_cover = bytearray(SIZE)
for _f in FIELDS:
    for _i in range(_f.offset, _f.offset + _f.size):
        _cover[_i] += 1
assert all(c == 1 for c in _cover), "zero page field table must cover each byte once"
del _cover, _f, _i


def get(page: bytes, name: str):
    return BY_NAME[name].value(page)


def u64_split(page: bytes, lo: str, hi: str) -> int:
    return get(page, lo) | get(page, hi) << 32


def cmd_line_ptr(page: bytes) -> int:
    return u64_split(page, "hdr.cmd_line_ptr", "ext_cmd_line_ptr")


def ramdisk(page: bytes) -> tuple[int, int]:
    return (u64_split(page, "hdr.ramdisk_image", "ext_ramdisk_image"),
            u64_split(page, "hdr.ramdisk_size", "ext_ramdisk_size"))


def e820(page: bytes) -> list[tuple[int, int, int]]:
    n = min(get(page, "e820_entries"), 128)
    return [BY_NAME[f"e820_table[{i}]"].value(page) for i in range(n)]


@dataclasses.dataclass
class FieldDiff:
    name: str
    offset: int
    size: int
    left: str
    right: str


def diff(left: bytes, right: bytes) -> list[FieldDiff]:
    """Every field whose bytes differ, in offset order."""
    if len(left) < SIZE or len(right) < SIZE:
        raise ValueError("a zero page is 4096 bytes")
    return [FieldDiff(f.name, f.offset, f.size, f.show(left), f.show(right))
            for f in FIELDS if f.raw(left) != f.raw(right)]


def describe(page: bytes) -> list[tuple[str, str]]:
    """(name, value) for every field that is not zero."""
    return [(f.name, f.show(page)) for f in FIELDS if any(f.raw(page))]
