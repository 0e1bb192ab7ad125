"""vmcore-dmesg over synthetic vmcores built here: an ELF64 core with a VMCOREINFO note and PT_LOADs holding a
hand-built printk log (the lockless ring of 5.10+, the record log of 3.5-5.9, the character log before), found
through the kernel-image formula, the kernel's page tables or the PT_LOADs' p_vaddr; a Xen dom0 core whose
pseudo-physical pages lie scattered in machine memory behind a p2m tree; and truncated or flipped files, which
give one stderr line and kexec-tools' exit code.

The expected text is written out independently of the reader (the messages themselves, formatted here)."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kexloader import vmcore
from kexloader.formats import elfcore

REPO = Path(__file__).resolve().parents[1]
START = 0xFFFFFFFF80000000
PAGE_OFFSET = 0xFFFF888000000000
MiB = 1 << 20
ID_MASK = (1 << 62) - 1
FINALIZED, RESERVED, REUSABLE = 2, 0, 3

# Linux 6.x x86-64 layouts, as its VMCOREINFO states them (a Debian 6.12 guest's note).
LOCKLESS_INFO = """\
SIZE(printk_ringbuffer)=88
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
OFFSET(printk_ringbuffer.fail)=80
SIZE(prb_desc_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
SIZE(prb_data_blk_lpos)=16
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20
SIZE(prb_data_ring)=32
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(prb_data_ring.head_lpos)=16
OFFSET(prb_data_ring.tail_lpos)=24
SIZE(atomic_long_t)=8
OFFSET(atomic_long_t.counter)=0
"""


# ------------------------------------------------------------------------------------------- the builder

class Machine:
    """Physical memory of a pretend crashed machine, the kernel's symbols and page tables in it."""

    def __init__(self, size: int = 16 * MiB, phys_base: int = 0x100000, levels: int = 4):
        self.ram = bytearray(size)
        self.phys_base = phys_base
        self.levels = levels
        self.next_free = size // 2  # page tables and other allocations from the upper half
        self.pgd = None
        self.info = [f"OSRELEASE=6.1.0-test", "PAGESIZE=4096", f"NUMBER(phys_base)={phys_base}",
                     f"NUMBER(pgtable_l5_enabled)={int(levels == 5)}", "NUMBER(KERNEL_IMAGE_SIZE)=1073741824"]

    # the kernel image: va = START + pa - phys_base
    def image_va(self, pa: int) -> int:
        return START + pa - self.phys_base

    def put(self, pa: int, data: bytes) -> None:
        assert pa + len(data) <= len(self.ram)
        self.ram[pa:pa + len(data)] = data

    def alloc(self, size: int) -> int:
        pa = self.next_free
        self.next_free += -(-size // 4096) * 4096
        assert self.next_free <= len(self.ram)
        return pa

    def table_entry(self, pa: int) -> int:  # what a page-table entry holds for physical pa
        return pa

    def map(self, va: int, pa: int, size: int) -> None:
        """Map [va, va+size) to pa in the kernel's page tables with the biggest pages that fit."""
        if self.pgd is None:
            self.pgd = self.alloc(4096)
            self.info.append(f"SYMBOL(init_top_pgt)={self.image_va(self.pgd):x}")
        off = 0
        while off < size:
            for level, span in ((3, 1 << 30), (2, 1 << 21), (1, 4096)):
                if (va + off) % span == 0 and (pa + off) % span == 0 and size - off >= span:
                    break
            self._set(va + off, pa + off, level)
            off += span

    def _set(self, va: int, pa: int, leaf_level: int) -> None:
        table = self.pgd
        for level in range(self.levels, leaf_level, -1):
            slot = table + ((va >> (12 + 9 * (level - 1))) & 511) * 8
            entry = struct.unpack_from("<Q", self.ram, slot)[0]
            if not entry & 1:
                new = self.alloc(4096)
                struct.pack_into("<Q", self.ram, slot, self.table_entry(new) | 0x63)
                entry = self.table_entry(new) | 0x63
            table = self.phys_of_entry(entry & vmcore.PTE_ADDR_MASK)
        slot = table + ((va >> (12 + 9 * (leaf_level - 1))) & 511) * 8
        struct.pack_into("<Q", self.ram, slot, self.table_entry(pa) | 0x63 | (0x80 if leaf_level > 1 else 0)
                         | (1 << 63))  # NX, as the kernel sets on data

    def phys_of_entry(self, addr: int) -> int:
        return addr


class PrintkRing:
    """A lockless printk ring buffer (kernel/printk/printk_ringbuffer.h) written as the kernel writes it."""

    def __init__(self, count_bits: int = 4, size_bits: int = 9):
        self.count_bits, self.size_bits = count_bits, size_bits
        self.count, self.size = 1 << count_bits, 1 << size_bits
        self.descs = bytearray(24 * self.count)
        self.infos = bytearray(88 * self.count)
        self.data = bytearray(self.size)
        self.next_id = (-(self.count + 1)) & ID_MASK  # DESC0_ID: ids wrap early on purpose
        self.head_lpos = 0
        self.records = []  # (id, begin, next, ts, text)

    def add(self, ts: int, text: bytes, state: int = FINALIZED, dataless: bool = False) -> None:
        rid = self.next_id
        self.next_id = (rid + 1) & ID_MASK
        if dataless:
            begin = nxt = 1  # FAILED_LPOS
        else:
            size = (8 + len(text) + 7) & ~7
            assert size <= self.size // 2
            begin = self.head_lpos
            nxt = begin + size
            at = begin % self.size
            if begin // self.size != nxt // self.size:  # wrapping: stored at the start of the ring
                nxt = (nxt // self.size) * self.size + size
                at = 0
            self.head_lpos = nxt
            self.data[at:at + 8] = struct.pack("<Q", rid)
            self.data[at + 8:at + 8 + len(text)] = text
        self.records = [r for r in self.records if r[0] % self.count != rid % self.count]
        self.records.append((rid, begin, nxt, ts, text, state))

    def visible(self):
        """The records the kernel still has: their data not overwritten, their descriptor not reused."""
        tail_lpos = self.head_lpos - self.size
        return [r for r in self.records if r[1] & 1 or r[1] >= tail_lpos]

    def finish(self):
        recs = self.visible()
        for rid, begin, nxt, ts, text, state in self.records:
            i = rid % self.count
            if (rid, begin) not in {(r[0], r[1]) for r in recs}:
                state = REUSABLE
            struct.pack_into("<QQQ", self.descs, 24 * i, (state << 62) | rid, begin, nxt)
            struct.pack_into("<QQHxxI", self.infos, 88 * i, 0, ts, len(text), 0)
        tail = recs[0][0]
        head = self.records[-1][0]
        return head, tail

    def expected(self) -> bytes:
        out = b""
        for rid, begin, nxt, ts, text, state in self.visible():
            if state != FINALIZED:
                continue
            line = b"[%5d.%06d] " % (ts // 10**9, ts % 10**9 // 1000)
            esc = b"".join(bytes([c]) if 0x20 <= c < 0x7F or c in b"\t\n\v\f\r" else b"\\x%02x" % c for c in text)
            out += line + esc + b"\n"
        return out


def place(m: Machine, data: bytes, where: str) -> int:
    """Put `data` in the kernel image (.bss) or the direct map; its virtual address."""
    pa = m.alloc(len(data))
    m.put(pa, data)
    if where == "image":
        return m.image_va(pa)
    return PAGE_OFFSET + pa


def lockless_machine(ring: PrintkRing, where: str = "image", **kw) -> Machine:
    m = Machine(**kw)
    if where == "direct":
        m.map(PAGE_OFFSET, 0, len(m.ram))
    head, tail = ring.finish()
    descs = place(m, ring.descs, where)
    infos = place(m, ring.infos, where)
    data = place(m, ring.data, where)
    rb = bytearray(88)
    struct.pack_into("<IxxxxQQQQ", rb, 0, ring.count_bits, descs, infos, head, tail)
    struct.pack_into("<IxxxxQQQ", rb, 48, ring.size_bits, data, ring.head_lpos, max(0, ring.head_lpos - ring.size))
    rb_va = place(m, bytes(rb), "image")
    prb_va = place(m, struct.pack("<Q", rb_va), "image")
    m.info += [f"SYMBOL(prb)={prb_va:x}", f"SYMBOL(printk_rb_static)={rb_va:x}"] + LOCKLESS_INFO.splitlines()
    return m


def core_file(phys: bytes, info: list[str] | None, *, loads=None, extra_notes: bytes = b"",
              vaddr_base: int = PAGE_OFFSET) -> bytes:
    """An ELF64 ET_CORE: one PT_NOTE (VMCOREINFO and extra notes), PT_LOADs over `phys` (paddr 0), each
    with p_vaddr = vaddr_base + paddr."""
    notes = extra_notes
    if info is not None:
        notes += elfcore.build_note(b"VMCOREINFO", 0, ("\n".join(info) + "\nCRASHTIME=1796203990").encode())
    loads = loads or [(0, len(phys))]
    data_at = elfcore.EHDR_SIZE + (1 + len(loads)) * elfcore.PHDR_SIZE
    phdrs = [elfcore.Phdr(elfcore.PT_NOTE, 0, data_at, 0, 0, len(notes), len(notes), 0)]
    off = data_at + len(notes)
    off = -(-off // 4096) * 4096
    body = bytearray()
    for start, size in loads:
        phdrs.append(elfcore.Phdr(elfcore.PT_LOAD, 7, off + len(body), (vaddr_base + start) % (1 << 64), start,
                                  size, size, 0))
        body += phys[start:start + size]
    head = elfcore.build_core(phdrs) + notes
    return head + bytes(off - len(head)) + bytes(body)


def run(tmp_path, blob: bytes, name: str = "vmcore"):
    path = tmp_path / name
    path.write_bytes(blob)
    out = io.BytesIO()
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        rc = vmcore.main([str(path)], out=out)
    finally:
        sys.stderr = old
    return rc, out.getvalue(), err.getvalue()


MESSAGES = [b"Linux version 6.1.0-test (debian-kernel@lists.debian.org)", b"Command line: console=ttyS0",
            b"x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'",
            b"caf\xc3\xa9 \x07bell\ttab", b"first line\nsecond line", b"sysrq: Trigger a crash",
            b"Kernel panic - not syncing: sysrq triggered crash"]


def filled_ring(n: int = 7, **kw) -> PrintkRing:
    ring = PrintkRing(**kw)
    for i in range(n):
        ring.add(1_234_567 * i + i * 10**9, MESSAGES[i % len(MESSAGES)] + (b" #%d" % i if i >= 7 else b""))
    return ring


# ------------------------------------------------------------------------------------------------ lockless

def test_lockless_in_the_kernel_image(tmp_path):
    ring = filled_ring()
    m = lockless_machine(ring)
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), m.info))
    assert (rc, err) == (0, "")
    assert out == ring.expected()
    assert out.startswith(b"[    0.000000] Linux version 6.1.0-test")
    assert b"[    1.001234] Command line: console=ttyS0\n" in out
    assert b"caf\\xc3\\xa9 \\x07bell\ttab" in out and b"first line\nsecond line\n" in out
    assert b"sysrq: Trigger a crash" in out


def test_lockless_wrapped_ring_drops_the_oldest_and_skips_unfinished(tmp_path):
    ring = PrintkRing(count_bits=4, size_bits=9)
    for i in range(40):  # 40 records of ~40 bytes through 512 bytes of text and 16 descriptors
        ring.add(i * 10**9 + 5000, b"message %02d " % i + b"x" * (i % 13))
    ring.add(41 * 10**9, b"", dataless=True)
    ring.add(42 * 10**9, b"still being written", state=RESERVED)
    m = lockless_machine(ring)
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), m.info))
    assert (rc, err) == (0, "")
    assert out == ring.expected()
    lines = out.splitlines()
    assert b"message 00" not in out and lines[-2].startswith(b"[   39.000005] message 39")
    assert lines[-1] == b"[   41.000000] "  # a data-less record: its time only, as kexec-tools prints it
    assert b"still being written" not in out
    assert any(r[2] % ring.size < r[1] % ring.size and not r[1] & 1 for r in ring.visible()), "no wrapped block"


