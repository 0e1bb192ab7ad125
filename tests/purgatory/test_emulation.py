"""Whole purgatories run in unicorn from the entry state the kernel or Xen leaves: the checks of the loaded
segments (SHA-256 of the bytes handed over, zero fills still zero), the 64->32-bit multiboot path, the kdump
backup copy and the console."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import capstone
import pytest

from kexloader.errors import NotSupportedYet
from kexloader.handoff import segments_digest, zero_fills
from kexloader.model import PurgatoryOptions
from kexloader.purgatory.program import (Backup, Linux64Handoff, Multiboot32Handoff, PurgatoryError, Region,
                                         build_purgatory, purgatory_size)

from .purgatory_emu import PROBE, Machine

PURG = 0x100000
MB1_MAGIC, MB2_MAGIC = 0x2BADB002, 0x36D76289


@dataclass
class Seg:
    mem: int
    data: bytes
    memsz: int

    @property
    def bufsz(self) -> int:
        return len(self.data)

    @property
    def fill(self) -> tuple[int, int]:
        """[start, end) of the zero fill."""
        return self.mem + len(self.data), self.mem + self.memsz


def linux_segments(seed: int = 1) -> tuple[list[Seg], Linux64Handoff]:
    rng = random.Random(seed)
    kernel = bytearray(rng.randbytes(5000))
    kernel[0x200:0x203] = PROBE  # the 64-bit entry is hashed too, so the probe is part of the image
    # zero fills: none; 4068 bytes from an odd address; 7288 bytes; 1096 bytes (64-byte steps, then a tail)
    segs = [Seg(0x90000, rng.randbytes(4096), 0x1000),  # boot_params
            Seg(0x91000, b"console=ttyS0 root=/dev/vda\0", 0x1000),  # command line
            Seg(0x1000000, bytes(kernel), 0x3000),  # kernel: data + zero fill
            Seg(0x2000000, rng.randbytes(3000), 0x1000)]  # initrd
    return segs, Linux64Handoff(boot_params=0x90000, kernel_entry=0x1000200)


def multiboot_segments(seed: int = 2) -> tuple[list[Seg], Multiboot32Handoff]:
    rng = random.Random(seed)
    xen = bytearray(rng.randbytes(6000))
    xen[0:3] = PROBE  # entry at the start of the image, like Xen's `start`
    segs = [Seg(0x200000, bytes(xen), 0x2000),  # hypervisor
            Seg(0x400000, rng.randbytes(700), 0x1000),  # multiboot info, strings
            Seg(0x800000, rng.randbytes(8192), 0x2000)]  # module
    return segs, Multiboot32Handoff(magic=MB1_MAGIC, info=0x400000, entry=0x200000)


def run(segs, handoff, *, options=PurgatoryOptions(), backup=None, checks=True, sha_ni=None,
        digest=None, flip=None, extra=(), base=PURG, emulate_sha=False):
    regions, loader_digest = segments_digest(segs) if checks else ((), None)
    zeros = zero_fills(segs) if checks else ()
    img = build_purgatory(base, handoff, regions=regions, zeros=zeros,
                          digest=(digest or loader_digest) if checks else None, options=options, backup=backup)
    m = Machine(sha_ni=sha_ni, emulate_sha=emulate_sha)
    for s in segs:
        m.write(s.mem, s.data)
    for addr, data in extra:
        m.write(addr, data)
    if flip is not None:
        addr, bit = flip
        m.write(addr, bytes([m.read(addr, 1)[0] ^ (1 << bit)]))
    m.write(base, img.code)
    target = handoff.kernel_entry if isinstance(handoff, Linux64Handoff) else handoff.entry
    out = m.run(img.entry, target, write_probe=False)  # the probe is part of the (hashed) image
    return out, m, img


# ------------------------------------------------------------------------------------- digest

def test_linux_with_checks_reaches_the_kernel():
    segs, h = linux_segments()
    out, m, img = run(segs, h)
    assert out.reached, out.error
    assert out.regs["rsi"] == h.boot_params and out.regs["rbx"] == 0 and out.regs["cs"] == 0x10
    assert out.regs["cr4"] == 0x20, "CR4 must be back to the entry value (PAE only)"
    assert PURG <= out.regs["rsp"] <= PURG + img.memsz
    assert out.mode_at_target == 64


def test_elf_boot_notes_handoff_sets_rdi():
    segs, h = linux_segments()
    h = Linux64Handoff(boot_params=0, kernel_entry=h.kernel_entry, rdi=0x91000)  # kexec-tools' --args-elf
    out, m, img = run(segs, h)
    assert out.reached, out.error
    assert out.regs["rdi"] == 0x91000 and out.regs["rsi"] == 0 and out.regs["rbx"] == 0


def _hashed_positions():
    """First, middle and last byte handed over, in every segment."""
    segs, h = linux_segments()
    for i, s in enumerate(segs):
        for where, off in (("first", 0), ("middle", len(s.data) // 2), ("last", len(s.data) - 1)):
            if s.mem + off not in range(h.kernel_entry, h.kernel_entry + len(PROBE)):  # has its own test
                yield pytest.param(s.mem + off, off % 8, id=f"seg{i}-{where}")


def _fill_positions():
    """First, middle and last byte of every zero fill, and both sides of where its 64-byte steps end."""
    segs, _ = linux_segments()
    for i, s in enumerate(segs):
        start, end = s.fill
        steps_end = start + (end - start) // 64 * 64
        for where, addr in (("first", start), ("middle", (start + end) // 2), ("last", end - 1),
                            ("last-of-steps", steps_end - 1), ("first-of-tail", steps_end)):
            if start < end:
                yield pytest.param(addr, addr % 8, id=f"seg{i}-fill-{where}")


def test_every_zero_fill_has_steps_and_a_tail():
    segs, _ = linux_segments()
    fills = [s.fill for s in segs if s.fill[0] < s.fill[1]]
    assert len(fills) == 3 and all((end - start) >= 64 and (end - start) % 64 for start, end in fills)


@pytest.mark.parametrize("addr, bit", list(_hashed_positions()) + list(_fill_positions()))
def test_one_flipped_bit_stops_the_handoff(addr, bit):
    """A flipped bit in a hashed byte changes the SHA-256; in a zero fill, it makes a byte non-zero."""
    segs, h = linux_segments()
    out, m, img = run(segs, h, flip=(addr, bit), options=PurgatoryOptions(console_serial=True))
    assert not out.reached and out.error is None and out.halted
    assert out.serial().endswith(b"SHA-256 mismatch, not starting the new system\r\n")
    assert PURG <= out.regs["rip"] < PURG + len(img.code)


@pytest.mark.parametrize("sha_ni", [False, True], ids=["integer", "sha-ni"])
def test_a_nonzero_fill_stops_before_any_hashing(sha_ni):
    segs, h = linux_segments()
    out, m, img = run(segs, h, sha_ni=sha_ni, emulate_sha=sha_ni, flip=(segs[3].fill[1] - 1, 7))
    assert not out.reached and out.halted and m.sha_emulated == 0 and m.cpuid_calls == []


def test_bytes_next_to_the_fills_are_not_checked():
    """Non-zero bytes right after each segment (memory that belongs to no segment) do not stop the hand-off:
    the check reads inside its ranges only."""
    segs, h = linux_segments()
    out, *_ = run(segs, h, extra=[(s.mem + s.memsz, b"\xff" * 64) for s in segs if s.mem + s.memsz not in
                                  {t.mem for t in segs}])
    assert out.reached, out.error


def test_only_the_bytes_handed_over_are_hashed():
    """The digest the loader gives is the SHA-256 of the buffers alone: zeros appended would not match."""
    segs, h = linux_segments()
    data = b"".join(s.data for s in segs)
    assert run(segs, h, digest=hashlib.sha256(data).digest())[0].reached
    with_fill = b"".join(s.data + bytes(s.memsz - s.bufsz) for s in segs)
    assert not run(segs, h, digest=hashlib.sha256(with_fill).digest())[0].reached


def test_flipped_bit_in_the_probe_bytes_too():
    segs, h = linux_segments()
    out, *_ = run(segs, h, flip=(h.kernel_entry + 1, 0))
    assert not out.reached and out.halted


def test_wrong_digest_halts_without_console_output():
    segs, h = linux_segments()
    out, *_ = run(segs, h, digest=bytes(32))
    assert not out.reached and out.halted and out.port_writes == []


def test_no_checks_skips_the_hash():
    segs, h = linux_segments()
    out, *_ = run(segs, h, options=PurgatoryOptions(checks=False), digest=bytes(32), flip=(0x1000000, 0))
    assert out.reached


def test_checks_need_a_digest():
    segs, h = linux_segments()
    with pytest.raises(PurgatoryError, match="digest"):
        build_purgatory(PURG, h, regions=[Region(0x1000000, 0x1000)])


def test_cpuid_chooses_the_integer_routine_without_sha():
    segs, h = linux_segments()
    out, m, img = run(segs, h, sha_ni=False)
    assert out.reached and 7 in m.cpuid_calls


def test_cpuid_chooses_sha_ni_and_enables_sse_first():
    """unicorn's TCG has no SHA extensions: with CPUID saying "SHA", execution must get as far as the first
    SHA instruction with CR4.OSFXSR|OSXMMEXCPT already set (the routine itself is tested natively, and
    emulated in test_sha_ni_emulated)."""
    segs, h = linux_segments()
    out, m, img = run(segs, h, sha_ni=True)
    assert not out.reached and "INSN_INVALID" in (out.error or "")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    (insn,) = list(md.disasm(m.read(out.regs["rip"], 16), out.regs["rip"], count=1))
    assert insn.mnemonic.startswith("sha256")
    assert out.regs["cr4"] & 0x600 == 0x600


@pytest.mark.parametrize("flip", [None, (0x1000000 + 4999, 7), (0x90000, 0)], ids=["intact", "kernel-end", "bp"])
def test_sha_ni_emulated(flip):
    """The SHA-NI path end to end: CPUID says SHA, the purgatory enables SSE, and the SHA instructions are
    supplied by a Python model of the SDM's operation sections (unicorn lacks them)."""
    segs, h = linux_segments()
    out, m, img = run(segs, h, sha_ni=True, emulate_sha=True, flip=flip)
    assert m.sha_emulated > 0
    if flip is None:
        assert out.reached, out.error
        assert out.regs["cr4"] == 0x20 and out.regs["rsi"] == h.boot_params
    else:
        assert not out.reached and out.halted


