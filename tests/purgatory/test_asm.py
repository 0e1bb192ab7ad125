"""Every encoder form, decoded back by capstone: mnemonic, operands (registers, immediates, memory operands
with base/index/scale/disp) and length must match what was asked for. Table driven over many registers,
including r8-r15, the byte registers that need a bare REX, and the ModRM/SIB special cases (rsp/r12 as a base
need a SIB byte, rbp/r13 as a base need a displacement, no-base needs SIB in 64-bit mode)."""

import itertools

import capstone
import pytest
from capstone import x86_const as C

from kexloader.purgatory import asm
from kexloader.purgatory.asm import (AsmError, Assembler, Mem, Reg, absolute, mem, reg, rip)

R64 = [reg(n) for n in asm._R64]
R32 = [reg(n) for n in asm._R32]
R16 = [reg(n) for n in asm._R16]
R8 = [reg(n) for n in asm._R8]
XMM = [reg(f"xmm{i}") for i in range(16)]
ALU = ["add", "or_", "adc", "sbb", "and_", "sub", "xor", "cmp"]
SIZES = {8: "byte", 16: "word", 32: "dword", 64: "qword", 128: "xmmword"}


def decode(code: bytes, bits: int = 64, address: int = 0):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32)
    md.detail = True
    insns = list(md.disasm(code, address))
    assert insns, f"capstone cannot decode {code.hex()}"
    return insns


def operands(insn):
    out = []
    for op in insn.operands:
        if op.type == C.X86_OP_REG:
            out.append(("reg", insn.reg_name(op.reg)))
        elif op.type == C.X86_OP_IMM:
            out.append(("imm", op.imm, op.size))
        else:
            m = op.mem
            out.append(("mem", insn.reg_name(m.base) if m.base else None,
                        insn.reg_name(m.index) if m.index else None, m.scale if m.index else 1, m.disp))
    return out


def want_op(x, imm_bits=None):
    if isinstance(x, Reg):
        return ("reg", x.name)
    if isinstance(x, Mem):
        return ("mem", x.base.name if x.base else None, x.index.name if x.index else None,
                x.scale if x.index else 1, x.disp)
    return ("imm", x, imm_bits)


def check_one(emit, mnemonic, ops, *, bits=64, imm_bits=None):
    a = Assembler(bits=bits)
    emit(a)
    code = a.assemble()
    (insn, *rest) = decode(code, bits)
    assert not rest and insn.size == len(code), f"{code.hex()} decodes as more than one instruction"
    assert insn.mnemonic == mnemonic, f"{code.hex()}: {insn.mnemonic} {insn.op_str}"
    got = operands(insn)
    assert len(got) == len(ops), f"{code.hex()}: {insn.op_str}"
    for g, w in zip(got, ops):
        w = want_op(w, imm_bits)
        if g[0] == "imm" and w[0] == "imm":
            mask = (1 << (8 * g[2])) - 1
            assert g[1] & mask == w[1] & mask, f"{code.hex()}: {insn.op_str}"
        else:
            assert g == w, f"{code.hex()}: {insn.op_str}"
    return code


# ----------------------------------------------------------------------------------- reg, reg forms

REG_PAIRS = {
    64: list(itertools.product(R64, [asm.RAX, asm.RSP, asm.RBP, asm.R8, asm.R12, asm.R13, asm.R15])),
    32: list(itertools.product(R32, [asm.EAX, asm.ESP, asm.EBP, asm.R9D, asm.R12D, asm.R13D])),
    16: list(itertools.product(R16, [asm.AX, reg("sp"), reg("r10w")])),
    8: list(itertools.product(R8, [asm.AL, reg("spl"), reg("dil"), reg("r11b")])),
}


@pytest.mark.parametrize("size", [64, 32, 16, 8])
@pytest.mark.parametrize("op", ALU + ["mov", "test", "xchg"])
def test_reg_reg(op, size):
    mnemonic = op.rstrip("_")
    for dst, src in REG_PAIRS[size]:
        if op in ("xchg", "test"):  # capstone may list the operands of these either way round
            a = Assembler(64)
            getattr(a, op)(dst, src)
            code = a.assemble()
            (insn,) = decode(code)
            assert insn.mnemonic == mnemonic and insn.size == len(code)
            assert sorted(o[1] for o in operands(insn)) == sorted([dst.name, src.name])
        else:
            check_one(lambda a: getattr(a, op)(dst, src), mnemonic, [dst, src])


