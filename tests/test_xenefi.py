"""EFI for the Linux that an EFI-booted Xen starts (issue 11 item 5): the firmware's memory map walked through
Xen's XEN_FW_EFI_MEM_INFO, its system table found in runtime data, and the kexec hand-off they give a Linux
target planned from dom0.

The fake firmware below is shaped like Debian 12's OVMF under QEMU with 2 GiB (the runtime regions of
fixtures/snapshots/ovmf-2g-kdump.json); the fake Xen answers XEN_FW_EFI_MEM_INFO as xen/common/efi/runtime.c
does (the descriptor holding the address: its type, attribute, and the bytes from the address to its end), and
the system table is packed here with `struct` and `zlib`, not with kexloader/formats/efi.py.
"""

import dataclasses
import struct
import zlib
from pathlib import Path

import pytest

from kexloader import api, efiboot, snapshot, system, xenefi
from kexloader.model import (E820_ACPI, E820_RAM, E820_RESERVED, EfiFacts, EfiRuntimeRegion, LoadRequest, MemRegion,
                             Range)
from kexloader.formats import xen as xf

ROOT = Path(__file__).resolve().parent.parent
XEN = system.load_snapshot(ROOT / "fixtures/snapshots/xen-dom0-2g.json")
TINY = bytearray((ROOT / "fixtures/bzimage/tiny.bzImage").read_bytes())
struct.pack_into("<H", TINY, 0x236, 0x3 | 0x10)  # XLF_EFI_KEXEC
RT = (1 << 63) | 0xF  # EFI_MEMORY_RUNTIME | UC WC WT WB
MMIO_RT = (1 << 63) | 0x1
PAGE = 4096

# (type, start, pages, attribute): the firmware's EFI memory map, address order, no gaps below 2 GiB but the
# legacy hole
FIRMWARE = [
    (7, 0x0, 0xA0, 0xF),
    (7, 0x100000, 0x7EDA5, 0xF),  # conventional up to the first runtime data region
    (6, 0x7EEA5000, 0xC1, RT),
    (4, 0x7EF66000, 0x987, 0xF),  # boot services data: RAM for Xen
    (6, 0x7F8ED000, 0x100, RT),  # the system table lives here
    (5, 0x7F9ED000, 0x100, RT),
    (9, 0x7FAED000, 0x8E, 0xF),  # ACPI reclaim
    (7, 0x7FB7B000, 0x3D5, 0xF),
    (6, 0x7FF50000, 0x20, RT),
    (7, 0x7FF70000, 0x90, 0xF),
    (11, 0xFFC00000, 0x400, MMIO_RT),  # the flash, for variable writes
]
E820_OF_TYPE = {7: E820_RAM, 4: E820_RAM, 9: E820_ACPI}
SYSTAB, VENDOR, RUNTIME, CONFIG, N_TABLES = 0x7F9EC018, 0x7F91C818, 0x7F9ECB98, 0x7F9ECC98, 10


def e820_of(firmware) -> list[MemRegion]:
    """The machine map Xen makes of the firmware's (runtime and MMIO regions reserved), merged."""
    out: list[MemRegion] = []
    for kind, start, pages, _ in firmware:
        typ = E820_OF_TYPE.get(kind, E820_RESERVED)
        if out and out[-1].range.end == start and out[-1].type == typ:
            out[-1] = MemRegion(Range(out[-1].range.start, out[-1].range.size + pages * PAGE), typ)
        else:
            out.append(MemRegion(Range(start, pages * PAGE), typ))
    return out


def fake_mem_info(firmware, calls=None):
    def mem_info(addr):
        if calls is not None:
            calls.append(addr)
        for kind, start, pages, attr in firmware:
            if start <= addr < start + pages * PAGE:
                return kind, attr, start + pages * PAGE - addr
        return None
    return mem_info


def system_table(*, tables=CONFIG, count=N_TABLES, runtime=RUNTIME, vendor=VENDOR, crc_ok=True) -> bytes:
    body = bytearray(120)
    struct.pack_into("<QIIII", body, 0, 0x5453595320494249, (2 << 16) | 70, 120, 0, 0)
    struct.pack_into("<QI", body, 24, vendor, 0x10000)
    struct.pack_into("<QQQQ", body, 88, runtime, 0x7FF00000, count, tables)
    crc = zlib.crc32(bytes(body)) ^ (0 if crc_ok else 1)
    struct.pack_into("<I", body, 16, crc)
    return bytes(body)


