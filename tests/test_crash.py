"""kdump (-p): crash facts readers, the ELF core header, the crash kernel's memory map, plans and the CLI.

Golden values are written by hand from the snapshots' raw numbers and reference/interfaces.md §5 (and,
for the kexec-tools comparison, kexec-tools-anatomy.md §5), and the header bytes are packed with
`struct` here, not with kexloader/formats/elfcore.py.

Snapshots:
* qemu-debian12-kdump-384m.json: `python3 -m kexloader.system save` in a QEMU guest (Debian 6.1, 2 CPUs,
  2 GiB, crashkernel=384M; 5-level paging + KASLR: page_offset 0xff3c028180000000, text 0xffffffffa2000000).
* synthetic-kaslr-64cpu-kdump.json: 16 GiB, 64 CPUs, 4-level KASLR (page_offset 0xffff9b5a40000000, text at
  0xffffffffa4e00000 / physical 0x2a5c00000), ACPI NVS + tables, and two crash regions
  (crashkernel=128M,low at 0xf000000 and 512M,high at 0x440000000, inside the RAM above 4 GiB).
"""

import dataclasses
import struct
from pathlib import Path

import pytest

from kexloader import api, cli, crash, system
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import NoCrashRegionError, PlacementError, SystemFactsError, UnsupportedImageError, UsageError
from kexloader.formats import bootparams as bp
from kexloader.formats import elfcore
from kexloader.kexec_abi import KEXEC_ARCH_X86_64, KEXEC_ON_CRASH
from kexloader.model import (E820_ACPI, E820_NVS, E820_RAM, E820_RESERVED, KernelText, LoadRequest, MemRegion, MiB,
                             PurgatoryOptions, Range)

ROOT = Path(__file__).resolve().parent.parent
FAKE_ROOT = ROOT / "fixtures/kdump/qemu-debian12-root"
TINY_PATH = ROOT / "fixtures/bzimage/tiny.bzImage"
TINY = TINY_PATH.read_bytes()
QEMU_SNAP = ROOT / "fixtures/snapshots/qemu-debian12-kdump-384m.json"
SYNTH_SNAP = ROOT / "fixtures/snapshots/synthetic-kaslr-64cpu-kdump.json"
QEMU = system.load_snapshot(QEMU_SNAP)
SYNTH = system.load_snapshot(SYNTH_SNAP)
DEVHOST = system.load_snapshot(ROOT / "fixtures/snapshots/devhost.json")  # no crash region

PT_LOAD, PT_NOTE, RWX = 1, 4, 7


def ehdr(phnum: int) -> bytes:
    return (b"\x7fELF\x02\x01\x01\x00" + bytes(8)
            + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0))


def note(addr: int, size: int) -> bytes:
    return struct.pack("<IIQQQQQQ", PT_NOTE, 0, addr, 0, addr, size, size, 0)


def load(paddr: int, size: int, vaddr: int, offset: int | None = None) -> bytes:
    return struct.pack("<IIQQQQQQ", PT_LOAD, RWX, paddr if offset is None else offset, vaddr, paddr, size, size, 0)


def header_of(facts, scheme=crash.SCHEME_REUSE, backup=None, source=None) -> bytes:
    sources, _ = crash.linux_core_sources(facts, scheme, backup, source)
    return crash.core_header(sources)


# ------------------------------------------------------------------------------------------ readers

def test_readers_on_a_real_guest_tree():
    facts = system.read_facts(FAKE_ROOT)
    assert facts.crash_notes == ((0, Range(0x63E3A400, 368)), (1, Range(0x63F3A400, 368)))
    assert facts.vmcoreinfo == Range(0x1320000, 0x1024)  # "0x0000000001320000 1024": size is hex too
    # kcore's text PT_LOAD holds kallsyms' _stext; its paddr agrees with iomem's "Kernel code"
    assert facts.kernel_text == KernelText(0xFFFFFFFF82600000, 0x3A200000, 0x3430000)
    assert facts.page_offset == 0xFF39E5C840000000  # 5-level paging + KASLR
    assert facts.os_release == "6.1.0-56-amd64"
    assert facts.crash_regions() == (Range(0x66000000, 384 * MiB),)