# ----------------------------------------------------------------------------------- memory operands

BASES64 = R64
INDEXES64 = [None, asm.RAX, asm.RBP, asm.R8, asm.R12, asm.R13, asm.R15]
DISPS = [0, 8, -8, 127, -128, 128, -129, 0x12345678, -0x80000000]
MEMS64 = [mem(b, d, i, s) for b in BASES64 for d in DISPS for i, s in
          ([(None, 1)] + [(i, s) for i in INDEXES64[1:] for s in (1, 8)])][::3]  # a third, spread evenly
MEMS64 += [mem(b, d) for b in (asm.RSP, asm.R12, asm.RBP, asm.R13) for d in DISPS]  # every special base
MEMS64 += [mem(None, 0x1000), mem(None, 0x10, asm.RCX, 4), mem(None, -8, asm.R9, 2)]  # no base: SIB forms


def test_mem_operand_count():
    assert len(MEMS64) > 300


@pytest.mark.parametrize("size", [64, 32, 16, 8])
def test_mov_load_store(size):
    regs = {64: R64, 32: R32, 16: R16, 8: R8}[size]
    for i, m in enumerate(MEMS64):
        r = regs[i % 16]
        check_one(lambda a: a.mov(r, m), "mov", [r, m])
        check_one(lambda a: a.mov(m, r), "mov", [m, r])


@pytest.mark.parametrize("op", ALU)
def test_alu_mem(op):
    for i, m in enumerate(MEMS64[::2]):
        r = (R64, R32, R16, R8)[i % 4][(i * 7) % 16]
        check_one(lambda a: getattr(a, op)(r, m), op.rstrip("_"), [r, m])
        check_one(lambda a: getattr(a, op)(m, r), op.rstrip("_"), [m, r])


IMMS = {64: [0, 1, -1, 127, -128, 128, 0x7FFFFFFF, -0x80000000],
        32: [0, 1, -1, 127, -128, 128, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x12345678],
        16: [0, 1, -1, 127, 128, 0x7FFF, 0xFFFF], 8: [0, 1, 0x7F, 0x80, 0xFF, -1]}


@pytest.mark.parametrize("size", [64, 32, 16, 8])
@pytest.mark.parametrize("op", ALU + ["test"])
def test_alu_imm(op, size):
    regs = {64: R64, 32: R32, 16: R16, 8: R8}[size]
    for i, imm in enumerate(IMMS[size]):
        for r in (regs[i % 16], regs[(i + 8) % 16], regs[0]):
            check_one(lambda a: getattr(a, op)(r, imm), op.rstrip("_"), [r, imm])
        m = Mem(MEMS64[i * 5].base, MEMS64[i * 5].index, MEMS64[i * 5].scale, MEMS64[i * 5].disp, None, size)
        check_one(lambda a: getattr(a, op)(m, imm), op.rstrip("_"), [m, imm])


@pytest.mark.parametrize("size", [64, 32, 16, 8])
def test_mov_imm(size):
    regs = {64: R64, 32: R32, 16: R16, 8: R8}[size]
    imms = IMMS[size] + ([0x123456789ABCDEF0, 0xFFFFFFFF, 0x80000000, 1 << 63] if size == 64 else [])
    for imm in imms:
        for r in regs:
            check_one(lambda a: a.mov(r, imm), "movabs" if size == 64 and not -(1 << 31) <= imm < 1 << 31
                      else "mov", [r, imm])
    for i, imm in enumerate(IMMS[size]):
        m = Mem(MEMS64[i].base, MEMS64[i].index, MEMS64[i].scale, MEMS64[i].disp, None, size)
        check_one(lambda a: a.mov(m, imm), "mov", [m, imm])


