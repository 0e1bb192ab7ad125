"""formats/efi.py and the setup_data chain of formats/bootparams.py: symmetry, sizes and offsets from
zero-page.rst / bootparam.h / the UEFI spec."""

import struct

import pytest

from kexloader.formats import bootparams as bp
from kexloader.formats import efi as fe


def roundtrip(fmt, data: bytes, size: int):
    obj = fmt.parse(data)
    assert fmt.build(obj) == data
    assert fmt.sizeof() == size
    return obj


def test_efi_info_offsets_match_zero_page_rst():
    raw = struct.pack("<4sIIIIIII", b"EL64", 0x7F9EC018, 48, 1, 0x7FB6D000, 6528, 0x1, 0x2)
    ei = roundtrip(fe.EfiInfo, raw, 0x20)
    assert (ei.efi_loader_signature, ei.efi_systab, ei.efi_memdesc_size, ei.efi_memdesc_version) == (b"EL64", 0x7F9EC018,
                                                                                                      48, 1)
    assert (ei.efi_memmap, ei.efi_memmap_size, ei.efi_systab_hi, ei.efi_memmap_hi) == (0x7FB6D000, 6528, 1, 2)
    assert bp.OFFSETS["efi_info"] == 0x1C0


def test_memory_descriptor_is_40_bytes_and_padded_to_the_stride():
    d = dict(type=6, phys_addr=0x7FF50000, virt_addr=0xFFFFFFFEFFF50000, num_pages=32, attribute=(1 << 63) | 0xF)
    raw = fe.build_memmap([d, dict(d, type=5, phys_addr=0x7F9ED000)], 48)
    assert len(raw) == 96 and raw[40:48] == bytes(8)
    assert struct.unpack_from("<IIQQQQ", raw, 0) == (6, 0, 0x7FF50000, 0xFFFFFFFEFFF50000, 32, (1 << 63) | 0xF)
    parsed = fe.parse_memmap(raw, 48)
    assert [p.type for p in parsed] == [6, 5] and parsed[1].phys_addr == 0x7F9ED000
    assert fe.parse_memmap(fe.build_memmap([d], 40), 40)[0].virt_addr == 0xFFFFFFFEFFF50000
    roundtrip(fe.MemoryDescriptor, raw[:40], 40)


def test_memory_descriptor_stride_below_the_struct_is_refused():
    with pytest.raises(ValueError, match="smaller than 40"):
        fe.build_memmap([], 32)
    with pytest.raises(ValueError, match="smaller than 40"):
        fe.parse_memmap(b"", 24)


def test_efi_setup_data_is_twelve_u64():
    raw = struct.pack("<12Q", 0x7F91C818, 0x7F9ECB98, 0x7F9ECC98, 0x7F918000, *range(8))
    sd = roundtrip(fe.EfiSetupData, raw, 96)
    assert (sd.fw_vendor, sd.runtime, sd.tables, sd.smbios) == (0x7F91C818, 0x7F9ECB98, 0x7F9ECC98, 0x7F918000)


def test_setup_data_header_and_chain_roundtrip():
    roundtrip(bp.SetupDataHeader, struct.pack("<QII", 0x1234000, 9, 32), 16)
    records = [(bp.SETUP_RNG_SEED, b"r" * 32), (bp.SETUP_E820_EXT, b"e" * 60), (bp.SETUP_EFI, b"f" * 96)]
    base = 0x7FF4D000
    blob = bp.build_setup_chain(records, base)
    # first record as kexec-tools and the old RNG-only segment wrote it: header then the seed, nothing before
    assert blob[:48] == struct.pack("<QII", base + 48, 9, 32) + b"r" * 32
    mem = {base: blob}

    def read(addr, size):
        off = addr - base
        return blob[off:off + size] if 0 <= off < len(blob) else None

    chain = bp.parse_setup_chain(read, base)
    assert [(t, p) for _, t, p in chain] == records
    assert all(addr % 8 == 0 for addr, _, _ in chain)
    assert chain[1][0] == base + 48 and chain[2][0] == base + 48 + 80  # 16 + 60 rounded up to 8
    assert mem


def test_single_record_chain_is_the_old_rng_segment():
    seed = bytes(range(32))
    assert bp.build_setup_chain([(bp.SETUP_RNG_SEED, seed)], 0x5000) == struct.pack("<QII", 0, 9, 32) + seed


def test_setup_chain_parser_stops_on_loops_and_holes():
    loop = struct.pack("<QII", 0x1000, 9, 0)
    assert len(bp.parse_setup_chain(lambda a, n: loop[:n] if a == 0x1000 else b"" if n == 0 else None, 0x1000)) == 1
    assert bp.parse_setup_chain(lambda a, n: None, 0x2000) == []
    short = struct.pack("<QII", 0, 9, 64) + b"x" * 8
    assert bp.parse_setup_chain(lambda a, n: short[a - 0x3000:a - 0x3000 + n], 0x3000) == []


def test_e820_records_are_packed_boot_e820_entries():
    raw = bp.e820_records([(0x100000, 0x1000, 1), (0x200000, 0x2000, 2)])
    assert len(raw) == 40
    assert struct.unpack_from("<QQI", raw, 20) == (0x200000, 0x2000, 2)