def test_a_plain_load_reads_no_crash_facts(monkeypatch):
    """-l (kdump=False) leaves out the crash notes, VMCOREINFO, kernel text and direct-map base, and does not
    open /proc/kcore or /proc/kallsyms; everything else is what a full read gives."""
    full = system.read_facts(FAKE_ROOT)
    monkeypatch.setattr(system, "read_kcore_loads", lambda *a: pytest.fail("read /proc/kcore for -l"))
    monkeypatch.setattr(system, "read_kallsyms", lambda *a: pytest.fail("read /proc/kallsyms for -l"))
    plain = system.read_facts(FAKE_ROOT, kdump=False)
    assert (plain.crash_notes, plain.vmcoreinfo, plain.kernel_text, plain.page_offset) == ((), None, None, None)
    assert dataclasses.replace(full, crash_notes=(), vmcoreinfo=None, kernel_text=None, page_offset=None) == plain


def copy_root(tmp_path: Path) -> Path:
    import shutil

    dest = tmp_path / "root"
    shutil.copytree(FAKE_ROOT, dest)
    return dest


def test_vmcoreinfo_in_old_bare_hex_form(tmp_path):
    root = copy_root(tmp_path)
    (root / "sys/kernel/vmcoreinfo").write_text("1320000 1024\n")
    assert system.read_vmcoreinfo(root) == Range(0x1320000, 0x1024)
    (root / "sys/kernel/vmcoreinfo").write_text("garbage\n")
    assert system.read_vmcoreinfo(root) is None


def test_crash_notes_sparse_cpus_and_missing_size(tmp_path):
    root = copy_root(tmp_path)
    cpu = root / "sys/devices/system/cpu"
    (cpu / "cpu1/crash_notes_size").unlink()  # kernels before 3.16: kexec-tools' 1024
    for n, addr in ((12, "7d53a400"), (3, "7d54a400")):
        (cpu / f"cpu{n}").mkdir()
        (cpu / f"cpu{n}/crash_notes").write_text(addr + "\n")
        (cpu / f"cpu{n}/crash_notes_size").write_text("368\n")
    (cpu / "cpufreq").mkdir()  # not a CPU
    (cpu / "cpu7").mkdir()  # no crash_notes (offline and never brought up): skipped
    assert system.read_crash_notes(root) == ((0, Range(0x63E3A400, 368)), (1, Range(0x63F3A400, 1024)),
                                             (3, Range(0x7D54A400, 368)), (12, Range(0x7D53A400, 368)))


def test_kernel_text_from_kallsyms_and_iomem_without_kcore(tmp_path):
    root = copy_root(tmp_path)
    (root / "proc/kcore").unlink()
    facts = system.read_facts(root)
    # _text.._end from kallsyms (0xffffffff85a30000 - 0xffffffff82600000), physical start from "Kernel code"
    assert facts.kernel_text == KernelText(0xFFFFFFFF82600000, 0x3A200000, 0x3430000)
    assert facts.page_offset is None


def test_kcore_text_chosen_by_stext_or_lowest(tmp_path):
    kc = system.read_kcore_loads(FAKE_ROOT)
    iomem = system.read_iomem(FAKE_ROOT)
    # without kallsyms: the lowest mapping at or above __START_KERNEL_map (modules are above the image)
    assert system.kernel_text_from(kc, {}, iomem) == KernelText(0xFFFFFFFF82600000, 0x3A200000, 0x3430000)
    # without iomem: kcore's own p_paddr
    assert system.kernel_text_from(kc, {}, ()) == KernelText(0xFFFFFFFF82600000, 0x3A200000, 0x3430000)
    assert system.kernel_text_from((), {}, iomem) is None


def test_snapshot_roundtrip_keeps_kdump_facts(tmp_path):
    path = tmp_path / "s.json"
    system.save_snapshot(SYNTH, path)
    again = system.load_snapshot(path)
    assert dataclasses.replace(again, source="") == dataclasses.replace(SYNTH, source="")
    assert len(again.crash_notes) == 64