def test_lea_movzx():
    for i, m in enumerate(MEMS64):
        r = R64[i % 16]
        check_one(lambda a: a.lea(r, m), "lea", [r, m])
        r32 = R32[(i + 3) % 16]
        m8 = Mem(m.base, m.index, m.scale, m.disp, None, 8)
        check_one(lambda a: a.movzx(r32, m8), "movzx", [r32, m])
        m16 = Mem(m.base, m.index, m.scale, m.disp, None, 16)
        check_one(lambda a: a.movzx(r, m16), "movzx", [r, m])
    for r, s in itertools.product(R32, R8):
        check_one(lambda a: a.movzx(r, s), "movzx", [r, s])


@pytest.mark.parametrize("op", ["rol", "ror", "shl", "shr", "sar"])
def test_shifts(op):
    for regs in (R64, R32, R16, R8):
        for r in regs:
            for n in (1, 2, 7, 31):
                if regs is R8 and n > 7:
                    continue
                check_one(lambda a: getattr(a, op)(r, n), op, [r, n] if n != 1 else [r, 1])
            check_one(lambda a: getattr(a, op)(r, asm.CL), op, [r, asm.CL])


@pytest.mark.parametrize("op", ["inc", "dec", "not_", "neg", "mul", "div"])
def test_unary(op):
    for r in R64 + R32 + R16 + R8:
        check_one(lambda a: getattr(a, op)(r), op.rstrip("_"), [r] if op not in ("mul", "div") or True else [])
    for m in MEMS64[:40]:
        m32 = Mem(m.base, m.index, m.scale, m.disp, None, 32)
        check_one(lambda a: getattr(a, op)(m32), op.rstrip("_"), [m])


def test_push_pop_bswap():
    for r in R64:
        check_one(lambda a: a.push(r), "push", [r])
        check_one(lambda a: a.pop(r), "pop", [r])
        check_one(lambda a: a.bswap(r), "bswap", [r])
    for r in R32:
        check_one(lambda a: a.bswap(r), "bswap", [r])
        check_one(lambda a: a.push(r), "push", [r], bits=32) if r.num < 8 else None
        check_one(lambda a: a.pop(r), "pop", [r], bits=32) if r.num < 8 else None
    for imm in (0, 8, 0x10, -1, 127, 128, 0x12345678, -0x80000000):
        check_one(lambda a: a.push(imm), "push", [imm])


def test_sreg_and_cr():
    for s in (asm.DS, asm.ES, asm.SS, asm.FS, asm.GS):
        for r in R32:
            check_one(lambda a: a.mov(s, r), "mov", [s, r])
        for r in R32[:8]:
            check_one(lambda a: a.mov(s, r), "mov", [s, r], bits=32)
        check_one(lambda a: a.mov(asm.EAX, s), "mov", [asm.EAX, s])
    for cr in (asm.CR0, asm.CR2, asm.CR3, asm.CR4):
        for r in R64:
            check_one(lambda a: a.mov(cr, r), "mov", [cr, r])
            check_one(lambda a: a.mov(r, cr), "mov", [r, cr])
        for r in R32[:8]:
            check_one(lambda a: a.mov(cr, r), "mov", [cr, r], bits=32)
            check_one(lambda a: a.mov(r, cr), "mov", [r, cr], bits=32)


@pytest.mark.parametrize("name, mnemonic, code", [
    ("cli", "cli", "fa"), ("sti", "sti", "fb"), ("cld", "cld", "fc"), ("hlt", "hlt", "f4"), ("nop", "nop", "90"),
    ("pause", "pause", "f390"), ("cpuid", "cpuid", "0fa2"), ("rdmsr", "rdmsr", "0f32"), ("wrmsr", "wrmsr", "0f30"),
    ("ret", "ret", "c3"), ("lretq", "retfq", "48cb"), ("ud2", "ud2", "0f0b"),
])
def test_no_operand(name, mnemonic, code):
    a = Assembler(64)
    getattr(a, name)()
    assert a.assemble().hex() == code
    (insn,) = decode(bytes.fromhex(code))
    assert insn.mnemonic == mnemonic


def test_string_ops():
    for width, suffix in ((1, "b"), (2, "w"), (4, "d"), (8, "q")):
        for name, mn in (("rep_movs", "rep movs"), ("rep_stos", "rep stos"), ("stos", "stos"), ("lods", "lods")):
            a = Assembler(64)
            getattr(a, name)(width)
            (insn,) = decode(a.assemble())
            assert insn.mnemonic == mn + suffix
            if width < 8:
                a = Assembler(32)
                getattr(a, name)(width)
                (insn,) = decode(a.assemble(), 32)
                assert insn.mnemonic == mn + suffix