@pytest.mark.parametrize("levels", [4, 5])
def test_lockless_in_the_direct_map_through_the_page_tables(tmp_path, levels):
    ring = filled_ring(12)
    m = lockless_machine(ring, where="direct", levels=levels)
    # p_vaddr of the RAM PT_LOAD deliberately wrong (a loader's guess of the randomized direct map): the
    # crashed kernel's own page tables must win
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), m.info, vaddr_base=PAGE_OFFSET + (1 << 30)))
    assert (rc, err) == (0, "")
    assert out == ring.expected()


def test_lockless_by_p_vaddr_when_vmcoreinfo_has_no_page_tables(tmp_path):
    ring = filled_ring()
    m = lockless_machine(ring, where="direct")
    info = [line for line in m.info if "init_top_pgt" not in line]
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), info))
    assert (rc, out) == (0, ring.expected()), err
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), info, vaddr_base=PAGE_OFFSET + (1 << 30)))
    assert rc == vmcore.EXIT_NO_MAPPING and out == b""
    assert err.count("\n") == 1 and "no program header or page table maps virtual address" in err


def test_ram_split_over_several_loads_and_the_module_entry(tmp_path):
    ring = filled_ring()
    m = lockless_machine(ring)
    half = len(m.ram) // 2
    blob = core_file(bytes(m.ram), m.info, loads=[(0, half), (half, len(m.ram) - half)])
    path = tmp_path / "split"
    path.write_bytes(blob)
    got = subprocess.run([sys.executable, "-m", "kexloader.vmcore", str(path)], capture_output=True, cwd=REPO)
    assert (got.returncode, got.stderr) == (0, b"")
    assert got.stdout == ring.expected()


