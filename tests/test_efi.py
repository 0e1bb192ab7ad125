"""UEFI (issue 11 items 1-3): EFI facts readers and snapshots, the EFI hand-off to an XLF_EFI_KEXEC kernel for
-l and -p, --noefi, the refusals that boot the next kernel without EFI, and SETUP_E820_EXT.

Expected values are the snapshots' raw numbers (fixtures/snapshots/ovmf-2g-kdump.json: Debian 12's 6.1 booted
by Debian 12's OVMF under QEMU, 2 GiB, crashkernel=256M), unpacked here with `struct`, not kexloader/formats/efi.py.
"""

import dataclasses
import json
import struct
from pathlib import Path

import pytest

from kexloader import api, cli, efi, efiboot, plan as plans, system
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import SystemFactsError
from kexloader.model import E820_RAM, E820_RESERVED, EfiRuntimeRegion, LoadRequest, MemRegion, Range

ROOT = Path(__file__).resolve().parent.parent
SNAPS = ROOT / "fixtures/snapshots"
OVMF_SNAP = SNAPS / "ovmf-2g-kdump.json"
OVMF6_SNAP = SNAPS / "ovmf-6g-kdump.json"
FRAG_SNAP = SNAPS / "synthetic-uefi-e820-fragmented-kdump.json"
OVMF = system.load_snapshot(OVMF_SNAP)
FRAG = system.load_snapshot(FRAG_SNAP)
QEMU_BIOS = system.load_snapshot(SNAPS / "qemu-debian12-kdump-384m.json")
TINY = (ROOT / "fixtures/bzimage/tiny.bzImage").read_bytes()  # xloadflags 0x3: no XLF_EFI_KEXEC
XLF_EFI_KEXEC = 0x10
SEED = bytes(range(32))


def with_xloadflags(image: bytes, flags: int) -> bytes:
    out = bytearray(image)
    struct.pack_into("<H", out, 0x236, flags)
    return bytes(out)


TINY_EFI = with_xloadflags(TINY, 0x3 | XLF_EFI_KEXEC)
RUNTIME = [  # ovmf-2g-kdump's /sys/firmware/efi/runtime-map, in directory order
    (6, 0x7FF50000, 0xFFFFFFFEFFF50000, 0x20),
    (5, 0x7F9ED000, 0xFFFFFFFEFF9ED000, 0x100),
    (6, 0x7F8ED000, 0xFFFFFFFEFF8ED000, 0x100),
    (6, 0x7EEA5000, 0xFFFFFFFEFEEA5000, 0xC1),
    (4, 0x7C5FA000, 0xFFFFFFFEFC5FA000, 0x1),  # boot services data Linux keeps (efi_mem_reserve: MEMATTR)
]
ATTR = (1 << 63) | 0xF


def request(kernel=TINY_EFI, crash=False, **kw):
    return LoadRequest(kernel=kernel, kernel_name="tiny.bzImage", cmdline="console=ttyS0", initrd=b"initrd" * 1000,
                       initrd_name="initrd.img", crash=crash, rng_seed=SEED, **kw)


def segment(p, role):
    found = [s for s in p.segments if s.role == role]
    return found[0] if found else None


def read_plan(p):
    """read(addr, size) over the plan's segments, as the kernel would see memory."""
    def read(addr, size):
        for s in p.segments:
            if s.mem <= addr and addr + size <= s.mem + s.memsz:
                data = bytes(s.data) + bytes(s.memsz - s.bufsz)
                return data[addr - s.mem:addr - s.mem + size]
        return None
    return read


def zero_page(p) -> bytes:
    return bytes(segment(p, "boot-params").data)


def chain(p):
    page = zero_page(p)
    first = struct.unpack_from("<Q", page, 0x250)[0]
    out, addr, read = [], first, read_plan(p)
    while addr:
        nxt, typ, length = struct.unpack("<QII", read(addr, 16))
        out.append((typ, read(addr + 16, length)))
        addr = nxt
    return out


# ------------------------------------------------------------------------------------------ facts