def test_in_out():
    for bits in (64, 32):
        check_one(lambda a: a.inb(), "in", [asm.AL, asm.DX], bits=bits)
        check_one(lambda a: a.outb(), "out", [asm.DX, asm.AL], bits=bits)
        check_one(lambda a: a.inb(0x60), "in", [asm.AL, 0x60], bits=bits)
        check_one(lambda a: a.outb(0x80), "out", [0x80, asm.AL], bits=bits)


def test_lgdt_lidt_forms():
    for m in MEMS64[:60] + [mem(None, 0x2000)]:
        check_one(lambda a: a.lgdt(m), "lgdt", [m])
        check_one(lambda a: a.lidt(m), "lidt", [m])


# ----------------------------------------------------------------------------------- labels and fixups

def test_rip_relative_targets():
    a = Assembler(64, base=0x400000)
    a.lgdt(rip("gdtr"))
    a.mov(rip("word", 2, size=32), 0x12345678)  # an immediate after the disp32: rip is after it
    a.lea(asm.R13, rip("word"))
    a.movdqa(asm.XMM9, rip("word"))
    a.jmp(rip("word"))
    a.align(16)
    a.label("gdtr")
    a.dw(0)
    a.label("word")
    a.dq(0)
    code = a.assemble()
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    gdtr, word = 0x400000 + a.labels["gdtr"], 0x400000 + a.labels["word"]
    got = []
    for insn in md.disasm(code[:a.labels["gdtr"]], 0x400000):
        for op in insn.operands:
            if op.type == C.X86_OP_MEM and op.mem.base == C.X86_REG_RIP:
                got.append(insn.address + insn.size + op.mem.disp)
    assert got == [gdtr, word + 2, word, word, word]


def test_jumps_and_calls():
    a = Assembler(64, base=0x10000)
    a.label("top")
    a.nop()
    a.jmp("top")  # backward, short
    a.j("nz", "top")
    a.jmp("far_fwd")  # forward: rel32
    a.j("e", "near_fwd", short=True)
    a.call("top")
    a.label("near_fwd")
    for _ in range(200):
        a.nop()
    a.jmp("top")  # backward, too far for rel8
    for cc in asm.CC:
        a.j(cc, "top")
    a.label("far_fwd")
    a.call(asm.RAX)
    a.call(asm.R11)
    a.jmp(asm.R15)
    a.jmp(mem(asm.RSP, 8))
    code = a.assemble()
    insns = decode(code, 64, 0x10000)
    top, fwd, near = 0x10000, 0x10000 + a.labels["far_fwd"], 0x10000 + a.labels["near_fwd"]
    assert [(i.mnemonic, i.size) for i in insns[1:4]] == [("jmp", 2), ("jne", 2), ("jmp", 5)]
    assert insns[1].operands[0].imm == top and insns[2].operands[0].imm == top
    assert insns[3].operands[0].imm == fwd
    assert insns[4].mnemonic == "je" and insns[4].size == 2 and insns[4].operands[0].imm == near
    assert insns[5].mnemonic == "call" and insns[5].operands[0].imm == top
    back = insns[6 + 200]
    assert back.mnemonic == "jmp" and back.size == 5 and back.operands[0].imm == top
    for insn, cc in zip(insns[7 + 200:], asm.CC):
        assert insn.operands[0].imm == top
        assert insn.bytes[0] == 0x0F and insn.bytes[1] == 0x80 + asm.CC[cc]
    tail = [f"{i.mnemonic} {i.op_str}" for i in insns[-4:]]
    assert tail == ["call rax", "call r11", "jmp r15", "jmp qword ptr [rsp + 8]"]


def test_short_jump_out_of_range_fails():
    a = Assembler(64)
    a.jmp("far", short=True)
    a.raw(bytes(200))
    a.label("far")
    with pytest.raises(AsmError, match="does not fit"):
        a.assemble()


