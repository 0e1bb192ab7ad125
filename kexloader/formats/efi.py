"""EFI state a kexec'd Linux kernel reads: `efi_info` in the zero page, the EFI memory map it points at,
and the payload of a `SETUP_EFI` setup_data.

Sources: Documentation/arch/x86/zero-page.rst (efi_info at 0x1c0), arch/x86/include/uapi/asm/bootparam.h
(`struct efi_info`), the UEFI specification (EFI_MEMORY_DESCRIPTOR, "GetMemoryMap()": descriptors are
`DescriptorSize` bytes apart, which may exceed the structure), arch/x86/include/asm/efi.h
(`struct efi_setup_data`, the kexec ABI).
"""

from collections.abc import Iterable, Mapping

from construct import Array, Bytes, Container, Int32ul, Int64ul, Struct

EFI_INFO_SIZE = 0x20
EFI64_LOADER_SIGNATURE = b"EL64"
EFI32_LOADER_SIGNATURE = b"EL32"

EfiInfo = Struct(  # struct efi_info, boot_params 0x1c0
    "efi_loader_signature" / Bytes(4),  # 0x00 "EL64" (64-bit firmware) or "EL32"
    "efi_systab" / Int32ul,  # 0x04 physical address of the EFI system table, bits 31..0
    "efi_memdesc_size" / Int32ul,  # 0x08 stride of the memory map
    "efi_memdesc_version" / Int32ul,  # 0x0c 1 (EFI_MEMORY_DESCRIPTOR_VERSION)
    "efi_memmap" / Int32ul,  # 0x10 physical address of the memory map, bits 31..0
    "efi_memmap_size" / Int32ul,  # 0x14 bytes
    "efi_systab_hi" / Int32ul,  # 0x18
    "efi_memmap_hi" / Int32ul,  # 0x1c
)
assert EfiInfo.sizeof() == EFI_INFO_SIZE

# EFI_MEMORY_DESCRIPTOR (UEFI spec, EFI_BOOT_SERVICES.GetMemoryMap()); 40 bytes, padded to DescriptorSize
MEMORY_DESCRIPTOR_SIZE = 40
MEMORY_DESCRIPTOR_VERSION = 1
EFI_PAGE_SIZE = 4096
MemoryDescriptor = Struct(
    "type" / Int32ul,
    "pad" / Int32ul,
    "phys_addr" / Int64ul,
    "virt_addr" / Int64ul,
    "num_pages" / Int64ul,
    "attribute" / Int64ul,
)
assert MemoryDescriptor.sizeof() == MEMORY_DESCRIPTOR_SIZE

# EFI_MEMORY_TYPE values (UEFI spec)
MEMORY_TYPES = {
    0: "Reserved", 1: "LoaderCode", 2: "LoaderData", 3: "BootServicesCode", 4: "BootServicesData",
    5: "RuntimeServicesCode", 6: "RuntimeServicesData", 7: "Conventional", 8: "Unusable",
    9: "ACPIReclaim", 10: "ACPINVS", 11: "MMIO", 12: "MMIOPortSpace", 13: "PalCode", 14: "Persistent",
    15: "Unaccepted",
}
RUNTIME_SERVICES_CODE = 5
RUNTIME_SERVICES_DATA = 6
EFI_MEMORY_RUNTIME = 1 << 63  # attribute bit: the region is needed by runtime services

EFI_SETUP_DATA_SIZE = 96  # 12 u64: 4 named + reserved[8] (Linux arch/x86/include/asm/efi.h)
EfiSetupData = Struct(  # struct efi_setup_data, the payload of SETUP_EFI (arch/x86/include/asm/efi.h)
    "fw_vendor" / Int64ul,  # physical address of the firmware vendor string
    "runtime" / Int64ul,  # "__unused" in current kernels (older ones read the runtime services table here)
    "tables" / Int64ul,  # physical address of the configuration table array
    "smbios" / Int64ul,  # physical address of the SMBIOS entry point (SMBIOS_TABLE_GUID), 0 if none
    "reserved" / Array(8, Int64ul),
)
assert EfiSetupData.sizeof() == EFI_SETUP_DATA_SIZE


def build_memmap(descriptors: Iterable[Mapping[str, int]], desc_size: int) -> bytes:
    """Descriptors (dicts or Containers with MemoryDescriptor's fields) `desc_size` bytes apart, zero padded."""
    if desc_size < MEMORY_DESCRIPTOR_SIZE:
        raise ValueError(f"EFI memory descriptor size {desc_size} is smaller than {MEMORY_DESCRIPTOR_SIZE}")
    pad = bytes(desc_size - MEMORY_DESCRIPTOR_SIZE)
    return b"".join(MemoryDescriptor.build(dict(d, pad=0)) + pad for d in descriptors)


def parse_memmap(blob: bytes, desc_size: int) -> list[Container]:
    """The descriptors of an EFI memory map `desc_size` bytes apart (a trailing partial descriptor is ignored)."""
    if desc_size < MEMORY_DESCRIPTOR_SIZE:
        raise ValueError(f"EFI memory descriptor size {desc_size} is smaller than {MEMORY_DESCRIPTOR_SIZE}")
    return [MemoryDescriptor.parse(blob[i:i + MEMORY_DESCRIPTOR_SIZE])
            for i in range(0, len(blob) - MEMORY_DESCRIPTOR_SIZE + 1, desc_size)]


# EFI_SYSTEM_TABLE of a 64-bit firmware (UEFI spec, "EFI System Table"): the header, then the fields a kexec'd
# kernel's SETUP_EFI and efi_info come from. The spec puts the table in EfiRuntimeServicesData memory.
SYSTEM_TABLE_SIGNATURE = 0x5453595320494249  # "IBI SYST"
SYSTEM_TABLE_SIZE = 120
SystemTable64 = Struct(
    "signature" / Int64ul,
    "revision" / Int32ul,
    "header_size" / Int32ul,
    "crc32" / Int32ul,
    "reserved" / Int32ul,
    "fw_vendor" / Int64ul,  # 24: CHAR16 *FirmwareVendor
    "fw_revision" / Int32ul,
    "pad" / Int32ul,
    "con_in_handle" / Int64ul,
    "con_in" / Int64ul,
    "con_out_handle" / Int64ul,
    "con_out" / Int64ul,
    "stderr_handle" / Int64ul,
    "stderr" / Int64ul,
    "runtime" / Int64ul,  # 88: EFI_RUNTIME_SERVICES *
    "boot" / Int64ul,
    "nr_tables" / Int64ul,  # 104: NumberOfTableEntries
    "tables" / Int64ul,  # 112: EFI_CONFIGURATION_TABLE *
)
assert SystemTable64.sizeof() == SYSTEM_TABLE_SIZE


def system_table_crc_ok(table: bytes) -> bool:
    """The header's CRC32 (over HeaderSize bytes with the CRC field zero, as the spec computes it) matches."""
    import zlib
    size = int.from_bytes(table[12:16], "little")
    if not SYSTEM_TABLE_SIZE <= size <= len(table):
        return False
    body = table[:16] + bytes(4) + table[20:size]
    return zlib.crc32(body) == int.from_bytes(table[16:20], "little")