def test_sse_faults_in_the_entry_state():
    """The emulator enforces CR4.OSFXSR, so the tests above would catch SSE used before it is enabled."""
    m = Machine()
    m.write(0x5000, bytes.fromhex("660f6fca") + b"\xf4")  # movdqa xmm1, xmm2; hlt
    out = m.run(0x5000, 0x6000, probe_mode=False)
    assert not out.reached and "INSN_INVALID" in out.error


# ------------------------------------------------------------------------------------- multiboot

@pytest.mark.parametrize("magic", [MB1_MAGIC, MB2_MAGIC])
def test_multiboot_from_64bit_entry(magic):
    segs, h = multiboot_segments()
    h = Multiboot32Handoff(magic, h.info, h.entry)
    out, m, img = run(segs, h)
    assert out.reached, out.error
    r = out.regs
    assert r["rax"] & 0xFFFFFFFF == magic and r["rbx"] == h.info and r["rip"] == h.entry
    assert r["cr0"] & 0x80000001 == 1, "protected mode, paging off"
    assert r["efer"] & 0x500 == 0, "EFER.LME and LMA clear"
    assert r["cr4"] == 0
    assert r["cs"] == 0x08 and all(r[s] == 0x18 for s in "ds es ss fs gs".split())
    desc = m.descriptor(r["cs"])
    assert desc >> 54 & 1 == 1 and desc >> 53 & 1 == 0, "CS is a 32-bit (D=1, L=0) code segment"
    assert out.mode_at_target == 32