def test_undefined_and_duplicate_labels():
    a = Assembler(64)
    a.jmp("nowhere")
    with pytest.raises(AsmError, match="undefined"):
        a.assemble()
    a.label("x")
    with pytest.raises(AsmError, match="twice"):
        a.label("x")


def test_data_and_absolute_addresses():
    a = Assembler(64, base=0x200000)
    a.db(1, 2, b"ab")
    a.dw(0x1234)
    a.align(8, 0)
    a.label("here")
    a.dd("here")
    a.dq("here", -1)
    a.mov_label(asm.R9, "here")
    a.mov_label(asm.ECX, "here")
    code = a.assemble()
    assert code[:6] == b"\x01\x02ab\x34\x12"
    assert code[8:12] == (0x200008).to_bytes(4, "little")
    assert code[12:20] == (0x200008).to_bytes(8, "little") and code[20:28] == b"\xff" * 8
    insns = decode(code[28:], 64)
    assert [(i.mnemonic, i.operands[1].imm) for i in insns] == [("movabs", 0x200008), ("mov", 0x200008)]


def test_align_pads_with_nops():
    a = Assembler(64)
    a.cli()
    a.align(16)
    assert a.assemble() == b"\xfa" + b"\x90" * 15


# ----------------------------------------------------------------------------------- SSE and SHA

SSE = [("paddd", "paddd"), ("pxor", "pxor"), ("punpcklqdq", "punpcklqdq"), ("punpckhqdq", "punpckhqdq"),
       ("pshufb", "pshufb"), ("sha256msg1", "sha256msg1"), ("sha256msg2", "sha256msg2"),
       ("movdqa", "movdqa"), ("movdqu", "movdqu")]


@pytest.mark.parametrize("name, mnemonic", SSE)
def test_sse_reg_reg_and_mem(name, mnemonic):
    for x, y in itertools.product(XMM, XMM[::3]):
        check_one(lambda a: getattr(a, name)(x, y), mnemonic, [x, y])
    for i, m in enumerate(MEMS64[::4]):
        x = XMM[i % 16]
        check_one(lambda a: getattr(a, name)(x, m), mnemonic, [x, m])
    for i, m in enumerate(MEMS64[:20]):
        if name in ("movdqa", "movdqu"):
            x = XMM[(i * 5) % 16]
            check_one(lambda a: getattr(a, name)(m, x), mnemonic, [m, x])


def test_sha256rnds2_and_imm_forms():
    for x, y in itertools.product(XMM, XMM[::2]):
        code = check_one(lambda a: a.sha256rnds2(x, y), "sha256rnds2", [x, y])  # xmm0 is implicit
        assert decode(code)[0].op_str.endswith(", xmm0")
        check_one(lambda a: a.pshufd(x, y, 0x1B), "pshufd", [x, y, 0x1B])
        check_one(lambda a: a.palignr(x, y, 4), "palignr", [x, y, 4])
    for m in MEMS64[:30]:
        check_one(lambda a: a.sha256rnds2(asm.XMM10, m), "sha256rnds2", [asm.XMM10, m])
        check_one(lambda a: a.pshufd(asm.XMM1, m, 0x0E), "pshufd", [asm.XMM1, m, 0x0E])


# ----------------------------------------------------------------------------------- 32-bit mode

BASES32 = R32[:8]
MEMS32 = [mem(b, d, i, s) for b in BASES32 for d in DISPS[:7] for i, s in ((None, 1), (asm.EBX, 4), (asm.EBP, 2))]
MEMS32 += [mem(None, 0x1000), mem(None, 0xFFFFF000 - (1 << 32))]


def test_32bit_forms():
    for i, m in enumerate(MEMS32):
        r = R32[i % 8]
        check_one(lambda a: a.mov(r, m), "mov", [r, m], bits=32)
        check_one(lambda a: a.add(m, r), "add", [m, r], bits=32)
        check_one(lambda a: a.lea(r, m), "lea", [r, m], bits=32)
        check_one(lambda a: a.lgdt(m), "lgdt", [m], bits=32)
    for r, s in itertools.product(R32[:8], R32[:8]):
        for op in ALU:
            check_one(lambda a: getattr(a, op)(r, s), op.rstrip("_"), [r, s], bits=32)
        check_one(lambda a: a.mov(r, 0xDEADBEEF), "mov", [r, 0xDEADBEEF], bits=32)
    for r in R32[:8]:
        check_one(lambda a: a.and_(r, 0x7FFFFFFF), "and", [r, 0x7FFFFFFF], bits=32)
        check_one(lambda a: a.or_(r, 0x80000000), "or", [r, 0x80000000], bits=32)
        check_one(lambda a: a.jmp(r), "jmp", [r], bits=32)
        check_one(lambda a: a.inc(r), "inc", [r], bits=32)