def test_ovmf_snapshot_efi_facts():
    f = OVMF.efi
    assert (f.loader_signature, f.systab, f.memdesc_size, f.memdesc_version) == ("EL64", 0x7F9EC018, 48, 1)
    assert (f.memmap_size, f.platform_size) == (6528, 64)
    assert (f.fw_vendor, f.runtime, f.config_table, f.smbios, f.smbios3) == (0x7F91C818, 0x7F9ECB98, 0x7F9ECC98,
                                                                            0x7F918000, None)
    assert [(r.type, r.phys_addr, r.virt_addr, r.num_pages) for r in f.runtime_map] == RUNTIME
    assert all(r.attribute == ATTR for r in f.runtime_map)


def test_old_snapshots_mean_no_efi():
    doc = json.loads((SNAPS / "qemu-2g.json").read_text())
    assert "efi" not in doc
    assert system.facts_from_json(doc).efi is None


def test_snapshot_json_roundtrip_keeps_efi():
    doc = system.facts_to_json(OVMF)
    assert system.facts_from_json(json.loads(json.dumps(doc))).efi == OVMF.efi
    assert system.facts_to_json(QEMU_BIOS)["efi"] is None


@pytest.mark.parametrize("bad", [[], "EL64", {"runtime_map": [[1, 2]]}, {"runtime_map": [["a"] * 5]}, {"runtime_map": [[6, -1, 0, 1, 0]]},
                                 {"systab": "x"}, {"memdesc_size": -1}, {"loader_signature": 64}])
def test_malformed_efi_in_a_snapshot_is_one_error(bad):
    doc = system.facts_to_json(OVMF)
    doc["efi"] = bad
    with pytest.raises(SystemFactsError, match="not a kexloader snapshot"):
        system.facts_from_json(doc)


def fake_efi_root(tmp_path: Path, *, runtime=RUNTIME, platform="64", systab="ACPI20=0x7fb7e014\nACPI=0x7fb7e000\n"
                  "SMBIOS=0x7f918000\nSMBIOS3=0x7f916000\n") -> Path:
    efi_dir = tmp_path / "sys/firmware/efi"
    efi_dir.mkdir(parents=True)
    (efi_dir / "systab").write_text(systab)
    (efi_dir / "fw_vendor").write_text("0x7f91c818\n")
    (efi_dir / "runtime").write_text("0x7f9ecb98\n")
    (efi_dir / "config_table").write_text("0x7f9ecc98\n")
    if platform is not None:
        (efi_dir / "fw_platform_size").write_text(platform + "\n")
    if runtime is not None:
        for i, (typ, phys, virt, pages) in enumerate(runtime):
            d = efi_dir / "runtime-map" / str(i)
            d.mkdir(parents=True)
            for name, value in (("type", typ), ("phys_addr", phys), ("virt_addr", virt), ("num_pages", pages),
                                ("attribute", ATTR)):
                (d / name).write_text(f"{value:#x}\n")
    return tmp_path


def boot_params_with_efi_info() -> bytes:
    page = bytearray(4096)
    struct.pack_into("<4sIIIIIII", page, 0x1C0, b"EL64", 0x7F9EC018, 48, 1, 0x7FB6D000, 6528, 0, 0)
    return bytes(page)


def test_read_efi_from_a_fake_root(tmp_path):
    root = fake_efi_root(tmp_path)
    # directories 10 and 2 sort numerically, not as strings
    extra = root / "sys/firmware/efi/runtime-map/10"
    extra.mkdir()
    for name, value in (("type", 11), ("phys_addr", 0xFFC00000), ("virt_addr", 0xFFFFFFFEFFC00000),
                        ("num_pages", 0x400), ("attribute", 1 << 63)):
        (extra / name).write_text(f"{value:#x}\n")
    f = efi.read_efi(root, boot_params_with_efi_info())
    assert (f.loader_signature, f.systab, f.memdesc_size, f.memmap, f.memmap_size) == ("EL64", 0x7F9EC018, 48,
                                                                                       0x7FB6D000, 6528)
    assert (f.smbios, f.smbios3, f.platform_size, f.fw_vendor) == (0x7F918000, 0x7F916000, 64, 0x7F91C818)
    assert [r.phys_addr for r in f.runtime_map][-2:] == [0x7C5FA000, 0xFFC00000]
    assert f.runtime_map[0] == EfiRuntimeRegion(6, 0x7FF50000, 0xFFFFFFFEFFF50000, 0x20, ATTR)