def test_old_snapshot_without_kdump_facts_loads_and_says_what_is_missing():
    assert DEVHOST.crash_notes == () and DEVHOST.vmcoreinfo is None and DEVHOST.os_release == ""
    facts = dataclasses.replace(DEVHOST, iomem=QEMU.iomem)  # give it a crash region
    with pytest.raises(SystemFactsError, match="no CPU crash notes"):
        crash.linux_core_sources(facts, crash.SCHEME_REUSE, None, None)


# ------------------------------------------------------------------------------- golden ELF headers

QEMU_PO = 0xFF3C028180000000


def test_golden_header_qemu_guest():
    expected = (ehdr(6)
                + note(0x7D43A400, 368) + note(0x7D53A400, 368)  # cpu0, cpu1 crash_notes
                + note(0x11F2000, 0x1024)  # VMCOREINFO
                + load(0x2F200000, 0x3430000, 0xFFFFFFFFA2000000)  # kernel text, KASLR'd
                # System RAM [0x100000, 0x7ffe0000) minus the crash region [0x65000000, 0x7d000000);
                # [0x1000, 0x9fc00) left out: 6.1 reserves the first MiB and the crash kernel gets it
                + load(0x100000, 0x64F00000, QEMU_PO + 0x100000)
                + load(0x7D000000, 0x2FE0000, QEMU_PO + 0x7D000000))
    assert header_of(QEMU) == expected


SYNTH_PO = 0xFFFF9B5A40000000


def test_golden_header_synthetic_64_cpus_kaslr_two_crash_regions():
    expected = ehdr(64 + 1 + 1 + 4)
    expected += b"".join(note(0x2B001A400 + cpu * 0x100000, 368) for cpu in range(64))
    expected += note(0x2A8E2F000, 0x1024)
    expected += load(0x2A5C00000, 0x3800000, 0xFFFFFFFFA4E00000)
    expected += load(0x100000, 0xEF00000, 0xFFFF9B5A40100000)  # up to the ,low region at 0xf000000
    expected += load(0x17000000, 0x63600000, 0xFFFF9B5A57000000)  # after it, up to ACPI NVS
    expected += load(0x100000000, 0x340000000, 0xFFFF9B5B40000000)  # up to the ,high region at 0x440000000
    expected += load(0x460000000, 0x20000000, 0xFFFF9B5EA0000000)  # after it, to the end of RAM
    got = header_of(SYNTH)
    assert len(got) == 64 + 70 * 56
    assert got == expected


def test_golden_header_backup_scheme_points_low_memory_at_the_copy():
    backup = Range(0x7CF00000, 0x9F000)
    got = header_of(QEMU, crash.SCHEME_BACKUP, backup, Range(0x1000, 0x9EC00))
    expected = (ehdr(7) + note(0x7D43A400, 368) + note(0x7D53A400, 368) + note(0x11F2000, 0x1024)
                + load(0x2F200000, 0x3430000, 0xFFFFFFFFA2000000)
                + load(0x1000, 0x9EC00, QEMU_PO + 0x1000, offset=0x7CF00000)
                + load(0x100000, 0x64F00000, QEMU_PO + 0x100000)
                + load(0x7D000000, 0x2FE0000, QEMU_PO + 0x7D000000))
    assert got == expected


def test_unknown_page_offset_and_text_fall_back_with_notes():
    facts = dataclasses.replace(QEMU, page_offset=None, kernel_text=None, vmcoreinfo=None)
    sources, notes = crash.linux_core_sources(facts, crash.SCHEME_REUSE, None, None)
    assert sources.notes == (Range(0x7D43A400, 368), Range(0x7D53A400, 368))
    assert sources.loads[0] == crash.CoreLoad(0x100000, 0x64F00000, 0xFFFF888000100000, 0x100000)
    assert len(notes) == 3 and any("makedumpfile will need the vmlinux" in n for n in notes)