def test_32bit_absolute_labels_and_far_return():
    a = Assembler(32, base=0x80000000)
    a.lgdt(absolute("gdtr"))
    a.retf()
    a.jmp_abs(0x200000)
    a.label("gdtr")
    code = a.assemble()
    insns = decode(code, 32, 0x80000000)
    assert insns[0].mnemonic == "lgdt" and insns[0].operands[0].mem.disp & 0xFFFFFFFF == 0x80000000 + a.labels["gdtr"]
    assert insns[1].mnemonic == "retf"
    assert insns[2].mnemonic == "jmp" and insns[2].operands[0].imm == 0x200000


@pytest.mark.parametrize("emit", [
    lambda a: a.mov(asm.R8D, 1), lambda a: a.mov(asm.RAX, 1), lambda a: a.add(asm.EAX, asm.R9D),
    lambda a: a.mov(reg("sil"), 1), lambda a: a.lea(asm.EAX, rip("x")), lambda a: a.lretq(),
    lambda a: a.mov(asm.EAX, mem(asm.RAX)), lambda a: a.movdqa(asm.XMM8, asm.XMM0), lambda a: a.rep_movs(8),
], ids=["r8d", "rax", "r9d", "sil", "rip", "lretq", "rax-base", "xmm8", "movsq"])
def test_32bit_mode_rejects_64bit_only(emit):
    with pytest.raises(AsmError):
        emit(Assembler(32))


@pytest.mark.parametrize("emit", [
    lambda a: a.mov(asm.RAX, mem(asm.RBX, 0, asm.RSP)),  # rsp is never an index
    lambda a: a.mov(asm.RAX, asm.EAX),  # size mismatch
    lambda a: a.add(asm.RAX, 1 << 40),  # no imm64 for ALU ops
    lambda a: a.mov(asm.RAX, mem(asm.EAX)),  # 32-bit address size not offered
    lambda a: a.mov(asm.RAX, mem(asm.RBX, 1 << 33)),  # displacement too big
    lambda a: a.mov(mem(asm.RAX), 1),  # operand size unknown
    lambda a: a.paddd(asm.XMM0, asm.EAX),
    lambda a: a.mov(asm.RAX, mem(asm.RBX, 0, asm.RCX, 3)),
], ids=["rsp-index", "size", "imm64", "addr32", "disp", "nosize", "xmm-gpr", "scale3"])
def test_bad_operands(emit):
    with pytest.raises(AsmError):
        emit(Assembler(64))


def test_golden_sample():
    """A few forms pinned byte for byte (SDM encodings worked out by hand)."""
    a = Assembler(64)
    a.mov(asm.RAX, mem(asm.RSP))  # 48 8b 04 24: rsp base needs SIB 24
    a.mov(asm.RAX, mem(asm.R12))  # 49 8b 04 24
    a.mov(asm.RAX, mem(asm.RBP))  # 48 8b 45 00: rbp base needs disp8 0
    a.mov(asm.RAX, mem(asm.R13))  # 49 8b 45 00
    a.mov(asm.EAX, mem(None, 0x1000))  # 8b 04 25 00 10 00 00: absolute needs SIB in 64-bit mode
    a.mov(reg("sil"), asm.AL)  # 40 88 c6: bare REX selects sil instead of dh
    a.sha256rnds2(asm.XMM1, asm.XMM2)  # 0f 38 cb ca
    a.palignr(asm.XMM9, asm.XMM10, 4)  # 66 45 0f 3a 0f ca 04: 66 before REX
    assert a.assemble().hex() == ("488b0424" "498b0424" "488b4500" "498b4500" "8b042500100000" "408af0"
                                  "0f38cbca" "66450f3a0fca04")