def test_read_efi_without_efi_dir_or_pieces(tmp_path):
    assert efi.read_efi(tmp_path, None) is None
    root = fake_efi_root(tmp_path, runtime=None, platform=None)
    f = efi.read_efi(root, None)
    assert f.runtime_map is None and f.platform_size is None and f.loader_signature == "" and f.memmap_size == 0
    broken = root / "sys/firmware/efi/runtime-map/0"
    broken.mkdir(parents=True)
    (broken / "type").write_text("0x5\n")  # the other files missing: no runtime map rather than half of one
    assert efi.read_efi(root, None).runtime_map is None


def test_describe_shows_efi():
    text = system.describe(OVMF)
    assert "EFI: EL64 systab 0x7f9ec018" in text and "RuntimeServicesCode virt 0xfffffffeff9ed000" in text


# ------------------------------------------------------------------------------------ the hand-off

@pytest.mark.parametrize("crash", [False, True], ids=["kexec", "kdump"])
def test_efi_handoff_on_ovmf(crash):
    p = api.make_plan(request(crash=crash), OVMF)
    page = zero_page(p)
    sig, systab, dsize, dver, mm, mmsize, systab_hi, mm_hi = struct.unpack_from("<4sIIIIIII", page, 0x1C0)
    mm_seg = segment(p, "efi-memmap")
    assert (sig, systab | systab_hi << 32, dsize, dver) == (b"EL64", 0x7F9EC018, 48, 1)
    assert (mm | mm_hi << 32, mmsize) == (mm_seg.mem, 5 * 48)
    raw = bytes(mm_seg.data)
    got = [struct.unpack_from("<IIQQQQ", raw, i * 48) for i in range(5)]
    assert [(t, ph, v, n) for t, _, ph, v, n, _ in got] == RUNTIME
    assert all(pad == 0 and a == ATTR for _, pad, _, _, _, a in got)
    assert all(raw[i * 48 + 40:i * 48 + 48] == bytes(8) for i in range(5))
    records = chain(p)
    assert [t for t, _ in records] == [9, 4]  # RNG seed, then SETUP_EFI (kexec-tools' chain order)
    assert records[0][1] == SEED
    assert struct.unpack("<12Q", records[1][1]) == (0x7F91C818, 0x7F9ECB98, 0x7F9ECC98, 0x7F918000) + (0,) * 8
    assert any("the next kernel keeps EFI runtime services" in n for n in p.notes)
    if crash:  # everything in the crash region [0x69000000, 0x79000000)
        assert all(0x69000000 <= s.mem and s.mem + s.memsz <= 0x79000000 for s in p.segments)
        line = bytes(segment(p, "cmdline").data).rstrip(b"\0").decode()
        assert "acpi_rsdp=0x7fb7e014" in line  # kept with EFI: a deliberate difference from kexec-tools
    assert struct.unpack_from("<Q", page, 0x70)[0] == 0x7FB7E014  # acpi_rsdp_addr


def test_above_4g_firmware_tables_on_the_6g_snapshot():
    facts = system.load_snapshot(OVMF6_SNAP)
    p = api.make_plan(request(), facts)
    page = zero_page(p)
    assert page[0x1C0:0x1C4] == b"EL64" and struct.unpack_from("<I", page, 0x1C4)[0] == facts.efi.systab
    assert [t for t, _ in chain(p)] == [9, 4]


def test_noefi_drops_efi_keeps_acpi():
    p = api.make_plan(request(noefi=True), OVMF)
    page = zero_page(p)
    assert page[0x1C0:0x1E0] == bytes(32)
    assert segment(p, "efi-memmap") is None and [t for t, _ in chain(p)] == [9]
    assert struct.unpack_from("<Q", page, 0x70)[0] == 0x7FB7E014
    assert [n for n in p.notes if n.startswith("EFI:")] == [
        "EFI: --noefi: no efi_info and no SETUP_EFI; the next kernel boots without EFI runtime services "
        "(ACPI through acpi_rsdp_addr)"]


