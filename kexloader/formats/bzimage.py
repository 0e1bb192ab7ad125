"""The x86 boot protocol's setup header (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header").

The header sits at file offset 0x1f1 of a bzImage and at the same offset in `struct boot_params`.
Fields newer than the image's `version` hold whatever the image has there; reading them according
to `version` is the loader's job, not this module's.
"""

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Struct

SETUP_HEADER_OFFSET = 0x1F1
SETUP_HEADER_SIZE = 0x7B  # up to kernel_info_offset (protocol 2.15), like linux-loader's setup_header
BOOT_FLAG = 0xAA55
HEADER_MAGIC = b"HdrS"
KERNEL_64_ENTRY_OFFSET = 0x200  # startup_64 = protected-mode load address + 0x200 (boot.rst, 64-bit protocol)

# loadflags (0x211)
LOADED_HIGH = 0x01
KASLR_FLAG = 0x02
QUIET_FLAG = 0x20
KEEP_SEGMENTS = 0x40
CAN_USE_HEAP = 0x80

# xloadflags (0x236), protocol 2.12+. Kept as a plain int: construct's FlagsEnum drops unknown bits.
XLF_KERNEL_64 = 0x01
XLF_CAN_BE_LOADED_ABOVE_4G = 0x02
XLF_EFI_HANDOVER_32 = 0x04
XLF_EFI_HANDOVER_64 = 0x08
XLF_EFI_KEXEC = 0x10
XLF_5LEVEL = 0x20
XLF_5LEVEL_ENABLED = 0x40

SetupHeader = Struct(
    "setup_sects" / Int8ul,  # 0x1f1; 0 means 4
    "root_flags" / Int16ul,
    "syssize" / Int32ul,  # 0x1f4, 16-byte paragraphs (2.04+)
    "ram_size" / Int16ul,
    "vid_mode" / Int16ul,
    "root_dev" / Int16ul,
    "boot_flag" / Const(BOOT_FLAG, Int16ul),  # 0x1fe
    "jump" / Int16ul,  # 0x200; header ends at 0x202 + high byte
    "header" / Const(HEADER_MAGIC),  # 0x202
    "version" / Int16ul,  # 0x206
    "realmode_swtch" / Int32ul,
    "start_sys_seg" / Int16ul,
    "kernel_version" / Int16ul,  # 0x20e
    "type_of_loader" / Int8ul,  # 0x210
    "loadflags" / Int8ul,  # 0x211
    "setup_move_size" / Int16ul,
    "code32_start" / Int32ul,  # 0x214
    "ramdisk_image" / Int32ul,  # 0x218
    "ramdisk_size" / Int32ul,  # 0x21c
    "bootsect_kludge" / Int32ul,
    "heap_end_ptr" / Int16ul,  # 0x224
    "ext_loader_ver" / Int8ul,
    "ext_loader_type" / Int8ul,
    "cmd_line_ptr" / Int32ul,  # 0x228
    "initrd_addr_max" / Int32ul,  # 0x22c
    "kernel_alignment" / Int32ul,  # 0x230
    "relocatable_kernel" / Int8ul,  # 0x234
    "min_alignment" / Int8ul,
    "xloadflags" / Int16ul,  # 0x236
    "cmdline_size" / Int32ul,  # 0x238
    "hardware_subarch" / Int32ul,  # 0x23c
    "hardware_subarch_data" / Int64ul,
    "payload_offset" / Int32ul,  # 0x248
    "payload_length" / Int32ul,
    "setup_data" / Int64ul,  # 0x250
    "pref_address" / Int64ul,  # 0x258
    "init_size" / Int32ul,  # 0x260
    "handover_offset" / Int32ul,
    "kernel_info_offset" / Int32ul,  # 0x268
)
assert SetupHeader.sizeof() == SETUP_HEADER_SIZE

# The first sector up to the header; only boot_flag matters to a loader, the rest is the legacy boot sector.
BootSector = Struct("code" / Bytes(SETUP_HEADER_OFFSET))


def setup_size(setup_sects: int) -> int:
    """Bytes of real-mode code before the protected-mode kernel: (setup_sects + 1) sectors, 0 meaning 4."""
    return ((setup_sects or 4) + 1) * 512


HEADER_END_MIN = 0x264  # protocol 2.10+ headers reach at least the end of init_size (0x260)


def header_end(jump: int) -> int:
    """End of the header as the image declares it: 0x202 + the jump's 8-bit displacement (boot.rst)."""
    return 0x202 + (jump >> 8)


KERNEL_VERSION_FIELD = 0x20E  # kernel_version (protocol 2.00+): a pointer to the version string, less 0x200


def kernel_version_string(data: bytes | bytearray | memoryview, limit: int = 256) -> str | None:
    """The NUL-terminated text kernel_version points at (file offset kernel_version + 0x200), e.g. "6.1.0-56-amd64
    (debian-kernel@lists.debian.org) #1 ..."; None when the field is 0 or the text is empty or outside the file.
    boot.rst, "Details of Header Fields", kernel_version. The caller checks the protocol version."""
    if len(data) < KERNEL_VERSION_FIELD + 2:
        return None
    ptr = int.from_bytes(bytes(data[KERNEL_VERSION_FIELD:KERNEL_VERSION_FIELD + 2]), "little")
    start = ptr + 0x200
    if not ptr or start >= len(data):
        return None
    text = bytes(data[start:start + limit]).split(b"\0", 1)[0].decode("ascii", "replace").strip()
    return text or None
