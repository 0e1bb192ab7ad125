"""--hotplug in the emulated purgatory: a whole crash plan (kexloader's own layout, generated purgatory) runs in
unicorn from relocate_kernel's entry state. The kernel may rewrite the elfcorehdr segment after the load, so
the purgatory must not verify it (as kexec-tools' arch_do_exclude_segment): a rewritten or bit-flipped
elfcorehdr still reaches the crash kernel, a flipped bit in any other segment still stops the hand-off, and
without --hotplug the elfcorehdr is verified like the rest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kexloader import api
from kexloader.model import (E820_RAM, IomemEntry, KernelText, KexecSysfs, LoadRequest, MemRegion, MiB, Range,
                             SystemFacts)

from .purgatory_emu import MEM_SIZE, PROBE, Machine

TINY = (Path(__file__).resolve().parents[2] / "fixtures/bzimage/tiny.bzImage").read_bytes()
ELFCOREHDR_SIZE_73 = 917616  # /sys/kernel/kexec/crash_elfcorehdr_size on Debian's 7.3.4 (measured in QEMU)

CRASH = Range(16 * MiB, 44 * MiB)  # inside the emulator's 64 MiB

FACTS = SystemFacts(
    memmap=(MemRegion(Range(0, MEM_SIZE), E820_RAM),),
    iomem=(IomemEntry(Range(0x1000, 0x9F000), "System RAM"), IomemEntry(Range(0x100000, MEM_SIZE - 0x100000),
                                                                          "System RAM"),
           IomemEntry(CRASH, "Crash kernel", 1)),
    crash_notes=((0, Range(0x3F00000, 368)),), vmcoreinfo=Range(0x3F01000, 0x1024),
    kernel_text=KernelText(0xFFFFFFFF81000000, 0x1000000, 0x1000000), page_offset=0xFFFF888000000000,
    os_release="7.3.4+deb13-amd64",
    kexec=KexecSysfs(directory="/sys/kernel/kexec", crash_size=CRASH.size, crash_elfcorehdr_size=ELFCOREHDR_SIZE_73,
                     cpu_crash_hotplug=0, memory_crash_hotplug=0))


def kernel_with_probe() -> bytes:
    """tiny.bzImage with the emulator's probe at the 64-bit entry (payload + 0x200), so reaching it is seen, and
    init_size cut from 4 MiB to 16 KiB so that the emulated SHA-256 has little to hash."""
    data = bytearray(TINY)
    data[0x260:0x264] = (0x4000).to_bytes(4, "little")
    entry = (data[0x1F1] + 1) * 512 + 0x200
    data[entry:entry + len(PROBE)] = PROBE
    return bytes(data)


def plan_for(hotplug: bool):
    req = LoadRequest(kernel=kernel_with_probe(), kernel_name="tiny", cmdline="console=ttyS0 irqpoll", crash=True,
                      initrd=b"initrd" * 1000, initrd_name="initrd", hotplug=hotplug)
    return api.make_plan(req, FACTS)


def run(plan, change=None):
    """Load every segment (its bytes, then zeros to memsz), apply `change(machine, segments_by_role)`, run."""
    m = Machine()
    for s in plan.segments:
        m.write(s.mem, bytes(s.data) + bytes(s.memsz - s.bufsz))
    if change is not None:
        change(m, {s.role: s for s in plan.segments})
    return m.run(plan.entry, plan.linux.kernel_entry, write_probe=False), m


def flip(role: str, offset: int = 0, bit: int = 0):
    def change(m, segs):
        addr = segs[role].mem + offset
        m.write(addr, bytes([m.read(addr, 1)[0] ^ (1 << bit)]))
    return change


@pytest.fixture(scope="module")
def hotplug_plan():
    plan = plan_for(True)
    assert all(s.range.end <= MEM_SIZE for s in plan.segments), "the plan must fit the emulator's memory"
    return plan


def test_untouched_plan_reaches_the_crash_kernel(hotplug_plan):
    out, _ = run(hotplug_plan)
    assert out.reached, out.error
    assert out.regs["rsi"] == hotplug_plan.linux.boot_params


@pytest.mark.parametrize("offset", [0, 0x40, 0x1000, 4096 * 100])
def test_a_changed_elfcorehdr_is_not_checked(hotplug_plan, offset):
    (hdr,) = [s for s in hotplug_plan.segments if s.role == "elfcorehdr"]
    assert offset < hdr.memsz
    out, _ = run(hotplug_plan, flip("elfcorehdr", offset, 3))
    assert out.reached, out.error


def test_the_kernels_rewritten_header_is_accepted(hotplug_plan):
    """What the kernel does on hotplug: a new, longer header over the whole segment."""
    def rewrite(m, segs):
        hdr = segs["elfcorehdr"]
        m.write(hdr.mem, b"\x7fELF" + bytes(range(256)) * ((hdr.memsz - 4) // 256))
    out, _ = run(hotplug_plan, rewrite)
    assert out.reached, out.error


@pytest.mark.parametrize("role, offset", [("kernel", 0x10), ("boot-params", 0x1E8), ("cmdline", 0), ("initrd", 0)])
def test_every_other_segment_still_stops_the_handoff(hotplug_plan, role, offset):
    out, _ = run(hotplug_plan, flip(role, offset))
    assert not out.reached


def test_without_hotplug_the_elfcorehdr_is_verified():
    plan = plan_for(False)
    assert run(plan)[0].reached
    assert not run(plan, flip("elfcorehdr", 0x40, 3))[0].reached


def test_the_hotplug_plan_differs_only_where_it_must():
    a, b = plan_for(False), plan_for(True)
    roles = lambda p: sorted(s.role for s in p.segments)  # noqa: E731
    assert roles(a) == roles(b)
    ha = [s for s in a.segments if s.role == "elfcorehdr"][0]
    hb = [s for s in b.segments if s.role == "elfcorehdr"][0]
    assert bytes(ha.data) == bytes(hb.data) and hb.memsz > ha.memsz
    assert dataclasses.replace(b, flags=b.flags & ~0x4).flags == a.flags
