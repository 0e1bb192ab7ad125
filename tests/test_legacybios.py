"""A multiboot kernel (Xen) on a UEFI machine (issue 11 item 6): the BIOS data area, EBDA, RSDP, XSDT and ACPI
table copies kexloader writes (kexloader/legacybios.py), checked byte by byte against the ACPI and BDA layouts
with `struct`, plus the EFI facts that feed them (/sys/firmware/acpi/tables) and their snapshot form.
"""

import dataclasses
import json
import struct
from pathlib import Path

import pytest

from kexloader import api, efi, legacybios, system
from kexloader.errors import SystemFactsError, UnsupportedImageError
from kexloader.formats import multiboot as mb
from kexloader.model import E820_RAM, E820_RESERVED, LoadRequest, MemRegion, Module, Range

ROOT = Path(__file__).resolve().parent.parent
OVMF = system.load_snapshot(ROOT / "fixtures/snapshots/ovmf-2g-kdump.json")
BIOS = system.load_snapshot(ROOT / "fixtures/snapshots/qemu-debian12-kdump-384m.json")


def table(sig: bytes, length: int, fill: int = 0) -> bytes:
    """An ACPI table: header (signature, length, revision 1, checksum) and a body; sums to 0 mod 256."""
    raw = bytearray(sig + struct.pack("<IB", length, 1) + bytes([0]) + b"BOCHS BXPC    " + bytes(length - 24))
    raw[24:] = bytes([fill]) * (length - 24)
    raw[9] = -sum(raw) & 0xFF
    return bytes(raw)


TABLES = (("APIC", table(b"APIC", 0x80, 1)), ("FACP", table(b"FACP", 0x74, 2)), ("HPET", table(b"HPET", 0x38, 3)))
OVMF_ACPI = dataclasses.replace(OVMF, efi=dataclasses.replace(OVMF.efi, acpi_tables=TABLES))


def xen_request(cmdline="console=com1"):
    """A tiny multiboot 2 image is enough: the plan does not look inside Xen."""
    data = (ROOT / "fixtures/multiboot/tiny-mb12.elf")
    if not data.exists():
        pytest.skip(f"{data} missing")
    return LoadRequest(kernel=data.read_bytes(), kernel_name="xen", cmdline=cmdline,
                       modules=(Module("vmlinuz", b"k" * 5000, "vmlinuz console=hvc0"),))


def segment(p, role):
    (s,) = [s for s in p.segments if s.role == role]
    return s


def read(p, addr, size):
    for s in p.segments:
        if s.mem <= addr and addr + size <= s.mem + s.memsz:
            data = bytes(s.data) + bytes(s.memsz - s.bufsz)
            return data[addr - s.mem:addr - s.mem + size]
    raise AssertionError(f"{addr:#x} is in no segment")


def test_bios_data_area_puts_xens_trampoline_below_the_ebda():
    area = legacybios.build(OVMF_ACPI, 640)
    ebda_seg, base_kib = struct.unpack_from("<H", area.page0, 0x40E)[0], struct.unpack_from("<H", area.page0, 0x413)[0]
    assert (ebda_seg, base_kib) == (0x9FC0, 639)
    assert area.page0[:0x40E] == bytes(0x40E)  # the IVT stays zero: no-real-mode keeps Xen out of the BIOS
    # head.S trampoline_bios_setup: segment in [0x4000, 0xa000) is used; 64 KiB below it, 4 KiB aligned
    trampoline = ((ebda_seg - (0x10000 >> 4)) & ~0xFF) << 4
    assert trampoline == 0x8F000 and trampoline + 0x10000 <= area.ebda


def test_rsdp_and_xsdt_are_valid_acpi_and_point_at_the_copies():
    base = 0x7FE41000
    blob, xsdt = legacybios.build_acpi_blob(TABLES, base)
    assert xsdt == base
    sig, length, rev, _csum = struct.unpack_from("<4sIBB", blob)
    assert (sig, length, rev) == (b"XSDT", 36 + 8 * len(TABLES), 1) and sum(blob[:length]) & 0xFF == 0
    addrs = struct.unpack_from(f"<{len(TABLES)}Q", blob, 36)
    for (name, data), addr in zip(TABLES, addrs):
        assert addr % 16 == 0 and blob[addr - base:addr - base + len(data)] == data, name
    rsdp = legacybios.build_rsdp(xsdt)
    assert len(rsdp) == 36 and rsdp[:8] == b"RSD PTR " and rsdp[15] == 2
    assert sum(rsdp[:20]) & 0xFF == 0 and sum(rsdp) & 0xFF == 0  # both checksums (ACPI 6.5 5.2.5.3)
    assert struct.unpack_from("<IIQ", rsdp, 16) == (0, 36, xsdt)


