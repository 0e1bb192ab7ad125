"""`struct boot_params`, the Linux "zero page" (arch/x86/include/uapi/asm/bootparam.h, zero-page.rst)."""

from collections.abc import Callable, Iterable, Sequence

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

# struct setup_data {u64 next; u32 type; u32 len; u8 data[len]} (bootparam.h, boot.rst "setup_data"): a chain of
# typed blobs from hdr.setup_data, each `next` the physical address of the following one, 0 at the end.
SETUP_NONE = 0
SETUP_E820_EXT = 1  # more boot_e820_entry records after the zero page's 128
SETUP_DTB = 2
SETUP_PCI = 3
SETUP_EFI = 4  # struct efi_setup_data (formats/efi.py)
SETUP_RNG_SEED = 9
SETUP_TYPES = {SETUP_NONE: "NONE", SETUP_E820_EXT: "E820_EXT", SETUP_DTB: "DTB", SETUP_PCI: "PCI", SETUP_EFI: "EFI",
               SETUP_RNG_SEED: "RNG_SEED"}
SETUP_DATA_HEADER_SIZE = 16
SETUP_DATA_ALIGN = 8  # each record starts 8-byte aligned inside a chain built by build_setup_chain

SetupDataHeader = Struct(
    "next" / Int64ul,
    "type" / Int32ul,
    "len" / Int32ul,
)
assert SetupDataHeader.sizeof() == SETUP_DATA_HEADER_SIZE


def build_setup_chain(records: Sequence[tuple[int, bytes]], base: int) -> bytes:
    """One buffer holding the chain of `records` ((type, payload) pairs, in chain order) when it is loaded at
    physical `base`: records 8-byte aligned, each `next` pointing at the following one, the last 0."""
    offsets: list[int] = []
    at = 0
    for _, payload in records:
        offsets.append(at)
        at += -(-(SETUP_DATA_HEADER_SIZE + len(payload)) // SETUP_DATA_ALIGN) * SETUP_DATA_ALIGN
    out = bytearray()
    for i, (kind, payload) in enumerate(records):
        out += bytes(offsets[i] - len(out))
        nxt = base + offsets[i + 1] if i + 1 < len(records) else 0
        out += SetupDataHeader.build(dict(next=nxt, type=kind, len=len(payload))) + payload
    return bytes(out)


def parse_setup_chain(read: Callable[[int, int], bytes | None], first: int,
                      limit: int = 64) -> list[tuple[int, int, bytes]]:
    """(address, type, payload) along a chain starting at `first`; `read(addr, size)` returns bytes or None
    when nothing is loaded there. Stops at next = 0, an unreadable record, a loop, or `limit` records."""
    out: list[tuple[int, int, bytes]] = []
    seen: set[int] = set()
    addr = first
    while addr and addr not in seen and len(out) < limit:
        seen.add(addr)
        head = read(addr, SETUP_DATA_HEADER_SIZE)
        if head is None or len(head) < SETUP_DATA_HEADER_SIZE:
            break
        h = SetupDataHeader.parse(head)
        payload = read(addr + SETUP_DATA_HEADER_SIZE, h.len)
        if payload is None or len(payload) < h.len:
            break
        out.append((addr, h.type, bytes(payload)))
        addr = h.next
    return out


def e820_records(entries: Iterable[tuple[int, int, int]]) -> bytes:
    """boot_e820_entry records (addr, size, type) packed back to back, as SETUP_E820_EXT carries them."""
    return b"".join(E820Entry.build(dict(addr=a, size=s, type=t)) for a, s, t in entries)
