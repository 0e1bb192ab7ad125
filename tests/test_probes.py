"""The probe kernels (tools/probes/) run in unicorn on synthetic zero pages and multiboot information.

Each way into the bzImage probe is emulated from the state its loader leaves: the 64-bit boot protocol (long
mode, rsi = boot_params; what kexec's purgatory does), the 32-bit protocol (protected mode, esi =
boot_params) and QEMU's real-mode entry (CS = seg + 0x20, DS = SS = seg, a BIOS that answers INT 15h E820).
The multiboot probe is entered in 32-bit protected mode with multiboot 1 and 2 information. Every run's
console output is decoded with tools/probes/report.py and checked against what was put in memory.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import capstone
import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INTR, UC_MODE_16, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kexloader.formats import bzimage as bz  # noqa: E402
from kexloader.formats import multiboot as mb  # noqa: E402
from tools.probes import COM1, DEBUG_EXIT_PORT, EXIT_VALUE, report  # noqa: E402
from tools.probes import build as pb  # noqa: E402

MEM = 64 << 20
CONTROL = MEM - (1 << 20)  # page tables, GDT and stack of the emulated "previous owner"
LOAD = 0x1000000  # the bzImage's protected-mode part (kexec-like placement, 16 MiB)
ZP = 0x90000
CMDLINE_AT = 0x91000
INITRD_AT = 0x2000000
E820 = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2), (0x100000, 0x3F00000, 1),
        (0xFFFC0000, 0x40000, 2)]


@pytest.fixture(scope="module")
def bzprobe() -> bytes:
    return pb.build_bzprobe()


@pytest.fixture(scope="module")
def mbprobe() -> bytes:
    return pb.build_mbprobe()


def split_bz(image: bytes) -> tuple[bytes, bytes, dict]:
    hdr = bz.SetupHeader.parse(image[bz.SETUP_HEADER_OFFSET:])
    n = bz.setup_size(hdr.setup_sects)
    return image[:n], image[n:], hdr


# ------------------------------------------------------------------------------------------ the machine


class Machine:
    """Unicorn with all of MEM mapped; OUT to COM1 is collected, OUT to the debug-exit port stops the run."""

    def __init__(self, mode: int):
        self.uc = uc = Uc(UC_ARCH_X86, mode)
        uc.mem_map(0, MEM)
        self.serial = bytearray()
        self.exit_value: int | None = None
        self.e820_calls = 0
        uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._in, None, 1, 0, X.UC_X86_INS_IN)

    def _out(self, uc, port, size, value, user_data):
        if port == COM1:
            self.serial.append(value & 0xFF)
        elif port == DEBUG_EXIT_PORT:
            self.exit_value = value & 0xFF
            uc.emu_stop()

    def _in(self, uc, port, size, user_data):
        return 0x60 if port == COM1 + 5 else 0  # LSR: transmitter empty

    def write(self, addr: int, data: bytes) -> None:
        self.uc.mem_write(addr, bytes(data))

    def long_mode(self) -> None:
        """64-bit mode, identity map of MEM with 2 MiB pages, CS = 0x10, data 0x18, GDTR/IDTR zapped (as the
        kernel leaves them before jumping to a purgatory; the purgatory then loads its own)."""
        uc = self.uc
        pml4, pdpt, pd, gdt = CONTROL, CONTROL + 0x1000, CONTROL + 0x2000, CONTROL + 0x3000
        self.write(pml4, struct.pack("<Q", pdpt | 3))
        self.write(pdpt, struct.pack("<Q", pd | 3))
        self.write(pd, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(MEM >> 21)))
        self.write(gdt, struct.pack("<4Q", 0, 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF))
        uc.reg_write(X.UC_X86_REG_CR3, pml4)
        uc.reg_write(X.UC_X86_REG_CR4, 0x20)
        uc.reg_write(X.UC_X86_REG_CR0, 0x80000011)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt, 31, 0))
        uc.reg_write(X.UC_X86_REG_CS, 0x10)
        for r in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(r, 0x18)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0, 0))
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        uc.reg_write(X.UC_X86_REG_RSP, CONTROL + 0x5000)

    def protected_mode(self) -> None:
        """32-bit protected mode, paging off, flat segments from a GDT the probe does not know about."""
        uc = self.uc
        gdt = CONTROL + 0x3000
        self.write(gdt, struct.pack("<3Q", 0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF))
        uc.reg_write(X.UC_X86_REG_CR0, 0x11)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt, 23, 0))
        uc.reg_write(X.UC_X86_REG_CS, 0x08)
        for r in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(r, 0x10)
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)

    def bios_e820(self, entries) -> None:
        """INT 15h AX=E820h from a table (ebx = continuation index), as a BIOS answers it."""

        def intr(uc, intno, user_data):
            if intno != 0x15 or uc.reg_read(X.UC_X86_REG_EAX) & 0xFFFF != 0xE820:
                raise AssertionError(f"unexpected interrupt {intno:#x}")
            self.e820_calls += 1
            i = uc.reg_read(X.UC_X86_REG_EBX)
            addr = uc.reg_read(X.UC_X86_REG_ES) * 16 + (uc.reg_read(X.UC_X86_REG_EDI) & 0xFFFF)
            self.write(addr, struct.pack("<QQI", *entries[i]))
            uc.reg_write(X.UC_X86_REG_EAX, 0x534D4150)
            uc.reg_write(X.UC_X86_REG_ECX, 20)
            uc.reg_write(X.UC_X86_REG_EBX, 0 if i + 1 == len(entries) else i + 1)
            uc.reg_write(X.UC_X86_REG_EFLAGS, uc.reg_read(X.UC_X86_REG_EFLAGS) & ~1)

        self.uc.hook_add(UC_HOOK_INTR, intr)

    def run(self, entry: int, max_insns: int = 20_000_000) -> dict:
        try:
            self.uc.emu_start(entry, 0xFFFFFFFFFFFF, count=max_insns)
        except UcError as e:
            raise AssertionError(f"the probe faulted: {e}; console so far: {self.serial[-300:]!r}") from e
        assert self.exit_value == EXIT_VALUE, f"the probe did not finish; console: {self.serial[-300:]!r}"
        return report.decode(self.serial.decode("latin-1"))


def zero_page(header: bytes, *, cmdline: int, initrd: int, initrd_size: int, setup_data: int = 0,
              acpi_rsdp: int = 0) -> bytes:
    """What a kexec loader writes: zeroed page, the image's header, the loader's fields, the E820 map."""
    zp = bytearray(4096)
    end = bz.header_end(struct.unpack_from("<H", header, 0x200)[0])
    zp[0x1F1:end] = header[0x1F1:end]
    struct.pack_into("<B", zp, 0x210, 0xD0)
    struct.pack_into("<I", zp, 0x228, cmdline & 0xFFFFFFFF)
    struct.pack_into("<I", zp, 0x0C8, cmdline >> 32)
    struct.pack_into("<I", zp, 0x218, initrd & 0xFFFFFFFF)
    struct.pack_into("<I", zp, 0x0C0, initrd >> 32)
    struct.pack_into("<I", zp, 0x21C, initrd_size)
    struct.pack_into("<Q", zp, 0x250, setup_data)
    struct.pack_into("<Q", zp, 0x070, acpi_rsdp)
    zp[0x1E8] = len(E820)
    for i, e in enumerate(E820):
        struct.pack_into("<QQI", zp, 0x2D0 + 20 * i, *e)
    return bytes(zp)


# ------------------------------------------------------------------------------------------ the images


def test_fixtures_are_what_the_builder_makes():
    for name, make in pb.PROBES.items():
        path = REPO / "fixtures" / "probes" / name
        assert path.read_bytes() == make(), f"{path} is stale: run python3 tools/probes/build.py"


def test_bzprobe_header(bzprobe):
    setup, prot, hdr = split_bz(bzprobe)
    assert hdr.version == 0x020F
    assert hdr.xloadflags == bz.XLF_KERNEL_64 | bz.XLF_CAN_BE_LOADED_ABOVE_4G | bz.XLF_5LEVEL
    assert hdr.relocatable_kernel == 1 and hdr.kernel_alignment == 0x200000
    assert hdr.loadflags & bz.LOADED_HIGH
    assert hdr.syssize * 16 == len(prot)
    assert hdr.init_size >= len(prot) and hdr.init_size % 4096 == 0
    assert hdr.cmdline_size == 2047
    assert bz.header_end(hdr.jump) == 0x26C  # the whole 2.15 header is copied, nothing of the code
    assert prot[hdr.kernel_info_offset:hdr.kernel_info_offset + 4] == b"LToP"
    version = setup[hdr.kernel_version + 0x200:].split(b"\0")[0]
    assert version == b"kexloader bzImage probe 1"
    assert len(bzprobe) < 16 * 1024  # small: 13 KiB, most of it the unrolled SHA-256


def test_bzprobe_is_position_independent(bzprobe):
    """The protected-mode part does not depend on where it runs (checked by the builder, and here: the
    64-bit code only uses rip-relative addressing, found by disassembling it)."""
    _, prot, _ = split_bz(bzprobe)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    code = prot[0x200:prot.index(b"LToP")]
    for insn in md.disasm(code, 0x200):
        for op in insn.operands:
            if op.type == capstone.x86.X86_OP_MEM and op.mem.base == 0 and op.mem.index == 0:
                raise AssertionError(f"absolute memory operand: {insn.mnemonic} {insn.op_str}")


def test_real_mode_stub_disassembles_as_written(bzprobe):
    setup, _, _ = split_bz(bzprobe)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_16)
    insns = list(md.disasm(setup[0x26C:0x400], 0x26C))
    text = [f"{i.mnemonic} {i.op_str}".strip() for i in insns]
    assert text[:3] == ["cli", "cld", "mov word ptr cs:[0xa00], ds"]
    for expected in ("int 0x15", "mov edx, 0x534d4150", "lgdt [0x", "retf"):
        assert any(t.startswith(expected) for t in text), (expected, text)
    retf = next(i for i in insns if i.mnemonic == "retf")
    assert retf.bytes == b"\x66\xcb"  # o32: pops a 32-bit EIP


def test_kexloader_plans_both_probes(tmp_path):
    """kexloader accepts the probes (dry run against a recorded machine: nothing is loaded)."""
    (tmp_path / "initrd").write_bytes(os.urandom(3000))
    (tmp_path / "m1").write_bytes(os.urandom(100))
    facts = REPO / "fixtures" / "snapshots" / "devhost.json"
    probes = REPO / "fixtures" / "probes"
    for args in ([str(probes / "bzprobe.bzImage"), f"--initrd={tmp_path / 'initrd'}"],
                 [str(probes / "mbprobe.elf"), f"--module={tmp_path / 'm1'} x"],
                 [str(probes / "mbprobe.elf"), "--type", "multiboot-x86", f"--module={tmp_path / 'm1'} x"]):
        out = subprocess.run([sys.executable, "-m", "kexloader", "-l", *args, "--append=a b", "--dry-run",
                              f"--facts={facts}"], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------------------------------ bzImage probe


def bz_memory(m: Machine, bzprobe: bytes, *, initrd: bytes, cmdline: bytes, setup_data: bytes = b"") -> None:
    setup, prot, _ = split_bz(bzprobe)
    m.write(LOAD, prot)
    m.write(CMDLINE_AT, cmdline + b"\0")
    m.write(INITRD_AT, initrd)
    sd_at = 0
    if setup_data:
        sd_at = CMDLINE_AT + 0x800
        m.write(sd_at, struct.pack("<QII", 0, 9, len(setup_data)) + setup_data)
    m.write(ZP, zero_page(setup, cmdline=CMDLINE_AT, initrd=INITRD_AT, initrd_size=len(initrd),
                          setup_data=sd_at, acpi_rsdp=0xF59D0))


def check_common(r: dict, initrd: bytes, cmdline: bytes) -> None:
    assert r["kind"] == "bz"
    assert r["cmdline"] == cmdline.decode()
    assert r["initrd"]["size"] == len(initrd) and r["initrd"]["complete"]
    assert r["initrd"]["sha256"] == hashlib.sha256(initrd).hexdigest()  # the probe's own digest
    assert r["initrd"]["dump_sha256"] == hashlib.sha256(initrd).hexdigest()
    assert r["e820"] == E820
    assert r["type_of_loader"] == 0xD0 and r["acpi_rsdp_addr"] == 0xF59D0


def test_bzprobe_64bit_entry(bzprobe):
    initrd, cmdline = os.urandom(3001), b"console=ttyS0 probe \"quoted\" x=1"
    m = Machine(UC_MODE_64)
    m.long_mode()
    bz_memory(m, bzprobe, initrd=initrd, cmdline=cmdline, setup_data=b"seed" * 8)
    m.uc.reg_write(X.UC_X86_REG_RSI, ZP)
    m.uc.reg_write(X.UC_X86_REG_R9, 0x1234)
    r = m.run(LOAD + 0x200)
    assert r["path"] == "64" and r["entry32"] is None
    check_common(r, initrd, cmdline)
    assert r["regs"]["rsi"] == ZP and r["regs"]["r9"] == 0x1234 and r["regs"]["rax"] == 0
    assert r["segments"]["cs"] == 0x10 and r["segments"]["ds"] == 0x18
    assert r["control"]["cr4"] == 0x20 and r["control"]["cr0"] == 0x80000011
    assert r["control"]["gdtr.limit"] == 0 and r["control"]["idtr.limit"] == 0
    assert r["control"]["efer"] & 0x500 == 0x500  # LME, LMA
    assert r["zero_page_addr"] == ZP
    assert r["setup_data"] == [{"addr": CMDLINE_AT + 0x800, "next": 0, "type": 9, "len": 32, "data": b"seed" * 8}]


def test_bzprobe_32bit_entry(bzprobe):
    initrd, cmdline = os.urandom(100), b"thirty-two"
    m = Machine(UC_MODE_32)
    m.protected_mode()
    bz_memory(m, bzprobe, initrd=initrd, cmdline=cmdline)
    m.uc.reg_write(X.UC_X86_REG_ESI, ZP)
    m.uc.reg_write(X.UC_X86_REG_EBP, 0x55)  # the protocol says 0; the probe must report what it got
    m.uc.reg_write(X.UC_X86_REG_ESP, 0x7000)
    r = m.run(LOAD)
    assert r["path"] == "32"
    check_common(r, initrd, cmdline)
    e = r["entry32"]
    assert e["esi"] == ZP and e["ebp"] == 0x55 and e["esp"] == 0x7000
    assert e["cs"] == 0x08 and e["ds"] == 0x10 and e["cr0"] == 0x11
    assert r["regs"]["rsi"] == ZP and r["regs"]["rax"] == pb.PM32_MAGIC
    init_size = split_bz(bzprobe)[2].init_size
    assert r["segments"]["cs"] == 0x10
    assert LOAD < r["control"]["cr3"] < LOAD + init_size and r["control"]["cr3"] % pb.PAGE == 0  # its own tables
    assert r["control"]["gdtr.limit"] == 31 and LOAD < r["control"]["gdtr.base"] < LOAD + init_size


def test_bzprobe_real_mode_entry_like_qemu(bzprobe):
    """QEMU's loader: setup at 0x10000 (its header patched by the loader), the protected-mode part at
    0x100000 = code32_start, command line at 0x20000, entry at seg+0x20:0 with DS = ES = SS = seg."""
    initrd, cmdline = os.urandom(5000), b"from real mode"
    setup, prot, _ = split_bz(bzprobe)
    setup = bytearray(setup)
    struct.pack_into("<B", setup, 0x210, 0xB0)
    struct.pack_into("<B", setup, 0x211, setup[0x211] | 0x80)
    struct.pack_into("<H", setup, 0x224, 0xFE00)
    struct.pack_into("<I", setup, 0x228, 0x20000)
    struct.pack_into("<II", setup, 0x218, INITRD_AT, len(initrd))
    m = Machine(UC_MODE_16)
    m.write(0x10000, setup)
    m.write(0x100000, prot)
    m.write(0x20000, cmdline + b"\0")
    m.write(INITRD_AT, initrd)
    m.bios_e820(E820)
    uc = m.uc
    uc.reg_write(X.UC_X86_REG_CS, 0x1020)
    for r in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
        uc.reg_write(r, 0x1000)
    uc.reg_write(X.UC_X86_REG_ESP, 0xFFF0)
    r = m.run(0x10200)
    assert r["path"] == "rm"
    assert r["cmdline"] == cmdline.decode()
    assert r["initrd"]["sha256"] == hashlib.sha256(initrd).hexdigest() and r["initrd"]["complete"]
    assert r["e820"] == E820 and m.e820_calls == len(E820)
    assert r["type_of_loader"] == 0xB0 and r["zero_page"]["heap_end_ptr"] == 0xFE00
    assert r["zero_page_addr"] == 0x10000 + pb.RM_ZERO_PAGE
    assert r["real_mode"] == {"ds": 0x1000, "ss": 0x1000, "sp": 0xFFF0, "cs": 0x1020, "flags": 0x2, "es": 0x1000,
                              "linear": 0x10000}
    assert r["entry32"]["eax"] == pb.RM_MAGIC and r["entry32"]["esi"] == 0x10000 + pb.RM_ZERO_PAGE
    assert r["entry32"]["ecx"] == 0x100000  # code32_start, where it went


def test_bzprobe_reports_the_bytes_in_memory_not_the_file(bzprobe):
    """A loader that corrupts one initrd byte is caught: the report's digest is of memory."""
    initrd = bytearray(os.urandom(300))
    m = Machine(UC_MODE_64)
    m.long_mode()
    bz_memory(m, bzprobe, initrd=initrd, cmdline=b"x")
    m.write(INITRD_AT + 123, bytes([initrd[123] ^ 0x10]))
    m.uc.reg_write(X.UC_X86_REG_RSI, ZP)
    r = m.run(LOAD + 0x200)
    assert r["initrd"]["sha256"] != hashlib.sha256(initrd).hexdigest()
    assert r["initrd"]["data"][123] == initrd[123] ^ 0x10