@pytest.mark.parametrize("addr", [0x800000 + 5000, 0x200000 + 6000, 0x200000 + 0x2000 - 1], ids=["module", "fill", "end"])
def test_multiboot_flipped_bit_halts(addr):
    segs, h = multiboot_segments()
    out, *_ = run(segs, h, flip=(addr, 3))
    assert not out.reached and out.halted


def test_multiboot_needs_low_addresses():
    segs, h = multiboot_segments()
    with pytest.raises(PurgatoryError, match="4 GiB"):
        build_purgatory(1 << 32, h)
    with pytest.raises(PurgatoryError, match="4 GiB"):
        build_purgatory(PURG, Multiboot32Handoff(MB1_MAGIC, 1 << 32, 0x200000))
    with pytest.raises(PurgatoryError, match="4 GiB"):
        build_purgatory((1 << 32) - 0x1000, h)  # the segment itself would cross 4 GiB


# ------------------------------------------------------------------------------------- kdump backup

def test_backup_copy_before_handoff():
    segs, h = linux_segments()
    low = random.Random(5).randbytes(0x7F000)  # below the boot_params segment at 0x90000
    backup = Backup(src=0x1000, dst=0x3000000, size=len(low))
    out, m, img = run(segs, h, backup=backup, extra=[(0x1000, low)])
    assert out.reached
    assert m.read(0x3000000, len(low)) == low