# Differences from kexec-tools, by kexec-tools-anatomy.md §5 for the same snapshot (it could not be run:
# kexec-tools reads the live /proc, and this host has no crash region and no /proc/kcore):
#   * kexec-tools always uses its backup scheme: PT_LOAD [0x1000, 0x9fc00) with p_offset = its backup
#     segment. kexloader does the same for kernels before 5.13; for 6.1 it leaves [0, 1 MiB) out (as the
#     kernel's kexec_file loader does).
#   * the text PT_LOAD: kexec-tools aligns kcore's vaddr down to 1 MiB and runs to that PT_LOAD's end,
#     page aligned; here both give 0xffffffffa2000000 + 0x3430000 (KASLR aligns _text to 2 MiB).
#   * page_offset: kexec-tools masks kcore's lowest vaddr to 1 GiB; kexloader subtracts a RAM PT_LOAD's
#     p_paddr from its p_vaddr: both 0xff3c028180000000 here.
#   * the elfcorehdr segment: kexec-tools reserves at least 16 KiB, kexloader one page (400 bytes used).
KEXEC_TOOLS_QEMU_LOADS = [  # (paddr, size, vaddr) of its RAM PT_LOADs, text first
    (0x2F200000, 0x3430000, 0xFFFFFFFFA2000000),
    (0x1000, 0x9EC00, QEMU_PO + 0x1000),  # p_offset = its backup segment
    (0x100000, 0x64F00000, QEMU_PO + 0x100000),
    (0x7D000000, 0x2FE0000, QEMU_PO + 0x7D000000),
]


def test_pt_loads_against_kexec_tools_documented_layout():
    def loads(raw):
        return [(p.p_paddr, p.p_memsz, p.p_vaddr) for p in elfcore.parse_headers(raw).phdrs if p.p_type == PT_LOAD]

    backup = header_of(QEMU, crash.SCHEME_BACKUP, Range(0x7CF00000, 0x9F000), Range(0x1000, 0x9EC00))
    assert loads(backup) == KEXEC_TOOLS_QEMU_LOADS
    reuse = loads(header_of(QEMU))
    assert [x for x in KEXEC_TOOLS_QEMU_LOADS if x not in reuse] == [(0x1000, 0x9EC00, QEMU_PO + 0x1000)]


def test_xen_can_reuse_the_builder_with_machine_ranges():
    # dom0 path (interfaces.md §4.7): Xen's pCPU notes and VMCOREINFO_XEN, no text, machine RAM minus the area
    ram = [Range(0x100000, 0x7FF00000), Range(0x100000000, 0x80000000)]
    loads = crash.ram_loads(ram, [Range(0x60000000, 0x10000000)], crash.DEFAULT_PAGE_OFFSET)
    raw = crash.core_header(crash.CoreSources((Range(0x7F001000, 0x254), Range(0x7F002000, 0x1000)), loads))
    assert raw == (ehdr(5) + note(0x7F001000, 0x254) + note(0x7F002000, 0x1000)
                   + load(0x100000, 0x5FF00000, 0xFFFF888000100000)
                   + load(0x70000000, 0x10000000, 0xFFFF888070000000)
                   + load(0x100000000, 0x80000000, 0xFFFF888100000000))