# ------------------------------------------------------------------------------------------ multiboot probe

MBI_AT = 0x300000
MOD_AT = (0x400000, 0x500000)


def mb_memory(m: Machine, mbprobe: bytes, mods: list[bytes]) -> None:
    ehdr = struct.unpack_from("<16sHHIIIIIHHHHHH", mbprobe, 0)
    ph = struct.unpack_from("<IIIIIIII", mbprobe, ehdr[5])
    assert ph[0] == 1 and ph[3] == pb.MB_BASE
    m.write(ph[3], mbprobe[ph[1]:ph[1] + ph[4]])
    for at, data in zip(MOD_AT, mods):
        m.write(at, data)


def mb1_info(cmdline: str, mods: list[bytes], names: list[str]) -> bytes:
    blob = bytearray(mb.MB1Info.sizeof())
    base = MBI_AT

    def add(raw: bytes) -> int:
        blob.extend(bytes(-len(blob) % 4))
        blob.extend(raw)
        return base + len(blob) - len(raw)

    mmap = b"".join(mb.MB1MmapEntry.build(dict(size=20, base_addr=a, length=n, type=t)) for a, n, t in E820)
    mods_raw = b"".join(mb.MB1Module.build(dict(mod_start=at, mod_end=at + len(d), string=add(s.encode() + b"\0"),
                                                reserved=0)) for at, d, s in zip(MOD_AT, mods, names))
    flags = mb.MBI_MEMLIMITS | mb.MBI_CMDLINE | mb.MBI_MODULES | mb.MBI_MEMMAP | mb.MBI_LOADERNAME
    info = dict(flags=flags, mem_lower=639, mem_upper=0x3F000 // 4 * 4, boot_device=0,
                cmdline=add(cmdline.encode() + b"\0"), mods_count=len(mods), mods_addr=add(mods_raw), syms=bytes(16),
                mmap_length=len(mmap), mmap_addr=add(mmap), drives_length=0, drives_addr=0, config_table=0,
                boot_loader_name=add(b"unit test\0"), apm_table=0, vbe=bytes(16), framebuffer=bytes(28))
    blob[:mb.MB1Info.sizeof()] = mb.MB1Info.build(info)
    return bytes(blob)


