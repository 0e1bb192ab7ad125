"""The purgatory program: golden bytes, disassembly and emulated runs from the kernel's entry state."""

import struct

import capstone
import pytest

from kexloader.model import PurgatoryOptions
from kexloader.purgatory.program import (Backup, Linux64Handoff, Multiboot32Handoff, PurgatoryError, Region,
                                         build_purgatory, purgatory_size)

from .purgatory_emu import Machine

BASE = 0x100000
KERNEL = 0x1000000
LINUX = Linux64Handoff(boot_params=0x90000, kernel_entry=KERNEL + 0x200)


def disasm(code: bytes, base: int = BASE, mode=capstone.CS_MODE_64):
    md = capstone.Cs(capstone.CS_ARCH_X86, mode)
    return [(i.address, i.mnemonic, i.op_str) for i in md.disasm(code, base)]


# ---------------------------------------------------------------------------------------- Linux 64-bit

def test_linux64_golden_bytes():
    img = build_purgatory(BASE, LINUX)
    assert img.entry == BASE
    assert img.memsz == 0x2000
    assert img.code.hex() == GOLDEN_LINUX64


GOLDEN_LINUX64 = (  # reviewed against the capstone listing in test_linux64_disassembly
    "fafc0f0115870000000f011d8a000000b8180000008ed88ec08ed08ee08ee8488d05050000006a105048cb488d25ce1f"
    "0000488b357700000031c031db31c931d231ff31ed4531c04531c94531d24531db4531e44531ed4531f64531ffff2545"
    "000000000000000000000000000000000000000000000000ffff0000009acf00ffff0000009aaf00ffff00000092cf00"
    "1f007000100000000000000000000000000000000000000000020001000000000000090000000000"
)


def test_linux64_disassembly():
    img = build_purgatory(BASE, LINUX)
    text = [f"{m} {o}".strip() for _, m, o in disasm(img.code)]
    expected_head = [
        "cli", "cld",
        "lgdt [rip + 0x{:x}]", "lidt [rip + 0x{:x}]",
        "mov eax, 0x18", "mov ds, eax", "mov es, eax", "mov ss, eax", "mov fs, eax", "mov gs, eax",
        "lea rax, [rip + 5]", "push 0x10", "push rax", "retfq",
    ]
    for got, want in zip(text, expected_head):
        if "{" in want:
            assert got.split(" [")[0] == want.split(" [")[0]
        else:
            assert got == want
    i = text.index("retfq")
    assert text[i + 1].startswith("lea rsp, [rip + ")
    assert text[i + 2].startswith("mov rsi, qword ptr [rip + ")
    zeroed = [t.split()[1].rstrip(",") for t in text[i + 3:i + 17]]
    assert sorted(zeroed) == sorted("eax ebx ecx edx edi ebp r8d r9d r10d r11d r12d r13d r14d r15d".split())
    assert text[i + 17].startswith("jmp qword ptr [rip + ")


def test_linux64_is_deterministic_and_relocates():
    assert build_purgatory(BASE, LINUX) == build_purgatory(BASE, LINUX)
    a, b = build_purgatory(BASE, LINUX), build_purgatory(0x7F000000, LINUX)
    assert len(a.code) == len(b.code) and a.memsz == b.memsz == purgatory_size(LINUX)
    assert b.entry == 0x7F000000
    diff = [i for i in range(len(a.code)) if a.code[i] != b.code[i]]
    assert diff, "the GDTR base must follow the load address"
    assert max(diff) - min(diff) < 8  # only the GDTR base qword differs: everything else is rip-relative


def test_linux64_emulated_handoff():
    m = Machine()
    img = build_purgatory(BASE, LINUX)
    m.write(BASE, img.code)
    out = m.run(img.entry, LINUX.kernel_entry)
    assert out.reached, out
    r = out.regs
    assert r["rsi"] == LINUX.boot_params
    for name in "rax rbx rcx rdx rdi rbp r8 r9 r10 r11 r12 r13 r14 r15".split():
        assert r[name] == 0, name
    assert r["cs"] == 0x10
    assert all(r[s] == 0x18 for s in "ds es ss fs gs".split())
    assert BASE <= r["rsp"] <= BASE + img.memsz and r["rsp"] % 16 == 0
    assert r["gdtr"][1] >= BASE and r["gdtr"][2] == 31 and r["idtr"][2] == 0
    assert m.descriptor(0x10) & ~(1 << 40) == 0x00AF9A000000FFFF  # 64-bit code (accessed bit may be set)
    assert out.mode_at_target == 64
    assert r["efer"] & 0x500 == 0x500 and r["cr0"] >> 31 == 1


def test_far_return_really_reads_our_gdt():
    """A broken 0x10 descriptor in our GDT must fault: proof that the emulated lretq loads from memory."""
    img = build_purgatory(BASE, LINUX)
    code = bytearray(img.code)
    gdt_entry = code.find(struct.pack("<Q", 0x00AF9A000000FFFF))
    code[gdt_entry:gdt_entry + 8] = bytes(8)
    m = Machine()
    m.write(BASE, code)
    out = m.run(img.entry, LINUX.kernel_entry)
    assert not out.reached and out.error