def test_xen_facts_give_xen_notes_and_machine_ram_with_the_backup():
    from kexloader.model import XenFacts

    xen = XenFacts(crash_area=Range(0x60000000, 0x10000000), cpu_notes=((0, Range(0x7F001000, 0x254)),
                                                                        (1, Range(0x7F003000, 0x254))),
                   vmcoreinfo=Range(0x7F002000, 0x1000))
    facts = dataclasses.replace(QEMU, iomem=(), xen=xen, crash_notes=(), kernel_text=None, vmcoreinfo=None)
    sources, _ = crash.xen_core_sources(facts, Range(0x6FF00000, 0x9F000), Range(0, 0x9FC00))
    assert crash.core_header(sources) == (
        ehdr(6) + note(0x7F001000, 0x254) + note(0x7F003000, 0x254) + note(0x7F002000, 0x1000)
        + load(0, 0x9FC00, 0xFFFF888000000000, offset=0x6FF00000)  # the machine map's RAM from 0, copied
        + load(0x100000, 0x5FF00000, 0xFFFF888000100000)
        + load(0x70000000, 0xFFE0000, 0xFFFF888070000000))
    # dom0's own VMCOREINFO (/sys/kernel/vmcoreinfo: a machine address in a PV dom0) follows Xen's
    dom0 = dataclasses.replace(facts, vmcoreinfo=Range(0x12345000, 0x1024))
    sources, said = crash.xen_core_sources(dom0, Range(0x6FF00000, 0x9F000), Range(0, 0x9FC00))
    assert sources.notes[-2:] == (Range(0x7F002000, 0x1000), Range(0x12345000, 0x1024))
    assert any("dom0's VMCOREINFO" in line for line in said)


# ---------------------------------------------------------------------------- the crash kernel's map

def test_crash_memmap_qemu():
    got = crash.crash_memmap(QEMU, [Range(0x1000, 0x9EC00)], [Range(0x7CFFF000, 0x1000)])
    assert got == (MemRegion(Range(0x1000, 0x9EC00), E820_RAM),
                   MemRegion(Range(0x9FC00, 0x400), E820_RESERVED),
                   MemRegion(Range(0xF0000, 0x10000), E820_RESERVED),
                   MemRegion(Range(0x65000000, 0x17FFF000), E820_RAM),  # the region minus the elfcorehdr page
                   MemRegion(Range(0x7FFE0000, 0x20000), E820_RESERVED),  # QEMU's ACPI tables live here
                   MemRegion(Range(0xFFFC0000, 0x40000), E820_RESERVED),
                   MemRegion(Range(0xFD00000000, 0x300000000), E820_RESERVED))


def test_crash_memmap_synthetic_keeps_acpi_types_and_both_regions():
    got = crash.crash_memmap(SYNTH, [Range(0x1000, 0x9E000)], [Range(0x45FFFF000, 0x1000)])
    assert got == (MemRegion(Range(0x1000, 0x9E000), E820_RAM),
                   MemRegion(Range(0x9F000, 0x1000), E820_RESERVED),
                   MemRegion(Range(0xE0000, 0x20000), E820_RESERVED),
                   MemRegion(Range(0xF000000, 0x8000000), E820_RAM),
                   MemRegion(Range(0x7A600000, 0x100000), E820_NVS),
                   MemRegion(Range(0x7A700000, 0x100000), E820_ACPI),
                   MemRegion(Range(0x7A800000, 0x5800000), E820_RESERVED),
                   MemRegion(Range(0xE0000000, 0x10000000), E820_RESERVED),
                   MemRegion(Range(0x440000000, 0x1FFFF000), E820_RAM))


# ------------------------------------------------------------------------------ low-memory decision

@pytest.mark.parametrize("running, target, scheme", [
    ("6.1.0-56-amd64", None, crash.SCHEME_REUSE),
    ("5.13.0", "4.19.0-old (x)", crash.SCHEME_REUSE),  # the crashed kernel decides
    ("5.12.19", "6.8.0 (x)", crash.SCHEME_BACKUP),
    ("4.19.0-26-amd64", None, crash.SCHEME_BACKUP),
    ("", "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP", crash.SCHEME_REUSE),  # stands in
    ("", "5.10.0-30-amd64 (debian-kernel@lists.debian.org)", crash.SCHEME_BACKUP),
    ("", None, crash.SCHEME_BACKUP),  # unknown: the copy is always correct
    ("weird", "", crash.SCHEME_BACKUP),
])
def test_low_memory_scheme(running, target, scheme):
    assert crash.low_memory_scheme(running, target)[0] == scheme


