"""ELF boot notes: the parameter block a loader hands an ELF image in the "ELF boot" convention
(E. Biederman's elf_boot.h), which kexec-tools uses for --args-elf: rdi points at an Elf_Bhdr followed
by notes with n_namesz 0 for the standard types. b_checksum is the IP checksum of the whole block.
"""

import struct

from construct import Int16ul, Int32ul, Struct

ELF_BHDR_MAGIC = 0x0E1FB007
EBN_FIRMWARE_TYPE = 1
EBN_BOOTLOADER_NAME = 2
EBN_BOOTLOADER_VERSION = 3
EBN_COMMAND_LINE = 4
EBN_LOADED_IMAGE = 6

ElfBhdr = Struct("b_signature" / Int32ul, "b_size" / Int32ul, "b_checksum" / Int16ul, "b_records" / Int16ul)
assert ElfBhdr.sizeof() == 12


def ip_checksum(data: bytes) -> int:
    """RFC 1071: ones' complement of the ones' complement sum of 16-bit words (little-endian, odd byte padded)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"<{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_boot_notes(records: list[tuple[int, bytes]]) -> bytes:
    """The block for `records` [(type, desc)], each desc padded to 4 bytes, with its checksum filled in."""
    body = b"".join(struct.pack("<III", 0, len(desc), kind) + desc + bytes(-len(desc) % 4) for kind, desc in records)
    size = ElfBhdr.sizeof() + len(body)
    unsummed: bytes = ElfBhdr.build(dict(b_signature=ELF_BHDR_MAGIC, b_size=size, b_checksum=0, b_records=len(records)))
    checksum = ip_checksum(unsummed + body)
    header: bytes = ElfBhdr.build(dict(b_signature=ELF_BHDR_MAGIC, b_size=size, b_checksum=checksum,
                                       b_records=len(records)))
    return header + body