# ------------------------------------------------------------------------------------------- older formats

def record_log_machine(messages, buf_len: int = 1024, first: int = 600) -> tuple[Machine, bytes, dict]:
    """A 3.5-5.9 log_buf: struct printk_log {u64 ts_nsec; u16 len, text_len, dict_len; u8 facility, flags}
    (16 bytes), text, padded to 8, written from `first` on; a zero header at the end marks the wrap to 0."""
    m = Machine()
    buf = bytearray(buf_len)
    idx = first
    for ts, text in messages:
        size = (16 + len(text) + 7) & ~7
        if idx + size + 16 > buf_len:
            buf[idx:idx + 16] = bytes(16)  # the end marker
            idx = 0
        assert not (idx < first <= idx + size) or idx >= first, "the test log overwrites itself"
        struct.pack_into("<QHHHBB", buf, idx, ts, size, len(text), 0, 0, 0)
        buf[idx + 16:idx + 16 + len(text)] = text
        idx += size
    log_buf = place(m, bytes(buf), "direct")
    m.map(PAGE_OFFSET, 0, len(m.ram))
    syms = {}
    for name, value, fmt in (("log_buf", log_buf, "<Q"), ("log_buf_len", buf_len, "<I"),
                             ("log_first_idx", first, "<I"), ("log_next_idx", idx, "<I")):
        syms[name] = place(m, struct.pack(fmt, value), "image")
        m.info.append(f"SYMBOL({name})={syms[name]:x}")
    m.info += ["SIZE(printk_log)=16", "OFFSET(printk_log.ts_nsec)=0", "OFFSET(printk_log.len)=8",
               "OFFSET(printk_log.text_len)=10", "OFFSET(printk_log.dict_len)=12"]
    expected = b"".join(b"[%5d.%06d] " % (ts // 10**9, ts % 10**9 // 1000) + text + b"\n" for ts, text in messages)
    return m, expected, syms


def test_record_log_of_linux_3_5_to_5_9_with_a_wrap(tmp_path):
    msgs = [(i * 10**9 + 999_999, b"record %d " % i + b"y" * (i * 7 % 29)) for i in range(17)]
    m, expected, _ = record_log_machine(msgs)
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), m.info))
    assert (rc, err) == (0, "")
    assert out == expected and b"record 16" in out