def test_bzimage_release_reads_the_version_string():
    img = bytearray(TINY)
    struct.pack_into("<H", img, 0x20E, 0x100)
    img[0x300:0x320] = b"5.10.0-7-amd64 (a@b) #1 SMP\0".ljust(0x20, b"\0")
    assert crash.bzimage_release(bytes(img)) == "5.10.0-7-amd64 (a@b) #1 SMP"
    struct.pack_into("<H", img, 0x20E, 0)
    assert crash.bzimage_release(bytes(img)) is None
    assert crash.bzimage_release(b"\0" * 100) is None


# -------------------------------------------------------------------------------------------- plans

def crash_plan(facts=QEMU, kernel=TINY, cmdline="console=ttyS0 irqpoll nr_cpus=1 reset_devices", **kw):
    return api.make_plan(LoadRequest(kernel=kernel, kernel_name="tiny", cmdline=cmdline, crash=True, **kw), facts)


def segs(plan):
    return {s.role: s for s in plan.segments}


@pytest.mark.parametrize("facts", [QEMU, SYNTH], ids=["qemu", "synthetic"])
def test_crash_plan_stays_in_the_region_and_leaves_room_for_control_pages(facts):
    plan = crash_plan(facts, initrd=b"I" * 3_000_000, initrd_name="initrd")
    region = facts.crash_regions()[-1]
    assert plan.flags == KEXEC_ARCH_X86_64 | KEXEC_ON_CRASH and plan.crash
    assert set(segs(plan)) == {"kernel", "initrd", "cmdline", "boot-params", "purgatory", "elfcorehdr"}
    for s in plan.segments:
        assert region.contains(s.range), (s.role, s.range)
    assert region.start <= plan.entry < region.end
    lowest = min(s.mem for s in plan.segments)
    assert lowest - region.start >= crash.control_reserve(facts) >= 2 * MiB


def test_crash_plan_zero_page_and_command_line():
    plan = crash_plan(QEMU)
    s = segs(plan)
    hdr = s["elfcorehdr"]
    line = bytes(s["cmdline"].data)
    assert line == (b"console=ttyS0 irqpoll nr_cpus=1 reset_devices acpi_rsdp=0xf59d0 "
                    + f"elfcorehdr={hdr.mem // 1024}K".encode() + b"\0")
    assert bytes(hdr.data) == header_of(QEMU)
    params = bp.BootParams.parse(bytes(s["boot-params"].data))
    e820 = [MemRegion(Range(e.addr, e.size), e.type) for e in params.e820_table[:params.e820_entries]]
    assert tuple(e820) == crash.crash_memmap(QEMU, [Range(0x1000, 0x9EC00)], [hdr.range])
    assert params.acpi_rsdp_addr == 0xF59D0
    assert any("reserves the first MiB" in n for n in plan.notes)


def test_crash_plan_with_a_high_region_puts_everything_there():
    plan = crash_plan(SYNTH)
    assert all(0x440000000 <= s.mem < 0x460000000 for s in plan.segments)
    assert 0x440000000 <= plan.entry < 0x460000000


def test_backup_scheme_plan():
    old = dataclasses.replace(QEMU, os_release="5.10.0-30-amd64")
    plan = crash_plan(old)
    s = segs(plan)
    backup = s["backup"]
    assert backup.memsz == 0x9F000 and backup.bufsz == 0  # zero-filled by the kernel; the purgatory fills it
    assert bytes(s["elfcorehdr"].data) == header_of(old, crash.SCHEME_BACKUP, backup.range, Range(0x1000, 0x9EC00))
    params = bp.BootParams.parse(bytes(s["boot-params"].data))
    ram = [Range(e.addr, e.size) for e in params.e820_table[:params.e820_entries] if e.type == E820_RAM]
    assert ram[0] == Range(0x1000, 0x9EC00)  # the crash kernel may use low memory: it was copied away
    assert not any(r.overlaps(backup.range) or r.overlaps(s["elfcorehdr"].range) for r in ram)
    assert any("backup" in n for n in plan.notes)


