"""System facts: readers over a fake root, /proc/iomem parsing, snapshots."""

import json
import os
import struct
from pathlib import Path

import pytest

from kexloader import snapshot, system
from kexloader.errors import SystemFactsError
from kexloader.model import E820_ACPI, E820_RAM, E820_RESERVED, Range

SNAPSHOTS = Path(__file__).resolve().parent.parent / "fixtures" / "snapshots"

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-7ffdffff : System RAM
  01000000-01e01a5f : Kernel code
  01e01a60-0273a7ff : Kernel data
  67000000-7effffff : Crash kernel
7ffe0000-7fffffff : Reserved
fee00000-fee00fff : Local APIC
100000000-17fffffff : System RAM
"""


def make_root(tmp_path: Path, memmap, boot_params: bytes | None = None, iomem: str = IOMEM) -> Path:
    for i, (start, last, kind) in enumerate(memmap):
        d = tmp_path / "sys/firmware/memmap" / str(i)
        d.mkdir(parents=True)
        (d / "start").write_text(f"0x{start:x}\n")
        (d / "end").write_text(f"0x{last:x}\n")
        (d / "type").write_text(kind + "\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/iomem").write_text(iomem)
    (tmp_path / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/vda crashkernel=384M quiet\n")
    if boot_params is not None:
        (tmp_path / "sys/kernel/boot_params").mkdir(parents=True)
        (tmp_path / "sys/kernel/boot_params/data").write_bytes(boot_params)
    return tmp_path


MEMMAP = [(0, 0x9FBFF, "System RAM"), (0x9FC00, 0x9FFFF, "Reserved"), (0xF0000, 0xFFFFF, "Reserved"),
          (0x100000, 0x7FFDFFFF, "System RAM"), (0x7FFE0000, 0x7FFFFFFF, "Reserved"),
          (0xFD000000, 0xFD00FFFF, "ACPI Tables"), (0x100000000, 0x17FFFFFFF, "System RAM")]


def test_read_facts_from_a_fake_root(tmp_path):
    page = bytearray(4096)
    struct.pack_into("<Q", page, 0x70, 0xF5A40)
    facts = system.read_facts(make_root(tmp_path, reversed(MEMMAP), bytes(page)))
    assert [r.range for r in facts.memmap][:2] == [Range(0, 0x9FC00), Range(0x9FC00, 0x400)]
    assert facts.ram() == (Range(0, 0x9FC00), Range(0x100000, 0x7FEE0000), Range(0x100000000, 0x80000000))
    assert facts.memmap[5].type == E820_ACPI and facts.memmap[1].type == E820_RESERVED
    assert facts.acpi_rsdp == 0xF5A40
    assert facts.crash_regions() == (Range(0x67000000, 0x18000000),)
    assert facts.cmdline.startswith("BOOT_IMAGE=")


def test_iomem_fallback_without_firmware_memmap(tmp_path):
    facts = system.read_facts(make_root(tmp_path, []))
    assert facts.ram() == (Range(0x1000, 0x9EC00), Range(0x100000, 0x7FEE0000), Range(0x100000000, 0x80000000))
    assert facts.boot_params is None and facts.acpi_rsdp is None


def test_iomem_nesting_depth():
    entries = system.parse_iomem(IOMEM)
    code = next(e for e in entries if e.name == "Kernel code")
    assert code.depth == 1 and code.range == Range(0x1000000, 0xE01A60)


def test_no_ram_at_all_is_a_clear_error(tmp_path):
    with pytest.raises(SystemFactsError, match="no System RAM"):
        system.read_facts(make_root(tmp_path, [], iomem="00000000-00000fff : Reserved\n"))


def test_snapshot_roundtrip(tmp_path):
    facts = system.read_facts(make_root(tmp_path / "root", MEMMAP, bytes(range(256)) * 16))
    path = tmp_path / "snap.json"
    snapshot.save_snapshot(facts, path)
    again = snapshot.load_snapshot(path)
    assert again.memmap == facts.memmap and again.boot_params == facts.boot_params
    assert again.iomem == facts.iomem and again.cmdline == facts.cmdline


@pytest.mark.parametrize("content, words", [
    ("not json", "not JSON"),
    (json.dumps({"version": 99, "memmap": []}), "snapshot version 99"),
    (json.dumps({"version": 1}), "not a kexloader snapshot"),
])
def test_bad_snapshots(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SystemFactsError, match=words):
        snapshot.load_snapshot(path)


@pytest.mark.parametrize("path", sorted(SNAPSHOTS.glob("*.json")), ids=lambda p: p.stem)
def test_committed_snapshots_load(path):
    facts = snapshot.load_snapshot(path)
    assert any(r.type == E820_RAM for r in facts.memmap)
    assert facts.boot_params is None or len(facts.boot_params) == 4096


@pytest.mark.parametrize("files, role", [
    ({}, None),
    ({"sys/hypervisor/type": "xen\n", "sys/hypervisor/guest_type": "HVM\n"}, None),  # Linux's own kexec works
    ({"sys/hypervisor/type": "xen\n", "sys/hypervisor/guest_type": "PV\n",
      "proc/xen/capabilities": "control_d\n"}, "dom0"),
    ({"sys/hypervisor/type": "xen\n", "sys/hypervisor/guest_type": "PV\n", "proc/xen/capabilities": ""}, "domU"),
    ({"sys/hypervisor/type": "kvm\n"}, None),
])
def test_xen_role(tmp_path, files, role):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert system.xen_role(tmp_path) == role


def test_xen_without_xenfs_says_how_to_mount_it(tmp_path):
    (tmp_path / "sys/hypervisor").mkdir(parents=True)
    (tmp_path / "sys/hypervisor/type").write_text("xen\n")
    (tmp_path / "sys/hypervisor/guest_type").write_text("PV\n")
    with pytest.raises(SystemFactsError) as e:
        system.xen_role(tmp_path)
    assert "mount -t xenfs" in e.value.hint


def test_a_domu_is_refused(tmp_path):
    for name, text in {"sys/hypervisor/type": "xen\n", "sys/hypervisor/guest_type": "PV\n",
                       "proc/xen/capabilities": ""}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemFactsError, match="domU"):
        system.read_facts(tmp_path)


@pytest.mark.parametrize("argv, make, code, words", [
    (["show", "{tmp}/fifo"], lambda t: os.mkfifo(t / "fifo"), 1, "a FIFO, not a regular file"),
    (["show", "{tmp}/bad.json"], lambda t: (t / "bad.json").write_text('{"version": 1, "memmap": [[0, NaN, 1]]}'), 1,
     "NaN is not a number"),
    (["show", "{tmp}/nothing.json"], lambda t: None, 1, "No such file"),
    (["save"], lambda t: None, 1, "usage: python3 -m kexloader.system"),
])
def test_system_main_says_one_line(argv, make, code, words, tmp_path, capsys):
    make(tmp_path)
    assert system.main([a.format(tmp=tmp_path) for a in argv]) == code
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_cmdline_bytes_that_are_not_utf8_are_kept(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_bytes(b"root=/dev/vda label=\xff\xfe\n")
    line = system.read_cmdline(tmp_path)
    assert line.encode("utf-8", "surrogateescape") == b"root=/dev/vda label=\xff\xfe"