def test_backup_not_done_when_the_digest_fails():
    segs, h = linux_segments()
    low = b"\x5a" * 0x1000
    out, m, img = run(segs, h, backup=Backup(0x1000, 0x3000000, 0x1000), extra=[(0x1000, low)],
                      flip=(0x2000000, 0))
    assert not out.reached and m.read(0x3000000, 0x1000) == bytes(0x1000)


# ------------------------------------------------------------------------------------- console

@pytest.mark.parametrize("port, baud", [(0x3F8, 115200), (0x2F8, 9600), (0x3E8, 38400)])
def test_serial_console(port, baud):
    segs, h = linux_segments()
    opts = PurgatoryOptions(console_serial=True, serial_port=port, serial_baud=baud)
    out, *_ = run(segs, h, options=opts)
    assert out.reached
    writes = out.port_writes
    divisor = 115200 // baud
    assert (port + 3, 0x80) in writes and (port + 3, 0x03) in writes
    i = writes.index((port + 3, 0x80))
    assert writes[i + 1:i + 3] == [(port, divisor & 0xFF), (port + 1, divisor >> 8)]
    assert out.serial(port) == b"kexloader purgatory\r\n"
    assert all(port <= p <= port + 7 for p, _ in writes)


def test_vga_console():
    segs, h = linux_segments()
    out, m, _ = run(segs, h, options=PurgatoryOptions(console_vga=True))
    assert out.reached and out.port_writes == []
    text = m.read(0xB8000, 2 * 80 * 2)
    line = b"kexloader purgatory"
    assert text[0:2 * len(line):2] == line and set(text[1:2 * len(line):2]) == {0x07}
    assert text[2 * len(line):2 * len(line) + 2] == b"\0\0"  # \r\n are not printed


def test_vga_console_mismatch_message_on_next_row():
    segs, h = linux_segments()
    out, m, _ = run(segs, h, options=PurgatoryOptions(console_vga=True), flip=(0x90000, 0))
    assert not out.reached
    row1 = m.read(0xB8000 + 160, 160)[0::2]
    assert row1.startswith(b"kexloader purgatory: SHA-256 mismatch")


class VgaModel:
    """The VGA's registers as the port accesses set them (IBM VGA: index/data pairs at 3C4/3D4/3CE; the
    attribute controller's one port alternates index and data, and a read of 3DA sets it back to index)."""

    def __init__(self):
        self.misc, self.seq, self.crtc, self.gc, self.ac = None, {}, {}, {}, {}
        self.index = {0x3C4: 0, 0x3D4: 0, 0x3CE: 0}
        self.ac_index, self.ac_data_next, self.pas = 0, False, None

    def play(self, log):
        regs = {0x3C5: (0x3C4, self.seq), 0x3D5: (0x3D4, self.crtc), 0x3CF: (0x3CE, self.gc)}
        for port, value in log:
            if value is None:
                if port == 0x3DA:
                    self.ac_data_next = False
            elif port in self.index:
                self.index[port] = value
            elif port in regs:
                at, table = regs[port]
                if at == 0x3D4 and self.index[at] < 8 and self.crtc.get(0x11, 0x80) & 0x80:
                    continue  # registers 0-7 write-protected (CRTC[0x11] bit 7)
                table[self.index[at]] = value
            elif port == 0x3C2:
                self.misc = value
            elif port == 0x3C0:
                if self.ac_data_next:
                    self.ac[self.ac_index] = value
                else:
                    self.ac_index, self.pas = value & 0x1F, bool(value & 0x20)
                self.ac_data_next = not self.ac_data_next
        return self

    def screen(self):
        """(columns, rows, character width, character height, pixels wide, pixels high) as a VGA displays text."""
        c = self.crtc
        cols = c[0x01] + 1
        lines = c[0x12] + ((c[0x07] >> 1) & 1) * 0x100 + ((c[0x07] >> 6) & 1) * 0x200 + 1
        char_h = (c[0x09] & 0x1F) + 1
        char_w = 8 if self.seq[0x01] & 1 else 9
        return cols, lines // char_h, char_w, char_h, cols * char_w, lines