def memory(tables: dict[int, bytes]):
    """read(addr, size) over the runtime data regions with `tables` written at their addresses."""
    regions = {start: bytearray(pages * PAGE) for kind, start, pages, _ in FIRMWARE if kind == 6}
    for at, data in tables.items():
        base = max(s for s in regions if s <= at)
        regions[base][at - base:at - base + len(data)] = data

    def read(addr, size):
        region = regions.get(addr)
        return bytes(region[:size]) if region is not None and len(region) == size else None
    return read


def regions(firmware=FIRMWARE):
    return [EfiRuntimeRegion(k, s, s, p, a) for k, s, p, a in firmware]


# ------------------------------------------------------------------------------------ the walk

def test_walk_gives_every_descriptor_once_with_virtual_equal_to_physical():
    calls: list[int] = []
    got = xenefi.walk_memory_map(e820_of(FIRMWARE), fake_mem_info(FIRMWARE, calls))
    assert got == regions()
    # one question per descriptor, and one below the runtime range that starts after a hole (the flash): is the
    # page below part of the same descriptor?
    assert sorted(calls) == sorted([s for _, s, _, _ in FIRMWARE] + [0xFFBFF000])
    assert xenefi.runtime_regions(got) == tuple(r for r in regions() if r.attribute & (1 << 63))


def test_walk_follows_a_descriptor_back_below_a_trimmed_range():
    """Xen trims a range (here the runtime data region's first page is cut out of the machine map): the
    descriptor still starts where the firmware put it."""
    e820 = [m if m.range.start != 0x7F8ED000 else MemRegion(Range(0x7F8EE000, m.range.size - PAGE), m.type)
            for m in e820_of(FIRMWARE)]
    got = xenefi.walk_memory_map(e820, fake_mem_info(FIRMWARE))
    assert EfiRuntimeRegion(6, 0x7F8ED000, 0x7F8ED000, 0x100, RT) in got


def test_walk_looks_back_only_for_runtime_regions_and_not_forever():
    """A range starting inside a big conventional descriptor is not walked back (its start is not handed over);
    a runtime descriptor Xen says goes on below forever is refused."""
    calls: list[int] = []
    e820 = [MemRegion(Range(0x40000000, 0x1000000), E820_RAM)]
    got = xenefi.walk_memory_map(e820, fake_mem_info([(7, 0x100000, 0x40000, 0xF)], calls))
    assert got == [EfiRuntimeRegion(7, 0x40000000, 0x40000000, 0x100, 0xF)]  # to the descriptor's end
    assert calls == [0x40000000, 0x40100000]  # nothing below; past its end, nothing
    endless = fake_mem_info([(6, 0x0, 0x100000, RT)])  # 4 GiB of runtime data
    with pytest.raises(xenefi.XenEfiError, match="more than 64 MiB below"):
        xenefi.walk_memory_map([MemRegion(Range(0x80000000, 0x1000), E820_RESERVED)], endless)


def test_walk_skips_what_no_descriptor_holds():
    e820 = e820_of(FIRMWARE) + [MemRegion(Range(0xFEC00000, 0x1000), E820_RESERVED)]  # the IOAPIC: not EFI's
    assert xenefi.walk_memory_map(e820, fake_mem_info(FIRMWARE)) == regions()


@pytest.mark.parametrize("answer", [(6, RT, 0), (6, RT, 100), (6, RT, -PAGE)])
def test_walk_refuses_descriptors_that_are_not_whole_pages(answer):
    with pytest.raises(xenefi.XenEfiError, match="not whole 4096-byte pages"):
        xenefi.walk_memory_map(e820_of(FIRMWARE), lambda addr: answer)


def test_walk_stops_on_a_xen_that_answers_forever():
    with pytest.raises(xenefi.XenEfiError, match="more than 4096"):
        xenefi.walk_memory_map([MemRegion(Range(0, 1 << 40), E820_RAM)], lambda addr: (7, 0xF, PAGE))


# ------------------------------------------------------------------------------------ the system table

def test_system_table_found_by_signature_crc_and_config_table():
    decoys = {0x7F8ED100: system_table(crc_ok=False), 0x7F8ED400: system_table(tables=0x1000),
              0x7F8ED804: system_table(), 0x7EEA5000: system_table(count=3)}  # bad CRC, other tables, unaligned
    read = memory({**decoys, SYSTAB: system_table()})
    found = xenefi.find_system_table(xenefi.runtime_regions(regions()), read, (CONFIG, N_TABLES))
    assert found is not None and found[0] == SYSTAB
    assert xenefi.find_system_table(xenefi.runtime_regions(regions()), memory(decoys), (CONFIG, N_TABLES)) is None