def mb2_info(cmdline: str, mods: list[bytes], names: list[str]) -> bytes:
    mmap = b"".join(mb.MB2MmapEntry.build(dict(base_addr=a, length=n, type=t, reserved=0)) for a, n, t in E820)
    tags = [mb.mb2_tag(mb.MB2_TAG_BASIC_MEMINFO, struct.pack("<II", 639, 0x3F000)),
            mb.mb2_tag(mb.MB2_TAG_MMAP, struct.pack("<II", 24, 0) + mmap),
            mb.mb2_tag(mb.MB2_TAG_CMDLINE, cmdline.encode() + b"\0"),
            mb.mb2_tag(mb.MB2_TAG_LOADER_NAME, b"unit test\0")]
    for at, d, s in zip(MOD_AT, mods, names):
        tags.append(mb.mb2_tag(mb.MB2_TAG_MODULE, struct.pack("<II", at, at + len(d)) + s.encode() + b"\0"))
    tags.append(mb.mb2_tag(mb.MB2_TAG_END, b""))
    body = b"".join(tags)
    return struct.pack("<II", 8 + len(body), 0) + body


@pytest.mark.parametrize("version", [1, 2])
def test_mbprobe(mbprobe, version):
    mods = [os.urandom(3000), os.urandom(7001)]
    names = ["/boot/mod1 first args", "/boot/mod2"]
    cmdline = "/boot/mbprobe.elf hello world"
    m = Machine(UC_MODE_32)
    m.protected_mode()
    mb_memory(m, mbprobe, mods)
    m.write(MBI_AT, (mb1_info if version == 1 else mb2_info)(cmdline, mods, names))
    magic = mb.MB1_BOOTLOADER_MAGIC if version == 1 else mb.MB2_BOOTLOADER_MAGIC
    m.uc.reg_write(X.UC_X86_REG_EAX, magic)
    m.uc.reg_write(X.UC_X86_REG_EBX, MBI_AT)
    m.uc.reg_write(X.UC_X86_REG_ESP, 0)  # multiboot: undefined; the probe must not use it
    r = m.run(pb.MB_BASE)
    assert r["kind"] == "mb" and r["format"] == f"mb{version}"
    assert r["regs"]["eax"] == magic and r["regs"]["ebx"] == MBI_AT and r["regs"]["esp"] == 0
    assert r["control"]["cr0"] == 0x11 and r["segments"]["cs"] == 0x08
    info = r["info"]
    assert info["cmdline"] == cmdline
    assert info["loader_name"] == "unit test"
    assert info["mmap"] == E820
    assert (info["mem_lower"], info["mem_upper"]) == (639, 0x3F000)
    assert [x["cmdline"] for x in info["modules"]] == names
    assert [x["sha256"] for x in info["modules"]] == [hashlib.sha256(d).hexdigest() for d in mods]
    assert [(x["start"], x["size"]) for x in info["modules"]] == [(a, len(d)) for a, d in zip(MOD_AT, mods)]
    assert all(x["complete"] for x in info["modules"])