@pytest.mark.parametrize("handoff", ["linux", "multiboot"])
def test_reset_vga_leaves_text_mode_3(handoff):
    """--reset-vga: played on a model of the VGA's registers, the purgatory's port writes leave 80x25 text of
    9x16 characters (720x400), colour, at 0xB8000, the display on, before the console's first byte."""
    if handoff == "linux":
        segs, h = linux_segments()
        out, *_ = run(segs, h, options=PurgatoryOptions(reset_vga=True, console_serial=True))
    else:
        segs, h = multiboot_segments()
        out, *_ = run(segs, h, options=PurgatoryOptions(reset_vga=True))
    assert out.reached
    vga = VgaModel().play(out.port_log)
    assert vga.screen() == (80, 25, 9, 16, 720, 400)
    assert vga.misc & 0x01 and (vga.misc >> 2) & 3 == 1  # colour I/O ports (3Dx); the 28 MHz clock for 720
    assert vga.gc[0x06] & 0x01 == 0 and (vga.gc[0x06] >> 2) & 3 == 3  # text; memory at 0xB8000-0xBFFFF
    assert vga.ac[0x10] & 0x01 == 0 and vga.seq[0x04] & 0x08 == 0  # attribute text mode; not chain-4
    assert vga.seq[0x00] == 0x03 and vga.pas  # sequencer out of reset; the palette back to the display
    assert [vga.ac[i] for i in range(16)] == [0, 1, 2, 3, 4, 5, 0x14, 7] + list(range(0x38, 0x40))  # EGA colours
    assert vga.crtc[0x11] & 0x80  # protection back on, as mode 3 has it
    if handoff == "linux":  # the console comes after the reset
        last_vga = max(i for i, (p, _) in enumerate(out.port_log) if 0x3C0 <= p <= 0x3DF)
        first_uart = min(i for i, (p, _) in enumerate(out.port_log) if 0x3F8 <= p <= 0x3FF)
        assert last_vga < first_uart


def test_reset_vga_with_crtc_left_protected_still_sets_the_timing():
    """A first kernel may leave CRTC[0x11] bit 7 set (registers 0-7 locked): the reset unlocks them first."""
    segs, h = linux_segments()
    out, *_ = run(segs, h, options=PurgatoryOptions(reset_vga=True))
    vga = VgaModel()
    vga.crtc[0x11] = 0x80 | 0x0E  # locked before the purgatory runs
    vga.crtc[0x01] = 0x27  # and a 40-column timing
    vga.play(out.port_log)
    assert vga.screen()[0] == 80


def test_bad_serial_settings():
    segs, h = linux_segments()
    with pytest.raises(PurgatoryError, match="baud"):
        build_purgatory(PURG, h, options=PurgatoryOptions(console_serial=True, serial_baud=7))
    with pytest.raises(PurgatoryError, match="port"):
        build_purgatory(PURG, h, options=PurgatoryOptions(console_serial=True, serial_port=0x10000))


# ------------------------------------------------------------------------------------- sizes

def test_purgatory_size_matches_build():
    segs, h = linux_segments()
    kw = dict(regions=segments_digest(segs)[0], zeros=zero_fills(segs), digest=bytes(32), options=PurgatoryOptions(console_serial=True, console_vga=True),
              backup=Backup(0x1000, 0x3000000, 0x1000))
    size = purgatory_size(h, **kw)
    img = build_purgatory(0x7FF00000, h, **kw)
    assert img.memsz == size and size % 0x1000 == 0 and len(img.code) <= size