def test_system_table_unreadable_is_none():
    assert xenefi.find_system_table(regions(), lambda a, s: None, (CONFIG, N_TABLES)) is None


# ------------------------------------------------------------------------------------ the facts and the plan

BASE = EfiFacts(config_table=CONFIG, smbios=0x7F918000, platform_size=64)  # what dom0's /sys/firmware/efi says


def xen_efi(table=None, firmware=FIRMWARE):
    read = memory({SYSTAB: table or system_table()})
    descriptors = xenefi.walk_memory_map(e820_of(firmware), fake_mem_info(firmware))
    found = xenefi.find_system_table(xenefi.runtime_regions(descriptors), read, (CONFIG, N_TABLES))
    return xenefi.efi_facts(BASE, descriptors, found)


def test_efi_facts_completed_from_xen():
    facts, note = xen_efi()
    assert note is None
    assert (facts.loader_signature, facts.systab, facts.fw_vendor, facts.runtime, facts.config_table) == (
        "EL64", SYSTAB, VENDOR, RUNTIME, CONFIG)
    assert facts.smbios == 0x7F918000 and facts.memdesc_version == 1 and facts.memdesc_size == 40
    assert [(r.type, r.phys_addr, r.num_pages) for r in facts.runtime_map] == [
        (6, 0x7EEA5000, 0xC1), (6, 0x7F8ED000, 0x100), (5, 0x7F9ED000, 0x100), (6, 0x7FF50000, 0x20),
        (11, 0xFFC00000, 0x400)]
    assert all(r.virt_addr == r.phys_addr for r in facts.runtime_map)


@pytest.mark.parametrize("table, firmware, words", [
    (system_table(runtime=0xFFFFFFFEFF9ECB98), FIRMWARE, "runtime services table at 0xfffffffeff9ecb98 is in no "
                                                         "runtime region"),
    (system_table(vendor=0x7FB7C000), FIRMWARE, "firmware vendor string at 0x7fb7c000 is in no runtime region"),
    (system_table(crc_ok=False), FIRMWARE, "no EFI system table found"),
    (None, [(k, s, p, a & ~(1 << 63)) for k, s, p, a in FIRMWARE], "no EFI runtime regions"),
])
def test_efi_facts_refused_with_a_reason(table, firmware, words):
    facts, note = xen_efi(table, firmware)
    assert facts == BASE and words in note


def xen_facts(efi):
    return dataclasses.replace(XEN, memmap=tuple(e820_of(FIRMWARE)), efi=efi, xen=dataclasses.replace(
        XEN.xen, crash_area=Range(0x60000000, 0x10000000)))


def request(crash=False):
    return LoadRequest(kernel=bytes(TINY), kernel_name="tiny.bzImage", cmdline="console=ttyS0", initrd=b"i" * 4096,
                       initrd_name="initrd.img", crash=crash)


@pytest.mark.parametrize("crash", [False, True], ids=["kexec", "kdump"])
def test_xen_to_linux_plan_hands_over_efi(crash):
    p = api.make_plan(request(crash), xen_facts(xen_efi()[0]))
    page = next(bytes(s.data) for s in p.segments if s.role == "boot-params")
    sig, systab, dsize, dver, mm, mmsize, systab_hi, mm_hi = struct.unpack_from("<4sIIIIIII", page, 0x1C0)
    assert (sig, systab | systab_hi << 32, dsize, dver, mmsize) == (b"EL64", SYSTAB, 40, 1, 5 * 40)
    mm_seg = next(s for s in p.segments if s.role == "efi-memmap")
    assert mm | mm_hi << 32 == mm_seg.mem
    got = [struct.unpack_from("<IIQQQQ", bytes(mm_seg.data), i * 40) for i in range(5)]
    assert [(t, ph, v, n, a) for t, _, ph, v, n, a in got] == [
        (t, s, s, n, a) for t, s, n, a in [(6, 0x7EEA5000, 0xC1, RT), (6, 0x7F8ED000, 0x100, RT),
                                           (5, 0x7F9ED000, 0x100, RT), (6, 0x7FF50000, 0x20, RT),
                                           (11, 0xFFC00000, 0x400, MMIO_RT)]]
    setup = next(bytes(s.data) for s in p.segments if s.role == "setup-data")
    assert struct.unpack_from("<QII4Q", setup, 0)[1:] == (4, 96, VENDOR, RUNTIME, CONFIG, 0x7F918000)
    assert any("the next kernel keeps EFI runtime services" in n for n in p.notes)


def test_xen_dom0_without_the_firmware_facts_says_so():
    p = api.make_plan(request(), xen_facts(BASE))
    assert not any(s.role == "efi-memmap" for s in p.segments)
    assert any("system table and runtime regions are unknown" in n for n in p.notes)


