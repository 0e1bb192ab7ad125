"""formats/bzimage.py and formats/bootparams.py: symmetry, offsets from boot.rst, bad magics."""

from pathlib import Path

import pytest
from construct import ConstError

from kexloader.formats import bootparams as bp
from kexloader.formats import bzimage as bz

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bzimage"
DEBIAN_HEAD = (FIXTURES / "debian-6.1.0-56-amd64.head4096").read_bytes()


def roundtrip(fmt, data: bytes, size: int):
    obj = fmt.parse(data)
    assert fmt.build(obj) == data
    assert fmt.sizeof() == size
    return obj


def header_of(image: bytes) -> bytes:
    return image[bz.SETUP_HEADER_OFFSET:bz.SETUP_HEADER_OFFSET + bz.SETUP_HEADER_SIZE]


def test_debian_header_roundtrips_with_known_values():
    hdr = roundtrip(bz.SetupHeader, header_of(DEBIAN_HEAD), 0x7B)
    assert hdr.version == 0x020F
    assert hdr.xloadflags & bz.XLF_KERNEL_64 and hdr.xloadflags & bz.XLF_CAN_BE_LOADED_ABOVE_4G
    assert hdr.kernel_alignment == 0x200000 and hdr.pref_address == 0x1000000
    assert hdr.cmdline_size == 2047 and hdr.relocatable_kernel == 1
    assert bz.header_end(hdr.jump) == 0x26C  # 2.15 header ends after kernel_info_offset


@pytest.mark.parametrize("field, offset, size", [
    ("setup_sects", 0x1F1, 1), ("syssize", 0x1F4, 4), ("boot_flag", 0x1FE, 2), ("version", 0x206, 2),
    ("type_of_loader", 0x210, 1), ("loadflags", 0x211, 1), ("code32_start", 0x214, 4),
    ("ramdisk_image", 0x218, 4), ("ramdisk_size", 0x21C, 4), ("cmd_line_ptr", 0x228, 4),
    ("initrd_addr_max", 0x22C, 4), ("kernel_alignment", 0x230, 4), ("relocatable_kernel", 0x234, 1),
    ("xloadflags", 0x236, 2), ("cmdline_size", 0x238, 4), ("hardware_subarch", 0x23C, 4),
    ("payload_offset", 0x248, 4), ("setup_data", 0x250, 8), ("pref_address", 0x258, 8),
    ("init_size", 0x260, 4), ("kernel_info_offset", 0x268, 4),
])
def test_setup_header_offsets_match_boot_rst(field, offset, size):
    image = bytearray(DEBIAN_HEAD)
    marker = (0xA5 if size == 1 else 0x5AA5 if size == 2 else 0x12345678 if size == 4 else 0x1122334455667788)
    if field == "boot_flag":
        marker = 0xAA55
    image[offset:offset + size] = marker.to_bytes(size, "little")
    assert bz.SetupHeader.parse(header_of(bytes(image)))[field] == marker


@pytest.mark.parametrize("offset", [0x1FE, 0x1FF, 0x202, 0x205])
def test_bad_magic_is_a_const_error(offset):
    image = bytearray(DEBIAN_HEAD)
    image[offset] ^= 0xFF
    with pytest.raises(ConstError):
        bz.SetupHeader.parse(header_of(bytes(image)))


def test_setup_size_zero_means_four():
    assert bz.setup_size(0) == bz.setup_size(4) == 5 * 512
    assert bz.setup_size(27) == 28 * 512


def test_boot_params_roundtrip_and_offsets():
    page = bytearray(bp.BOOT_PARAMS_SIZE)
    page[0x1F1:0x26C] = DEBIAN_HEAD[0x1F1:0x26C]
    page[0x70:0x78] = (0xF5A40).to_bytes(8, "little")
    page[0xC8:0xCC] = (0x1).to_bytes(4, "little")
    page[0x1E8] = 2
    page[0x2D0:0x2D0 + 40] = (0).to_bytes(8, "little") + (0x9FC00).to_bytes(8, "little") + (1).to_bytes(4, "little") \
        + (0x100000).to_bytes(8, "little") + (0x7FF00000).to_bytes(8, "little") + (1).to_bytes(4, "little")
    params = roundtrip(bp.BootParams, bytes(page), 0x1000)
    assert params.acpi_rsdp_addr == 0xF5A40
    assert params.ext_cmd_line_ptr == 1
    assert params.e820_entries == 2
    assert params.e820_table[1].addr == 0x100000 and params.e820_table[1].size == 0x7FF00000
    assert params.hdr.version == 0x020F


def test_e820_entry_is_packed_20_bytes():
    roundtrip(bp.E820Entry, bytes(range(20)), 20)