def test_backup_scheme_purgatory_copies_low_memory_in_emulation():
    """The whole crash plan's purgatory, run in unicorn from the state relocate_kernel leaves (the purgatory
    tests' Machine maps 64 MiB, so the crash region is moved to [16 MiB, 56 MiB) here)."""
    pytest.importorskip("unicorn")
    import importlib.util
    import random
    import sys

    spec = importlib.util.spec_from_file_location("purgatory_emu", ROOT / "tests/purgatory/purgatory_emu.py")
    emu = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("purgatory_emu", emu)  # dataclasses look their module up
    spec.loader.exec_module(emu)
    facts = dataclasses.replace(QEMU, os_release="4.19.0-old", iomem=tuple(
        dataclasses.replace(e, range=Range(0x1000000, 40 * MiB)) if e.name == "Crash kernel" else e
        for e in QEMU.iomem))
    plan = crash_plan(facts, purgatory=PurgatoryOptions(checks=False))
    backup = segs(plan)["backup"]
    m = emu.Machine()
    for seg in plan.segments:
        m.write(seg.mem, bytes(seg.data) + bytes(seg.memsz - seg.bufsz))
    low = random.Random(7).randbytes(0x9EC00)
    m.write(0x1000, low)
    out = m.run(plan.entry, plan.linux.kernel_entry)
    assert out.reached, out.error
    assert out.regs["rsi"] == plan.linux.boot_params
    assert m.read(backup.mem, len(low)) == low


def test_no_crash_region_is_its_own_error():
    with pytest.raises(NoCrashRegionError, match="no crash kernel region") as e:
        crash_plan(DEVHOST)
    assert "crashkernel=256M" in e.value.hint and "crashkernel=SIZE@BASE" in e.value.hint
    assert e.value.exit_code == 1  # kexec-tools 2.0.25: "Memory for crashkernel is not reserved", die()


def test_too_small_region_says_by_how_much():
    small = dataclasses.replace(QEMU, iomem=tuple(
        dataclasses.replace(e, range=Range(0x7C000000, 8 * MiB)) if e.name == "Crash kernel" else e
        for e in QEMU.iomem))
    with pytest.raises(PlacementError, match=r"needs about \d+ MiB .* \d+ MiB more") as e:
        crash_plan(small, initrd=b"I" * 20 * MiB, initrd_name="initrd")
    assert "crashkernel=" in e.value.hint
    msg = str(e.value)
    need = int(msg.split("needs about ")[1].split(" MiB")[0])
    assert need == 27  # 20 MiB initrd + a page, 4 MiB kernel (init_size), 6 small pages, 2 MiB control pages
    assert f"{need - 8} MiB more" in msg and e.value.hint.startswith("reserve more with crashkernel=64M")


def test_command_line_too_long_with_the_additions():
    extra = len(" acpi_rsdp=0xf59d0 elfcorehdr=2047996K")
    crash_plan(cmdline="x" * (2047 - extra))  # fits exactly
    with pytest.raises(UsageError, match='2048 bytes with kdump\'s "acpi_rsdp=0xf59d0 elfcorehdr=\\d+K"; '
                                         'kernel .* at most 2047'):
        crash_plan(cmdline="x" * (2048 - extra))


def test_a_multiboot_image_cannot_be_a_crash_kernel():
    with pytest.raises(UnsupportedImageError, match="multiboot-x86 image cannot be a crash kernel"):
        crash_plan(kernel=(ROOT / "fixtures/multiboot/tiny-mb1.elf").read_bytes())


# ---------------------------------------------------------------------------------------------- CLI

def run(argv, capsys, backend=None):
    backend = backend or RecordingBackend()
    code = cli.main(argv, backend_factory=lambda: backend)
    out, err = capsys.readouterr()
    return code, out, err, backend


@pytest.mark.parametrize("argv, want", [
    (["-p", "K"], dict(action="load", crash=True, kernel="K")),
    (["-p", "-u"], dict(action="unload", crash=True)),
    (["-u", "-p"], dict(action="unload", crash=True)),
    (["-S", "-p"], dict(action="status", crash=True)),
    (["-p", "-S"], dict(action="status", crash=True)),
    (["--load-panic", "K", "--elf32-core-headers"], dict(action="load", crash=True)),
    (["-p", "K", "--elf64-core-headers"], dict(action="load", crash=True)),
])
def test_p_argv(argv, want):
    o = cli.parse_args(argv)
    for key, value in want.items():
        assert getattr(o, key) == value, key