def test_record_log_cycle_is_exit_68(tmp_path):
    m, _, syms = record_log_machine([(1, b"only")], first=0)
    # log_first_idx at the zero header after the only record, log_next_idx unreachable: it wraps twice
    m.put(syms["log_first_idx"] - m.image_va(0), struct.pack("<I", 24))
    m.put(syms["log_next_idx"] - m.image_va(0), struct.pack("<I", 8))
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), m.info))
    assert rc == vmcore.EXIT_REC_CYCLE and err.count("\n") == 1 and "corrupt" in err, err
    assert out == b"[    0.000000] only\n"


def test_character_log_before_3_5(tmp_path):
    m = Machine()
    text = b"".join(b"<6>line %d\n" % i for i in range(100))
    buf_len = 256
    ring = bytearray(buf_len)
    for i, c in enumerate(text):
        ring[i % buf_len] = c
    log_buf = place(m, bytes(ring), "image")
    for name, value, fmt in (("log_buf", log_buf, "<Q"), ("log_end", len(text), "<I"),
                             ("log_buf_len", buf_len, "<I"), ("logged_chars", buf_len, "<I")):
        m.info.append(f"SYMBOL({name})={place(m, struct.pack(fmt, value), 'image'):x}")
    rc, out, err = run(tmp_path, core_file(bytes(m.ram), m.info))
    assert (rc, err) == (0, "")
    assert out == text[-buf_len:]


