"""`struct boot_params`, the Linux "zero page" (arch/x86/include/uapi/asm/bootparam.h, zero-page.rst)."""

from construct import Array, Bytes, Int8ul, Int32ul, Int64ul, Padding, Struct

from .bzimage import SETUP_HEADER_SIZE, SetupHeader

BOOT_PARAMS_SIZE = 0x1000
E820_MAX_ENTRIES_ZEROPAGE = 128
EDD_MBR_SIG_MAX = 16
EDDMAXNR = 6
SCREEN_INFO_SIZE = 0x40

E820Entry = Struct(  # struct boot_e820_entry, packed
    "addr" / Int64ul,
    "size" / Int64ul,
    "type" / Int32ul,
)
assert E820Entry.sizeof() == 20

BootParams = Struct(
    "screen_info" / Bytes(SCREEN_INFO_SIZE),  # 0x000
    "apm_bios_info" / Bytes(0x14),  # 0x040
    Padding(4),
    "tboot_addr" / Int64ul,  # 0x058
    "ist_info" / Bytes(0x10),  # 0x060
    "acpi_rsdp_addr" / Int64ul,  # 0x070
    Padding(8),
    "hd0_info" / Bytes(0x10),  # 0x080
    "hd1_info" / Bytes(0x10),  # 0x090
    "sys_desc_table" / Bytes(0x10),  # 0x0a0
    "olpc_ofw_header" / Bytes(0x10),  # 0x0b0
    "ext_ramdisk_image" / Int32ul,  # 0x0c0
    "ext_ramdisk_size" / Int32ul,  # 0x0c4
    "ext_cmd_line_ptr" / Int32ul,  # 0x0c8
    Padding(112),
    "cc_blob_address" / Int32ul,  # 0x13c
    "edid_info" / Bytes(0x80),  # 0x140
    "efi_info" / Bytes(0x20),  # 0x1c0
    "alt_mem_k" / Int32ul,  # 0x1e0
    "scratch" / Int32ul,  # 0x1e4
    "e820_entries" / Int8ul,  # 0x1e8
    "eddbuf_entries" / Int8ul,
    "edd_mbr_sig_buf_entries" / Int8ul,
    "kbd_status" / Int8ul,
    "secure_boot" / Int8ul,  # 0x1ec
    Padding(2),
    "sentinel" / Int8ul,  # 0x1ef; must be 0 or the kernel discards fields (sanitize_boot_params)
    Padding(1),
    "hdr" / SetupHeader,  # 0x1f1
    Padding(0x290 - 0x1F1 - SETUP_HEADER_SIZE),
    "edd_mbr_sig_buffer" / Array(EDD_MBR_SIG_MAX, Int32ul),  # 0x290
    "e820_table" / Array(E820_MAX_ENTRIES_ZEROPAGE, E820Entry),  # 0x2d0
    Padding(48),
    "eddbuf" / Bytes(0x1EC),  # 0xd00, struct edd_info[6]
    Padding(276),
)
assert BootParams.sizeof() == BOOT_PARAMS_SIZE

# Offsets a loader writes, for code that patches raw bytes and for tools that diff two zero pages.
OFFSETS = {
    "screen_info": 0x000,
    "acpi_rsdp_addr": 0x070,
    "ext_ramdisk_image": 0x0C0,
    "ext_ramdisk_size": 0x0C4,
    "ext_cmd_line_ptr": 0x0C8,
    "efi_info": 0x1C0,
    "alt_mem_k": 0x1E0,
    "e820_entries": 0x1E8,
    "sentinel": 0x1EF,
    "hdr": 0x1F1,
    "e820_table": 0x2D0,
}