def test_never_writes_outside_its_segment_in_a_plain_handoff():
    m = Machine()
    img = build_purgatory(BASE, LINUX)
    m.write(BASE, img.code)
    sentinel = bytes(range(256)) * 16
    m.write(LINUX.boot_params, sentinel)
    out = m.run(img.entry, LINUX.kernel_entry)
    assert out.reached
    assert m.read(LINUX.boot_params, len(sentinel)) == sentinel


@pytest.mark.parametrize("base", [0x1234, -4096])
def test_bad_base(base):
    with pytest.raises(PurgatoryError):
        build_purgatory(base, LINUX)


# ---------------------------------------------------------------------------------------- multiboot

def test_multiboot_leaves_long_mode_in_the_sdm_order():
    """SDM vol. 3A §10.8.5.4: compatibility mode first, then CR0.PG off, then EFER.LME off, and CR4 (PAE,
    LA57) only once paging is off; then flat data selectors, eax = magic, ebx = info, jump."""
    h = Multiboot32Handoff(0x2BADB002, 0x10000, 0x200000)
    img = build_purgatory(BASE, h, options=PurgatoryOptions(checks=False))
    code64 = disasm(img.code)
    far = [a for a, m, _ in code64 if m == "retfq"]
    assert len(far) == 2  # the CS reload, then the drop to the 32-bit code segment
    i = [a for a, *_ in code64].index(far[1])
    assert [f"{m} {o}" for _, m, o in code64[i - 3:i]] == ["lea rax, [rip + 5]", "push 8", "push rax"]
    start = far[1] + 2 - BASE
    text = [f"{m} {o}".strip() for _, m, o in disasm(img.code[start:], far[1] + 2, capstone.CS_MODE_32)]
    assert text[:18] == [
        "mov eax, cr0", "and eax, 0x7fffffff", "mov cr0, eax",
        "mov ecx, 0xc0000080", "rdmsr", "and eax, 0xfffffeff", "wrmsr",
        "xor eax, eax", "mov cr4, eax",
        "mov eax, 0x18", "mov ds, eax", "mov es, eax", "mov fs, eax", "mov gs, eax", "mov ss, eax",
        "mov eax, 0x2badb002", "mov ebx, 0x10000", "xor ecx, ecx",
    ]
    assert text[18:22] == ["xor edx, edx", "xor esi, esi", "xor edi, edi", "xor ebp, ebp"]
    assert text[22] == "jmp 0x200000"


def test_regions_must_not_cover_the_purgatory():
    with pytest.raises(PurgatoryError, match="hashed region .* overlaps the purgatory"):
        build_purgatory(BASE, LINUX, regions=[Region(BASE + 0x1000, 0x1000)], digest=bytes(32))
    with pytest.raises(PurgatoryError, match="zero-filled region .* overlaps the purgatory"):
        build_purgatory(BASE, LINUX, zeros=[Region(BASE - 0x10, 0x20)], digest=bytes(32))


def test_zero_fills_alone_need_a_digest_and_valid_ranges():
    with pytest.raises(PurgatoryError, match="digest"):
        build_purgatory(BASE, LINUX, zeros=[Region(0x1000000, 0x1000)])
    with pytest.raises(PurgatoryError, match="bad region"):
        build_purgatory(BASE, LINUX, zeros=[Region(-1, 0x1000)], digest=bytes(32))


def test_backup_ranges_must_not_overlap():
    with pytest.raises(PurgatoryError, match="overlap"):
        build_purgatory(BASE, LINUX, backup=Backup(0x1000, 0x2000, 0x9F000))


def test_unknown_handoff():
    with pytest.raises(PurgatoryError):
        build_purgatory(BASE, object())


# ---------------------------------------------------------------------------------------- SHA-256 routines

def _routines_emitted_in_place(base: int, lead: int) -> bytes:
    """The three routines emitted instruction by instruction after `lead` bytes of other code."""
    from kexloader.purgatory import sha256_code
    from kexloader.purgatory.asm import Assembler

    a = Assembler(bits=64, base=base)
    a.raw(b"\xcc" * lead)
    a.align(16)
    sha256_code.emit_regions(a)
    a.align(16)
    sha256_code.emit_blocks_int(a)
    a.align(16)
    sha256_code.emit_blocks_shani(a)
    return a.assemble()


def test_the_routines_copied_in_are_the_routines_emitted_in_place():
    """emit_routines copies one assembly of the routines into every purgatory: right only because they are
    position independent, at any base and any 16-byte aligned offset."""
    from kexloader.purgatory import sha256_code
    from kexloader.purgatory.asm import Assembler

    for base, lead in ((0, 0), (BASE, 5), (0x7FFF_F000, 100), (1 << 40, 17)):
        a = Assembler(bits=64, base=base)
        a.raw(b"\xcc" * lead)
        sha256_code.emit_routines(a)
        assert a.assemble() == _routines_emitted_in_place(base, lead), (base, lead)
        assert a.labels["sha256_blocks_shani"] % 16 == 0