# ----------------------------------------------------------------------------------------------------- Xen

class PvMachine(Machine):
    """A Xen PV dom0: `ram` is its pseudo-physical memory; page-table entries hold machine addresses."""

    def __init__(self, p2m: list[int], **kw):
        super().__init__(**kw)
        self.p2m = p2m
        self.m2p = {mfn: pfn for pfn, mfn in enumerate(p2m)}

    def table_entry(self, pa: int) -> int:
        return self.p2m[pa // 4096] * 4096 + pa % 4096

    def phys_of_entry(self, addr: int) -> int:
        return self.m2p[addr // 4096] * 4096


def xen_core(m: PvMachine, machine_pages: int, crash_info_size: int = 80, with_info: bool = True) -> bytes:
    """Machine memory holding dom0's pages where its p2m says, the p2m tree in free machine frames, Xen's
    notes (PRSTATUS, crash info, VMCOREINFO_XEN) and dom0's VMCOREINFO."""
    machine = bytearray(machine_pages * 4096)
    for pfn, mfn in enumerate(m.p2m):
        machine[mfn * 4096:(mfn + 1) * 4096] = m.ram[pfn * 4096:(pfn + 1) * 4096]
    free = sorted(set(range(machine_pages)) - set(m.p2m), reverse=True)
    leaves = []
    for first in range(0, len(m.p2m), 512):
        mfn = free.pop()
        entries = m.p2m[first:first + 512] + [(1 << 64) - 1] * (512 - len(m.p2m[first:first + 512]))
        machine[mfn * 4096:(mfn + 1) * 4096] = struct.pack("<512Q", *entries)
        leaves.append(mfn)
    mid = free.pop()
    machine[mid * 4096:mid * 4096 + 8 * len(leaves)] = struct.pack(f"<{len(leaves)}Q", *leaves)
    top = free.pop()
    machine[top * 4096:top * 4096 + 8] = struct.pack("<Q", mid)
    words = [4, 17, 0, 0, 0, 0, 0, 0, 0x7E000000, top][:crash_info_size // 8]
    notes = (elfcore.build_note(b"CORE", 1, bytes(336))
             + elfcore.build_note(b"Xen", 0x1000002, bytes(32))
             + elfcore.build_note(b"Xen", vmcore.XEN_ELFNOTE_CRASH_INFO, struct.pack(f"<{len(words)}Q", *words))
             + elfcore.build_note(b"VMCOREINFO_XEN", 0, b"SYMBOL(frame_table)=ffff82e000000000\n"))
    return core_file(bytes(machine), m.info if with_info else None, extra_notes=notes)


def pv_p2m(pages: int, machine_pages: int, seed: int = 7) -> list[int]:
    frames = list(range(16, machine_pages))
    random.Random(seed).shuffle(frames)
    return frames[:pages]


@pytest.mark.parametrize("where", ["image", "direct"])
def test_xen_dom0_core_through_the_p2m(tmp_path, where):
    pages = 16 * MiB // 4096
    m = PvMachine(pv_p2m(pages, 2 * pages + 64))
    if where == "direct":
        for pfn in range(pages):  # PV: 4 KiB pages only
            m.map(PAGE_OFFSET + pfn * 4096, pfn * 4096, 4096)
    ring = filled_ring(9)
    head, tail = ring.finish()
    descs, infos, data = (place(m, b, where) for b in (ring.descs, ring.infos, ring.data))
    rb = bytearray(88)
    struct.pack_into("<IxxxxQQQQ", rb, 0, ring.count_bits, descs, infos, head, tail)
    struct.pack_into("<IxxxxQQQ", rb, 48, ring.size_bits, data, ring.head_lpos, 0)
    rb_va = place(m, bytes(rb), "image")
    m.info += [f"SYMBOL(prb)={place(m, struct.pack('<Q', rb_va), 'image'):x}"] + LOCKLESS_INFO.splitlines()
    rc, out, err = run(tmp_path, xen_core(m, 2 * pages + 64))
    assert (rc, err) == (0, "")
    assert out == ring.expected() and b"sysrq: Trigger a crash" in out


def test_xen_core_without_dom0_vmcoreinfo_says_why(tmp_path):
    pages = 1024
    m = PvMachine(pv_p2m(pages, 2 * pages + 64))
    rc, out, err = run(tmp_path, xen_core(m, 2 * pages + 64, with_info=False))
    assert rc == 50 and out == b""
    assert err.count("\n") == 1 and "VMCOREINFO_XEN but not dom0's VMCOREINFO" in err


# ---------------------------------------------------------------------------------------- hostile files

@pytest.fixture(scope="module")
def good_core():
    ring = filled_ring(12)
    m = lockless_machine(ring, where="direct", size=2 * MiB)
    return core_file(bytes(m.ram), m.info), ring.expected()


@pytest.mark.parametrize("blob, code, words", [
    pytest.param(b"", 3, "e_ident", id="empty"),
    pytest.param(b"\x7fEL", 3, "e_ident", id="short"),
    pytest.param(b"MZ" + bytes(100), 4, "not an ELF file", id="not-elf"),
    pytest.param(b"\x7fELF\x02\x01\x02" + bytes(57), 5, "ELF version", id="ident-version"),
    pytest.param(b"\x7fELF\x01\x01\x01" + bytes(57), 6, "ELF64", id="elf32"),
    pytest.param(b"\x7fELF\x02\x02\x01" + bytes(57), 7, "little-endian", id="big-endian"),
    pytest.param(b"\x7fELF\x02\x01\x01" + bytes(20), 10, "ELF header", id="cut-ehdr"),
])
def test_bad_headers(tmp_path, blob, code, words):
    rc, out, err = run(tmp_path, blob)
    assert rc == code and out == b"" and err.count("\n") == 1 and words in err, (rc, err)
    assert err.startswith("vmcore-dmesg: ")


def test_truncated_cores_give_one_line_and_kexec_tools_codes(tmp_path, good_core):
    blob, expected = good_core
    phnum = struct.unpack_from("<H", blob, 0x38)[0]
    codes = {}
    for cut in (63, 64, 100, 64 + phnum * 56 - 1, 64 + phnum * 56 + 10, 4096, 4096 * 5, len(blob) // 2,
                len(blob) - 4096, len(blob) - 1):
        rc, out, err = run(tmp_path, blob[:cut])
        codes[cut] = rc
        if rc == 0:  # the cut spared everything the log needs
            assert (out, err) == (expected, ""), cut
            continue
        assert err.count("\n") == 1 and "Traceback" not in err, (cut, rc, err)
        assert expected.startswith(out), cut  # what came out before the failure is right
    assert codes[63] == 10 and codes[100] == 16 and codes[64 + phnum * 56 + 10] == 22
    assert codes[len(blob) - 1] in (0, 30, 40, 65) and set(codes.values()) <= {0, 10, 16, 22, 30, 40, 41, 50, 64, 65}
    assert 40 in codes.values() or 65 in codes.values()


def test_flipped_bytes_never_escape_as_a_traceback(tmp_path, good_core):
    blob, _ = good_core
    rnd = random.Random(13)
    # the header, the notes and the ring's metadata are where a flip changes the walk
    hot = list(range(0, 4096)) + [rnd.randrange(len(blob)) for _ in range(200)]
    for n in range(150):
        bad = bytearray(blob)
        for _ in range(rnd.choice((1, 2, 8))):
            bad[rnd.choice(hot)] ^= 1 << rnd.randrange(8)
        rc, out, err = run(tmp_path, bytes(bad), f"mutant{n % 4}")
        assert "Traceback" not in err and err.count("\n") <= 1, (n, err)
        assert rc == 0 or err, n


def test_missing_file_and_usage(tmp_path, capsys):
    assert vmcore.main([str(tmp_path / "nope")]) == 2
    assert "cannot open" in capsys.readouterr().err
    assert vmcore.main([]) == 1 and vmcore.main(["a", "b"]) == 1
    assert "usage: vmcore-dmesg <kernel core file>" in capsys.readouterr().err


def test_console_script_is_declared():
    import tomllib
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vmcore-dmesg"] == "kexloader.vmcore:entry_point"


# ------------------------------------------------------------------------- dom0's VMCOREINFO in the facts

@pytest.mark.parametrize("guest_type, expected", [("PV", (0x12345000, 0x1024)), ("PVH", None)])
def test_dom0_facts_carry_its_vmcoreinfo_when_pv(tmp_path, monkeypatch, guest_type, expected):
    from kexloader import system
    from kexloader.model import Range, XenFacts

    for path, text in {"sys/hypervisor/type": "xen\n", "sys/hypervisor/guest_type": guest_type + "\n",
                       "proc/xen/capabilities": "control_d\n", "proc/cmdline": "console=hvc0\n",
                       "sys/kernel/vmcoreinfo": "12345000 1024\n"}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    monkeypatch.setattr(system, "read_xen_facts", lambda: ((), XenFacts(crash_area=Range(0x60000000, 1 << 28))))
    facts = system.read_facts(tmp_path)
    assert facts.xen is not None
    assert (facts.vmcoreinfo and (facts.vmcoreinfo.start, facts.vmcoreinfo.size)) == (expected or None)
