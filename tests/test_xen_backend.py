"""The Xen dom0 backend against a fake hypervisor that reads our hypercall buffers like Xen 4.17 would."""

import ctypes
import errno
import mmap
import struct

import pytest

from kexloader import hypercall
from kexloader.backends import xen
from kexloader.errors import BackendError
from kexloader.formats import xen as x
from kexloader.kexec_abi import KEXEC_ARCH_X86_64, KEXEC_ON_CRASH
from kexloader.model import MAP_ONLY, Plan, Range, Segment


class AnonBuffer(hypercall.HypercallBuffer):
    """Anonymous memory in place of /dev/xen/hypercall."""

    def __init__(self, size):
        self.map = mmap.mmap(-1, max(size, 1) + 4096)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.base = ctypes.addressof(self._anchor)
        self.used = 0


def peek(addr, size):
    return ctypes.string_at(addr, size)


class FakeXen:
    """kexec_op as xen/common/kexec.c does it, including the status bit that flips on every load/unload."""

    def __init__(self, cpus=2):
        self.slots = {0: None, 1: None}
        self.pos_bit = {0: 0, 1: 0}
        self.cpus = cpus
        self.loads = []

    def __call__(self, op, *args):
        if op == x.HYPERVISOR_memory_op:
            assert args[0] == x.XENMEM_machine_memory_map
            hdr = x.XenMemoryMap.parse(peek(args[1], 16))
            entries = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0x100000, 0x7FF00000, 1), (0xFEC00000, 0x1000, 2)]
            raw = b"".join(struct.pack("<QQI", *e) for e in entries)
            ctypes.memmove(hdr.buffer, raw, len(raw))
            ctypes.memmove(args[1], struct.pack("<I", len(entries)), 4)
            return 0
        cmd, arg = args[0], args[1]
        if cmd == x.KEXEC_CMD_kexec_get_range:
            r = x.XenKexecRange.parse(peek(arg, 24))
            if r.range == x.KEXEC_RANGE_MA_CPU:
                if r.nr >= self.cpus:
                    return -errno.ERANGE
                start, size = 0x7F000000 + r.nr * 0x1000, 0x200
            else:
                start, size = {x.KEXEC_RANGE_MA_CRASH: (0x10000000, 0x8000000),
                               x.KEXEC_RANGE_MA_VMCOREINFO: (0x7E000000, 0x1000)}.get(r.range, (0, 0))
            ctypes.memmove(arg + 8, struct.pack("<QQ", size, start), 16)
            return 0
        if cmd == x.KEXEC_CMD_kexec_load:
            load = x.XenKexecLoad.parse(peek(arg, 24))
            segs = [x.XenKexecSegment.parse(peek(load.segments + 32 * i, 32)) for i in range(load.nr_segments)]
            data = [peek(s.buf, s.buf_size) if s.buf else None for s in segs]
            self.loads.append((load, segs, data))
            self._swap(load.type, (load, segs))
            return 0
        if cmd == x.KEXEC_CMD_kexec_unload:
            self._swap(peek(arg, 1)[0], None)
            return 0
        if cmd == x.KEXEC_CMD_kexec_status:
            return self.pos_bit[peek(arg, 1)[0]]
        return -errno.ENOSYS

    def _swap(self, kind, image):
        self.slots[kind] = image
        self.pos_bit[kind] ^= 1  # change_bit(), loaded or not


@pytest.fixture
def fake(monkeypatch):
    hv = FakeXen()
    monkeypatch.setattr(hypercall, "raw_hypercall", hv)
    monkeypatch.setattr(hypercall, "HypercallBuffer", AnonBuffer)
    return hv


def plan(crash=False):
    return Plan(entry=0x1000000, flags=KEXEC_ARCH_X86_64 | (KEXEC_ON_CRASH if crash else 0), segments=(
        Segment("kernel", 0x1000000, 0x3000, b"K" * 5000),
        Segment("boot-params", 0x2000000, 0x1000, b"Z" * 4096),
        Segment("empty", 0x3000000, 0x1000, b""),
        Segment(MAP_ONLY, 0, 0x100000, b""),
    ))


def test_load_lays_out_what_xen_reads(fake):
    xen.XenKexecBackend().load(plan())
    load, segs, data = fake.loads[-1]
    assert (load.type, load.arch, load.nr_segments, load.entry_maddr) == (0, 62, 4, 0x1000000)
    by_dest = {s.dest_maddr: (s, d) for s, d in zip(segs, data)}
    assert by_dest[0x1000000][1] == b"K" * 5000 and by_dest[0x1000000][0].dest_size == 0x3000
    assert by_dest[0x3000000][0].buf != 0 and by_dest[0x3000000][0].buf_size == 0  # zero-filled by Xen
    assert by_dest[0][0].buf == 0 and by_dest[0][0].dest_size == 0x100000  # map only


def test_status_stays_true_through_reloads_and_unloads(fake):
    b = xen.XenKexecBackend()
    assert not b.loaded(False)
    b.unload(False)  # nothing loaded: must not flip Xen's bit
    assert not b.loaded(False)
    b.load(plan())
    assert b.loaded(False)
    b.load(plan())  # a second load: without care Xen would now say "not loaded"
    assert b.loaded(False) and fake.slots[0] is not None
    b.unload(False)
    assert not b.loaded(False) and fake.slots[0] is None
    b.load(plan(crash=True))
    assert b.loaded(True) and not b.loaded(False)


def test_ranges_and_machine_map(fake):
    assert hypercall.get_range(x.KEXEC_RANGE_MA_CRASH) == Range(0x10000000, 0x8000000)
    assert hypercall.get_range(x.KEXEC_RANGE_MA_XEN) is None
    assert [c for c, _ in hypercall.cpu_note_ranges()] == [0, 1]
    regions = hypercall.machine_memory_map()
    assert [r.range for r in regions if r.is_ram] == [Range(0, 0x9FC00), Range(0x100000, 0x7FF00000)]


def test_errors_become_sentences(monkeypatch):
    monkeypatch.setattr(hypercall, "raw_hypercall", lambda *a: -errno.EPERM)
    monkeypatch.setattr(hypercall, "HypercallBuffer", AnonBuffer)
    with pytest.raises(BackendError, match="may not use kexec") as e:
        xen.XenKexecBackend().loaded(False)
    assert e.value.exit_code == 255 and "only from dom0" in e.value.hint


def test_too_many_segments_for_xen(fake):
    segs = tuple(Segment("s", 0x1000000 + i * 0x1000, 0x1000, b"x") for i in range(16))
    with pytest.raises(BackendError, match="at most 15"):
        xen.XenKexecBackend().load(Plan(entry=0x1000000, flags=KEXEC_ARCH_X86_64, segments=segs))


def test_linux_backend_refuses_a_xen_plan():
    from kexloader.backends.linux import LinuxKexecBackend
    with pytest.raises(BackendError, match="made for a Xen dom0"):
        LinuxKexecBackend().load(plan())


def test_no_crash_area_means_no_cpu_notes(fake, monkeypatch):
    def without_crash_area(op, *args):
        if op == x.HYPERVISOR_kexec_op and args[0] == x.KEXEC_CMD_kexec_get_range:
            r = x.XenKexecRange.parse(peek(args[1], 24))
            if r.range == x.KEXEC_RANGE_MA_CPU:
                return -errno.EINVAL  # Xen 4.17 kexec_get_cpu() without crash_notes
        return fake(op, *args)

    monkeypatch.setattr(hypercall, "raw_hypercall", without_crash_area)
    assert hypercall.cpu_note_ranges() == []
