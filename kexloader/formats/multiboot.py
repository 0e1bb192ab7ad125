"""Multiboot 1 (spec 0.6.96) and Multiboot 2 (spec 2.0): OS-image headers and boot information.

Headers are parsed from a decompressed image; the boot information is built by the loader.
"""

from construct import Bytes, Const, GreedyBytes, Int16ul, Int32ul, Int64ul, Struct, this

# --- Multiboot 1 -----------------------------------------------------------------------------------
MB1_HEADER_MAGIC = 0x1BADB002
MB1_BOOTLOADER_MAGIC = 0x2BADB002
MB1_SEARCH = 8192  # header entirely within the first 8192 bytes, 4-byte aligned
MB1_ALIGN = 4

# header flags
MB1_PAGE_ALIGN = 1 << 0  # modules on 4 KiB boundaries
MB1_MEMORY_INFO = 1 << 1  # mem_* (and mmap_*) wanted
MB1_VIDEO_MODE = 1 << 2
MB1_AOUT_KLUDGE = 1 << 16  # load by header_addr..bss_end_addr instead of ELF program headers
MB1_UNSUPPORTED = 0x0000FFF8  # "must understand" bits the spec does not define

MB1Header = Struct(
    "magic" / Const(MB1_HEADER_MAGIC, Int32ul),
    "flags" / Int32ul,
    "checksum" / Int32ul,  # magic + flags + checksum == 0 mod 2^32
)
MB1AoutFields = Struct(  # present when flags has MB1_AOUT_KLUDGE
    "header_addr" / Int32ul,
    "load_addr" / Int32ul,
    "load_end_addr" / Int32ul,
    "bss_end_addr" / Int32ul,
    "entry_addr" / Int32ul,
)

# info flags
MBI_MEMLIMITS = 1 << 0
MBI_BOOTDEV = 1 << 1
MBI_CMDLINE = 1 << 2
MBI_MODULES = 1 << 3
MBI_MEMMAP = 1 << 6
MBI_LOADERNAME = 1 << 9

MB1Info = Struct(
    "flags" / Int32ul,  # 0
    "mem_lower" / Int32ul,  # 4, KiB below 1 MiB
    "mem_upper" / Int32ul,  # 8, KiB from 1 MiB to the first hole
    "boot_device" / Int32ul,  # 12
    "cmdline" / Int32ul,  # 16
    "mods_count" / Int32ul,  # 20
    "mods_addr" / Int32ul,  # 24
    "syms" / Bytes(16),  # 28
    "mmap_length" / Int32ul,  # 44
    "mmap_addr" / Int32ul,  # 48
    "drives_length" / Int32ul,  # 52
    "drives_addr" / Int32ul,  # 56
    "config_table" / Int32ul,  # 60
    "boot_loader_name" / Int32ul,  # 64
    "apm_table" / Int32ul,  # 68
    "vbe" / Bytes(16),  # 72..87
    "framebuffer" / Bytes(28),  # 88..115
)
assert MB1Info.sizeof() == 116

MB1Module = Struct(
    "mod_start" / Int32ul,
    "mod_end" / Int32ul,  # exclusive
    "string" / Int32ul,
    "reserved" / Int32ul,
)
assert MB1Module.sizeof() == 16

MB1MmapEntry = Struct(
    "size" / Int32ul,  # 20: the size of the rest of the entry
    "base_addr" / Int64ul,
    "length" / Int64ul,
    "type" / Int32ul,
)
assert MB1MmapEntry.sizeof() == 24

# --- Multiboot 2 -----------------------------------------------------------------------------------
MB2_HEADER_MAGIC = 0xE85250D6
MB2_BOOTLOADER_MAGIC = 0x36D76289
MB2_SEARCH = 32768  # header entirely within the first 32768 bytes, 8-byte aligned
MB2_ALIGN = 8
MB2_ARCH_I386 = 0

MB2Header = Struct(
    "magic" / Const(MB2_HEADER_MAGIC, Int32ul),
    "architecture" / Int32ul,
    "header_length" / Int32ul,
    "checksum" / Int32ul,  # magic + architecture + header_length + checksum == 0 mod 2^32
)

# header tag types
MB2_HTAG_END = 0
MB2_HTAG_INFO_REQUEST = 1
MB2_HTAG_ADDRESS = 2
MB2_HTAG_ENTRY = 3
MB2_HTAG_CONSOLE = 4
MB2_HTAG_FRAMEBUFFER = 5
MB2_HTAG_MODULE_ALIGN = 6
MB2_HTAG_EFI_BS = 7
MB2_HTAG_ENTRY_EFI32 = 8
MB2_HTAG_ENTRY_EFI64 = 9
MB2_HTAG_RELOCATABLE = 10
MB2_HTAG_OPTIONAL = 1  # flags bit 0

MB2HeaderTag = Struct(
    "type" / Int16ul,
    "flags" / Int16ul,
    "size" / Int32ul,
    "body" / Bytes(lambda ctx: max(ctx.size - 8, 0)),
)
MB2Address = Struct("header_addr" / Int32ul, "load_addr" / Int32ul, "load_end_addr" / Int32ul,
                    "bss_end_addr" / Int32ul)
MB2Relocatable = Struct("min_addr" / Int32ul, "max_addr" / Int32ul, "align" / Int32ul, "preference" / Int32ul)

# info tag types
MB2_TAG_END = 0
MB2_TAG_CMDLINE = 1
MB2_TAG_LOADER_NAME = 2
MB2_TAG_MODULE = 3
MB2_TAG_BASIC_MEMINFO = 4
MB2_TAG_MMAP = 6
MB2_TAG_ACPI_OLD = 14
MB2_TAG_ACPI_NEW = 15
MB2_TAG_LOAD_BASE = 21

MB2InfoHeader = Struct("total_size" / Int32ul, "reserved" / Int32ul)
MB2Tag = Struct("type" / Int32ul, "size" / Int32ul, "body" / Bytes(this.size - 8))
MB2MmapEntry = Struct("base_addr" / Int64ul, "length" / Int64ul, "type" / Int32ul, "reserved" / Int32ul)
assert MB2MmapEntry.sizeof() == 24
MB2Mmap = Struct("entry_size" / Int32ul, "entry_version" / Int32ul, "entries" / GreedyBytes)
MB2Module = Struct("mod_start" / Int32ul, "mod_end" / Int32ul, "cmdline" / GreedyBytes)
MB2BasicMeminfo = Struct("mem_lower" / Int32ul, "mem_upper" / Int32ul)


def mb2_tag(tag_type: int, body: bytes) -> bytes:
    """One info tag, padded to 8 bytes (size excludes the padding)."""
    raw: bytes = MB2Tag.build(dict(type=tag_type, size=8 + len(body), body=body))
    return raw + bytes(-len(raw) % 8)


def checksum_ok(*words: int) -> bool:
    return sum(words) & 0xFFFFFFFF == 0