def test_noefi_from_the_command_line(capsys):
    backend = RecordingBackend()
    kernel = ROOT / "fixtures/bzimage/tiny.bzImage"
    code = cli.main(["--dry-run", f"--facts={OVMF_SNAP}", "-l", str(kernel), "--noefi"],
                    backend_factory=lambda: backend)
    out, _ = capsys.readouterr()
    assert code == 0 and "EFI: --noefi" in out
    assert cli.parse_args(["-l", "K", "--noefi"]).noefi and not cli.parse_args(["-l", "K"]).noefi


def test_kernel_without_xlf_efi_kexec_boots_without_efi():
    p = api.make_plan(request(kernel=TINY), OVMF)
    assert zero_page(p)[0x1C0:0x1E0] == bytes(32) and segment(p, "efi-memmap") is None
    assert [n for n in p.notes if n.startswith("EFI:")] == [
        "EFI: kernel (tiny.bzImage) does not declare XLF_EFI_KEXEC: the next kernel boots without EFI runtime services"]


def note_for(facts, **kw) -> str:
    handover, note = efiboot.decide(facts, kernel_flags=0x13, noefi=False, what="kernel (k)", memmap=facts.memmap,
                                    **kw)
    assert handover is None
    return note


def replace_efi(**changes):
    return dataclasses.replace(OVMF, efi=dataclasses.replace(OVMF.efi, **changes))


@pytest.mark.parametrize("changes, words", [
    (dict(platform_size=32), "32-bit firmware"),
    (dict(loader_signature="EL32", platform_size=None), "32-bit firmware"),
    (dict(loader_signature="", memmap_size=0), "boot_params carry no EFI memory map"),
    (dict(memdesc_version=2), "descriptor version 2"),
    (dict(memdesc_size=24), "descriptor size 24"),
    (dict(fw_vendor=None), "{fw_vendor} unknown"),
    (dict(runtime_map=None), "no runtime map"),
    (dict(runtime_map=()), "no runtime map"),
], ids=["platform-32", "EL32", "no-efi_info", "desc-version", "desc-size", "no-fw_vendor", "no-map", "empty-map"])
def test_unusable_efi_facts_give_one_note(changes, words):
    note = note_for(replace_efi(**changes))
    assert note.startswith("EFI: ") and words in note and note.endswith("boots without EFI runtime services")
    assert "\n" not in note


def test_runtime_map_overlapping_itself():
    regions = OVMF.efi.runtime_map + (EfiRuntimeRegion(6, 0x7F9EE000, 0xFFFFFFFEFF9EE000, 1, ATTR),)
    assert "runtime map entries [0x7f9ed000, 0x7faed000) and [0x7f9ee000, 0x7f9ef000) overlap" in note_for(
        replace_efi(runtime_map=regions))


def test_runtime_map_disagreeing_with_the_memory_map():
    # the firmware's runtime data at 0x7eea5000 reported as RAM
    memmap = tuple(m for m in OVMF.memmap if m.range.start != 0x7EEA5000) + (
        MemRegion(Range(0x7EEA5000, 0xC1000), E820_RAM),)
    facts = dataclasses.replace(OVMF, memmap=tuple(sorted(memmap)))
    note = note_for(facts)
    assert "runtime region [0x7eea5000, 0x7ef66000) (RuntimeServicesData) is RAM in the memory map" in note
    assert "disagrees" in note


@pytest.mark.parametrize("crash", [False, True], ids=["kexec", "kdump"])
def test_bad_efi_facts_never_half_build_a_plan(crash):
    regions = OVMF.efi.runtime_map + (EfiRuntimeRegion(5, 0x7F9ED000, 0, 1, ATTR),)
    p = api.make_plan(request(crash=crash), replace_efi(runtime_map=regions))
    assert zero_page(p)[0x1C0:0x1E0] == bytes(32) and segment(p, "efi-memmap") is None
    assert [t for t, _ in chain(p)] == [9]
    assert len([n for n in p.notes if n.startswith("EFI:")]) == 1


def test_boot_services_regions_kept_by_linux_may_be_ram():
    # 0x7c5fa000 (boot services data tagged EFI_MEMORY_RUNTIME by efi_mem_reserve) lies in firmware RAM
    assert any(m.is_ram and m.range.contains(Range(0x7C5FA000, 0x1000)) for m in OVMF.memmap)
    assert efiboot.runtime_map_problem(OVMF.efi.runtime_map, OVMF.memmap) is None