def test_mbprobe_headers_are_found_by_kexloader(mbprobe):
    from kexloader.images.multiboot import find_mb1, find_mb2

    h1, h2 = find_mb1(mbprobe), find_mb2(mbprobe)
    assert h1.offset == 0x88 and h1.flags == mb.MB1_PAGE_ALIGN | mb.MB1_MEMORY_INFO and h1.aout is None
    assert h2.offset == 0x98 and h2.tag(mb.MB2_HTAG_RELOCATABLE) is None


def test_mbprobe_without_multiboot_magic_reports_registers_only(mbprobe):
    m = Machine(UC_MODE_32)
    m.protected_mode()
    mb_memory(m, mbprobe, [])
    m.uc.reg_write(X.UC_X86_REG_EAX, 0x12345678)
    r = m.run(pb.MB_BASE)
    assert r["format"] is None and r["regs"]["eax"] == 0x12345678


# ------------------------------------------------------------------------------------------ the decoder


def test_decoder_needs_a_complete_line():
    with pytest.raises(report.ReportError):
        report.decode("@KXP1 kind=bz path=64 r.rax=0 ...cut off")
    with pytest.raises(report.ReportError):
        report.parse("@KXP1 kind=zz end@")
    with pytest.raises(report.ReportError):
        report.parse("@KXP1 kind=bz m.zp@1000=abc end@")  # odd hex


def test_decoder_catches_a_module_without_bytes(mbprobe):
    m = Machine(UC_MODE_32)
    m.protected_mode()
    mods = [os.urandom(64)]
    mb_memory(m, mbprobe, mods)
    m.write(MBI_AT, mb2_info("x", mods, ["m"]))
    m.uc.reg_write(X.UC_X86_REG_EAX, mb.MB2_BOOTLOADER_MAGIC)
    m.uc.reg_write(X.UC_X86_REG_EBX, MBI_AT)
    m.run(pb.MB_BASE)
    text = m.serial.decode("latin-1")
    line = report.find_line(text)
    tampered = text.replace(line, " ".join(t for t in line.split() if not t.startswith("m.mod@")))
    with pytest.raises(report.ReportError, match="no dump of the module"):
        report.decode(tampered)