def test_plan_on_a_uefi_machine_writes_page0_the_ebda_and_the_acpi_copies():
    p = api.make_plan(xen_request(), OVMF_ACPI)
    bda, ebda, acpi = segment(p, "bios-data"), segment(p, "ebda"), segment(p, "acpi")
    assert (bda.mem, bda.memsz, ebda.mem, ebda.memsz) == (0, 0x1000, 0x9F000, 0x1000)
    assert read(p, 0x40E, 2) == b"\xc0\x9f" and read(p, 0x413, 2) == struct.pack("<H", 639)
    rsdp = read(p, 0x9FC10, 36)
    xsdt = struct.unpack_from("<Q", rsdp, 24)[0]
    assert rsdp[:8] == b"RSD PTR " and acpi.mem == xsdt
    assert read(p, xsdt, 4) == b"XSDT"
    # the multiboot 2 memory map: the EBDA reserved, the copies ACPI (Xen and dom0 leave both alone)
    info = read(p, p.multiboot.info, 2048)
    tags, off = {}, 8
    while off < struct.unpack_from("<I", info)[0]:
        kind, size = struct.unpack_from("<II", info, off)
        tags.setdefault(kind, info[off + 8:off + size])
        off += (size + 7) & ~7
    entries = [struct.unpack_from("<QQI", tags[mb.MB2_TAG_MMAP], 8 + 24 * i)
               for i in range((len(tags[mb.MB2_TAG_MMAP]) - 8) // 24)]
    assert [(0, 0x1000, 2), (0x1000, 0x9EC00, 1), (0x9FC00, 0x400, 2)] == entries[:3]
    assert any(t == 3 and s <= acpi.mem and acpi.mem + acpi.memsz <= s + n for s, n, t in entries)
    assert struct.unpack_from("<II", tags[mb.MB2_TAG_BASIC_MEMINFO])[0] == 639
    cmdline = tags[mb.MB2_TAG_CMDLINE].rstrip(b"\0").decode()
    assert cmdline.split()[-1] == "no-real-mode"
    assert any("no-real-mode' added" in n for n in p.notes) and any("XSDT over copies of APIC, FACP, HPET" in n
                                                                    for n in p.notes)


def test_no_real_mode_is_not_added_twice():
    p = api.make_plan(xen_request("console=com1 no-real-mode"), OVMF_ACPI)
    assert not any("added" in n for n in p.notes)


def test_the_ovmf_snapshot_has_its_acpi_tables():
    """Captured in the OVMF guest (tools/mk_uefi_snapshots.py --capture): QEMU's static tables, no DSDT, FACS."""
    assert [name for name, _ in OVMF.efi.acpi_tables] == ["APIC", "FACP", "HPET", "WAET"]
    p = api.make_plan(xen_request(), OVMF)
    assert any("XSDT over copies of APIC, FACP, HPET, WAET" in n for n in p.notes)


def test_without_acpi_tables_the_plan_says_xen_finds_no_acpi():
    no_tables = dataclasses.replace(OVMF, efi=dataclasses.replace(OVMF.efi, acpi_tables=None))
    p = api.make_plan(xen_request(), no_tables)
    assert "acpi" not in {s.role for s in p.segments} and any("Xen will find no ACPI" in n for n in p.notes)
    assert read(p, 0x9FC10, 8) == bytes(8)


def test_a_bios_machine_gets_none_of_it():
    p = api.make_plan(xen_request(), BIOS)
    assert not {"bios-data", "ebda", "acpi"} & {s.role for s in p.segments}
    assert not any("UEFI machine" in n for n in p.notes)


def test_no_conventional_memory_is_one_error():
    memmap = tuple(m if m.range.start else MemRegion(Range(0x1000, 0x9F000), E820_RESERVED) for m in OVMF_ACPI.memmap)
    facts = dataclasses.replace(OVMF_ACPI, memmap=memmap)
    with pytest.raises(UnsupportedImageError, match="BIOS data area in page 0") as e:
        api.make_plan(xen_request(), facts)
    assert "\n" not in str(e.value)


def test_memmap_for_splits_ram():
    area = legacybios.build(OVMF_ACPI, 640)
    memmap = [MemRegion(Range(0, 0xA0000), E820_RAM), MemRegion(Range(0x100000, 0x1000000), E820_RAM)]
    got = legacybios.memmap_for(memmap, area, Range(0x200000, 0x1000))
    assert [(m.range.start, m.range.end, m.type) for m in got] == [
        (0, 0x1000, 2), (0x1000, 0x9FC00, 1), (0x9FC00, 0xA0000, 2), (0x100000, 0x200000, 1), (0x200000, 0x201000, 3),
        (0x201000, 0x1100000, 1)]


# -------------------------------------------------------------------------------- facts and snapshots

def test_read_acpi_tables_skips_dsdt_facs_directories_and_bad_lengths(tmp_path):
    base = tmp_path / "sys/firmware/acpi/tables"
    (base / "dynamic").mkdir(parents=True)
    (base / "data").mkdir()
    for name, data in TABLES + (("DSDT", table(b"DSDT", 0x40)), ("FACS", b"FACS" + bytes(60))):
        (base / name).write_bytes(data)
    (base / "SSDT1").write_bytes(table(b"SSDT", 0x30)[:0x2F])  # truncated: length field says 0x30
    assert efi.read_acpi_tables(tmp_path) == TABLES
    assert efi.read_acpi_tables(tmp_path / "nothing") is None


def test_snapshot_keeps_acpi_tables():
    doc = json.loads(json.dumps(system.facts_to_json(OVMF_ACPI)))
    assert system.facts_from_json(doc).efi.acpi_tables == TABLES
    doc["efi"]["acpi_tables"] = [["APIC", 5]]
    with pytest.raises(SystemFactsError, match="not a kexloader snapshot"):
        system.facts_from_json(doc)


def test_modules_go_low_on_a_uefi_machine_so_xens_move_of_dom0_does_not_overlap():
    """Xen moves the dom0 kernel to the top of the highest 2 MiB-aligned RAM run through two mappings whose
    order makes memmove copy backwards: an overlapping downward move corrupts the kernel (Xen 4.20, OVMF)."""
    uefi = [s for s in api.make_plan(xen_request(), OVMF_ACPI).segments if s.role == "module"]
    bios = [s for s in api.make_plan(xen_request(), BIOS).segments if s.role == "module"]
    assert uefi[0].mem == 16 << 20
    assert bios[0].mem > 1 << 30  # top-down there, as before
