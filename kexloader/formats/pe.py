"""PE/COFF headers as far as a unified kernel image (UKI) needs them.

Sources: Microsoft's "PE Format" specification (MS-DOS stub, "Signature (Image Only)", "COFF File Header
(Object and Image)", "Optional Header (Image Only)", "Section Table (Section Headers)"); the UAPI group's
Unified Kernel Image specification (the section names: .linux, .osrel, .cmdline, .initrd, .ucode, .splash,
.dtb, .uname, .sbat, .pcrsig, .pcrpkey, .profile).

Only the fields a loader reads are declared; the optional header is parsed up to `SizeOfHeaders` and the
rest is skipped by `SizeOfOptionalHeader`, which the caller uses to find the section table.
"""

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

DOS_MAGIC = b"MZ"
PE_MAGIC = b"PE\0\0"
E_LFANEW_OFFSET = 0x3C  # where the MS-DOS header keeps the file offset of the PE signature
IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_I386 = 0x014C
PE32_MAGIC = 0x10B
PE32PLUS_MAGIC = 0x20B
SECTION_HEADER_SIZE = 40
SECTION_NAME_SIZE = 8

DosHeader = Struct(  # IMAGE_DOS_HEADER: only the magic and e_lfanew matter to a PE loader
    "e_magic" / Const(DOS_MAGIC),
    Padding(E_LFANEW_OFFSET - 2),
    "e_lfanew" / Int32ul,  # 0x3c
)
assert DosHeader.sizeof() == 0x40

CoffHeader = Struct(  # the PE signature and IMAGE_FILE_HEADER, at e_lfanew
    "Signature" / Const(PE_MAGIC),
    "Machine" / Int16ul,
    "NumberOfSections" / Int16ul,
    "TimeDateStamp" / Int32ul,
    "PointerToSymbolTable" / Int32ul,
    "NumberOfSymbols" / Int32ul,
    "SizeOfOptionalHeader" / Int16ul,  # the section table follows the optional header
    "Characteristics" / Int16ul,
)
COFF_HEADER_SIZE = 24
assert CoffHeader.sizeof() == COFF_HEADER_SIZE

OptionalHeaderStart = Struct(  # the fields both PE32 and PE32+ share, up to Subsystem
    "Magic" / Int16ul,  # 0x10b PE32, 0x20b PE32+
    "MajorLinkerVersion" / Int8ul,
    "MinorLinkerVersion" / Int8ul,
    "SizeOfCode" / Int32ul,
    "SizeOfInitializedData" / Int32ul,
    "SizeOfUninitializedData" / Int32ul,
    "AddressOfEntryPoint" / Int32ul,
    "BaseOfCode" / Int32ul,
    "ImageBase" / Int64ul,  # PE32: BaseOfData and a 32-bit ImageBase; kept raw, a loader of sections needs neither
    "SectionAlignment" / Int32ul,
    "FileAlignment" / Int32ul,
    "MajorOperatingSystemVersion" / Int16ul,
    "MinorOperatingSystemVersion" / Int16ul,
    "MajorImageVersion" / Int16ul,
    "MinorImageVersion" / Int16ul,
    "MajorSubsystemVersion" / Int16ul,
    "MinorSubsystemVersion" / Int16ul,
    "Win32VersionValue" / Int32ul,
    "SizeOfImage" / Int32ul,
    "SizeOfHeaders" / Int32ul,
    "CheckSum" / Int32ul,
    "Subsystem" / Int16ul,  # 10 = EFI application
    "DllCharacteristics" / Int16ul,
)
OPTIONAL_HEADER_START_SIZE = 0x48
assert OptionalHeaderStart.sizeof() == OPTIONAL_HEADER_START_SIZE

SectionHeader = Struct(  # IMAGE_SECTION_HEADER, 40 bytes each, NumberOfSections of them
    "Name" / Bytes(SECTION_NAME_SIZE),  # NUL-padded; an image's names are at most 8 bytes (no string table)
    "VirtualSize" / Int32ul,
    "VirtualAddress" / Int32ul,
    "SizeOfRawData" / Int32ul,
    "PointerToRawData" / Int32ul,
    "PointerToRelocations" / Int32ul,
    "PointerToLinenumbers" / Int32ul,
    "NumberOfRelocations" / Int16ul,
    "NumberOfLinenumbers" / Int16ul,
    "Characteristics" / Int32ul,
)
assert SectionHeader.sizeof() == SECTION_HEADER_SIZE

# UKI sections (UAPI "Unified Kernel Image" specification; .ucode since systemd 256, .profile since 257)
UKI_SECTIONS = (".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".dtbauto", ".hwids",
                ".efifw", ".uname", ".sbat", ".pcrsig", ".pcrpkey", ".profile")


def section_name(raw: bytes) -> str:
    """The section name as text: up to the first NUL of the 8 bytes (latin-1: never fails)."""
    return raw.split(b"\0", 1)[0].decode("latin-1")