def test_p_dry_run_on_a_snapshot(capsys):
    code, out, err, _ = run(["-p", str(TINY_PATH), "--append=irqpoll", "--dry-run", f"--facts={QEMU_SNAP}"], capsys)
    assert code == 0, err
    assert "elfcorehdr" in out and "(crash kernel)" in out and "flags 0x3e0001" in out


def test_p_reuse_cmdline_drops_crashkernel(capsys, tmp_path):
    code, out, err, _ = run(["-p", str(TINY_PATH), "--reuse-cmdline", "--append=irqpoll", "--dry-run",
                             f"--facts={SYNTH_SNAP}", f"--plan-out={tmp_path}"], capsys)
    assert code == 0, err
    line = next(tmp_path.glob("*-cmdline-*.bin")).read_bytes()
    assert line.startswith(b"root=/dev/nvme0n1p2 ro quiet irqpoll acpi_rsdp=0x7a7fe014 elfcorehdr=")
    assert b"crashkernel" not in line and b"BOOT_IMAGE" not in line


def test_p_without_region_is_one_line_exit_1(capsys):
    code, out, err, backend = run(["-p", "/nonexistent/vmlinuz", "--dry-run", f"--facts={ROOT}/fixtures/snapshots/devhost.json"],
                                  capsys)
    assert code == 1
    assert err.count("\n") == 1 and "no crash kernel region" in err and "crashkernel=256M" in err
    assert "Traceback" not in err  # and the missing image was never read: the region is checked first


def test_p_u_and_status_reach_the_crash_image(capsys):
    backend = RecordingBackend()
    code, _, err, _ = run(["-p", str(TINY_PATH), "--facts", str(QEMU_SNAP), "--dry-run"], capsys, backend)
    assert code == 0, err
    from kexloader.model import Plan

    backend.plans[True] = Plan(entry=0, flags=KEXEC_ON_CRASH, segments=())
    assert run(["-S", "-p"], capsys, backend)[0] == 1
    assert run(["-S", "-l"], capsys, backend)[0] == 0
    assert run(["-p", "-u"], capsys, backend)[0] == 0
    assert backend.plans == {}
    assert run(["-S"], capsys, backend)[0] == 0


def test_print_ckr_size_is_the_last_region(capsys, monkeypatch):
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: SYNTH)
    code, out, _, _ = run(["--print-ckr-size"], capsys)
    assert (code, out) == (0, f"{512 * MiB}\n")
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: DEVHOST)
    assert run(["--print-ckr-size"], capsys)[:2] == (0, "0\n")


# ------------------------------------------------------------------------------------ golden plans

@pytest.mark.parametrize("snapshot", [QEMU_SNAP, SYNTH_SNAP], ids=lambda p: p.stem)
def test_golden_crash_plan(snapshot, request):
    """The whole -p plan (addresses, sizes, SHA-256 of every segment) for each kdump snapshot; the header and
    e820 inside it are checked by hand above. `pytest --update-golden` rewrites it: review the diff."""
    import json

    from kexloader import plan as plans

    req = LoadRequest(kernel=TINY, kernel_name="tiny.bzImage", cmdline="console=ttyS0 irqpoll nr_cpus=1",
                      initrd=b"initrd" * 1000, initrd_name="initrd.img", crash=True)
    doc = plans.to_json(api.make_plan(req, system.load_snapshot(snapshot)), files=False)
    doc["notes"] = [n for n in doc["notes"] if not n.startswith("facts:")]
    path = ROOT / "fixtures/golden" / f"tiny-bzimage-kdump@{snapshot.stem}.json"
    if request.config.getoption("--update-golden"):
        path.write_text(json.dumps(doc, indent=1) + "\n")
    assert path.exists(), f"no golden plan {path.name}: run pytest --update-golden and review it"
    assert doc == json.loads(path.read_text())