def test_bios_machine_gets_no_efi_and_no_note():
    p = api.make_plan(request(), QEMU_BIOS)
    assert zero_page(p)[0x1C0:0x1E0] == bytes(32)
    assert not [n for n in p.notes if n.startswith("EFI")]


# ------------------------------------------------------------------------------------ SETUP_E820_EXT

def e820_of(p):
    page = zero_page(p)
    n = page[0x1E8]
    table = [struct.unpack_from("<QQI", page, 0x2D0 + 20 * i) for i in range(n)]
    ext = [payload for typ, payload in chain(p) if typ == 1]
    for payload in ext:
        table += [struct.unpack_from("<QQI", payload, i) for i in range(0, len(payload), 20)]
    return n, table, ext


def test_more_than_128_entries_go_to_setup_e820_ext():
    p = api.make_plan(request(), FRAG)
    n, table, ext = e820_of(p)
    assert len(FRAG.memmap) == 314 and n == 128 and len(ext) == 1 and len(ext[0]) == 186 * 20
    assert table == [(m.range.start, m.range.size, m.type) for m in FRAG.memmap]
    assert [t for t, _ in chain(p)] == [9, 1, 4]  # RNG seed, E820_EXT, EFI: kexec-tools' order
    assert "e820: 314 entries, 128 in the zero page and 186 in SETUP_E820_EXT" in p.notes


def test_crash_kernel_map_over_128_entries_goes_to_setup_e820_ext():
    p = api.make_plan(request(crash=True), FRAG)
    n, table, ext = e820_of(p)
    assert n == 128 and len(ext) == 1
    assert len(table) > 128
    assert sum(1 for *_, t in table if t == E820_RESERVED) >= 149  # the 149 holes stay reserved for the crash kernel
    ram = [Range(a, s) for a, s, t in table if t == E820_RAM]
    crash_region = Range(0x69000000, 0x10000000)
    assert all(r.start < 0x100000 or crash_region.contains(r) for r in ram)
    assert all(crash_region.contains(s.range) for s in p.segments)


def test_e820_ext_without_rng_seed_or_efi():
    p = api.make_plan(dataclasses.replace(request(kernel=TINY), rng_seed=None), FRAG)
    assert [t for t, _ in chain(p)] == [1]
    assert segment(p, "setup-data").what == "SETUP_E820_EXT"


def test_plan_json_lists_the_efi_segments():
    doc = plans.to_json(api.make_plan(request(), OVMF), files=False)
    roles = [s["role"] for s in doc["segments"]]
    assert "efi-memmap" in roles and "setup-data" in roles


# ------------------------------------------------------------------------------------ golden plans

EFI_SNAPSHOTS = [OVMF_SNAP, OVMF6_SNAP, FRAG_SNAP]


@pytest.mark.parametrize("snapshot", EFI_SNAPSHOTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("crash", [False, True], ids=["kexec", "kdump"])
def test_golden_efi_plan(snapshot, crash, request):
    """The whole plan of an XLF_EFI_KEXEC kernel (every segment's address, size and SHA-256: the zero page's
    efi_info and e820, the EFI memory map, the setup_data chain) on each UEFI snapshot, for -l and -p.
    `pytest --update-golden` rewrites it: review the diff."""
    doc = plans.to_json(api.make_plan(request_for_golden(crash), system.load_snapshot(snapshot)), files=False)
    doc["notes"] = [n for n in doc["notes"] if not n.startswith("facts:")]
    path = ROOT / "fixtures/golden" / f"tiny-bzimage-efi{'-kdump' if crash else ''}@{snapshot.stem}.json"
    if request.config.getoption("--update-golden"):
        path.write_text(json.dumps(doc, indent=1) + "\n")
    assert path.exists(), f"no golden plan {path.name}: run pytest --update-golden and review it"
    assert doc == json.loads(path.read_text())


def request_for_golden(crash: bool) -> LoadRequest:
    return LoadRequest(kernel=TINY_EFI, kernel_name="tiny-efi.bzImage", cmdline="console=ttyS0" + (
        " irqpoll nr_cpus=1" if crash else ""), initrd=b"initrd" * 1000, initrd_name="initrd.img", crash=crash,
        rng_seed=SEED)