def test_read_xen_efi_asks_xen_and_dev_mem(monkeypatch):
    """system.read_xen_efi with the hypercalls and /dev/mem answered by the fakes above."""
    from kexloader import hypercall
    monkeypatch.setattr(hypercall, "efi_config_table", lambda: (CONFIG, N_TABLES))
    monkeypatch.setattr(hypercall, "efi_mem_info", fake_mem_info(FIRMWARE))
    monkeypatch.setattr(system, "read_physical", memory({SYSTAB: system_table()}))
    facts = system.read_xen_efi(BASE, tuple(e820_of(FIRMWARE)))
    assert facts.systab == SYSTAB and len(facts.runtime_map) == 5
    monkeypatch.setattr(hypercall, "efi_config_table", lambda: None)  # Xen not booted by EFI
    assert system.read_xen_efi(BASE, tuple(e820_of(FIRMWARE))) is BASE
    assert system.read_xen_efi(None, tuple(e820_of(FIRMWARE))) is None


def test_platform_op_layout():
    """struct xen_platform_op with u.firmware_info.u.efi_info (public/platform.h): 136 bytes, the union at 16."""
    raw = xf.XenPlatformEfiInfo.build(dict(cmd=50, interface_version=0x03000001, type=4, index=3, addr=0x1000,
                                           size=0x2000, attr=RT, mem_type=6))
    assert len(raw) == 136
    assert struct.unpack_from("<IIIIQQQI", raw) == (50, 0x03000001, 4, 3, 0x1000, 0x2000, RT, 6)


def test_snapshot_keeps_the_completed_facts(tmp_path):
    facts = xen_facts(xen_efi()[0])
    path = tmp_path / "s.json"
    snapshot.save_snapshot(facts, path)
    assert system.load_snapshot(path).efi == facts.efi
    assert efiboot.decide(system.load_snapshot(path), kernel_flags=0x10, noefi=False, what="k",
                          memmap=facts.memmap)[0] is not None


# ------------------------------------------------------------------------------------ the real dom0

XEN_EFI_SNAP = ROOT / "fixtures/snapshots/ovmf-xen-dom0-2g.json"  # dom0 of Xen 4.17's xen.efi started by OVMF


def test_real_dom0_snapshot_has_the_firmware_facts():
    """Debian 12's Xen 4.17 booted by Debian 12's OVMF (2 GiB), dom0 6.1: the system table and fw_vendor, runtime
    services and configuration tables Linux finds when OVMF boots it directly (ovmf-2g-kdump.json), and the
    firmware's own four runtime regions, 1:1."""
    efi = system.load_snapshot(XEN_EFI_SNAP).efi
    bare = system.load_snapshot(ROOT / "fixtures/snapshots/ovmf-2g-kdump.json").efi
    assert (efi.systab, efi.fw_vendor, efi.runtime, efi.config_table, efi.smbios) == (
        bare.systab, bare.fw_vendor, bare.runtime, bare.config_table, bare.smbios)
    assert [(r.type, r.phys_addr, r.num_pages) for r in efi.runtime_map] == [
        (r.type, r.phys_addr, r.num_pages) for r in sorted(bare.runtime_map, key=lambda r: r.phys_addr)
        if r.type in (5, 6)]
    assert all(r.virt_addr == r.phys_addr for r in efi.runtime_map)


def test_golden_plan_on_the_real_dom0(request):
    """The whole Xen -> Linux plan of an XLF_EFI_KEXEC kernel on that snapshot. `pytest --update-golden`."""
    import json
    from kexloader import plan as plans
    req = LoadRequest(kernel=bytes(TINY), kernel_name="tiny-efi.bzImage", cmdline="console=ttyS0",
                      initrd=b"initrd" * 1000, initrd_name="initrd.img", rng_seed=bytes(range(32)))
    doc = plans.to_json(api.make_plan(req, system.load_snapshot(XEN_EFI_SNAP)), files=False)
    doc["notes"] = [n for n in doc["notes"] if not n.startswith("facts:")]
    path = ROOT / f"fixtures/golden/tiny-bzimage-efi@{XEN_EFI_SNAP.stem}.json"
    if request.config.getoption("--update-golden"):
        path.write_text(json.dumps(doc, indent=1) + "\n")
    assert path.exists(), f"no golden plan {path.name}: run pytest --update-golden and review it"
    assert doc == json.loads(path.read_text())
    assert any("4 runtime regions" in n and "keeps EFI runtime services" in n for n in doc["notes"])
