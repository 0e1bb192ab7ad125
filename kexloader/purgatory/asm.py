"""A small x86-64 / IA-32 encoder: just the instruction forms the purgatory and the probe kernels need.

Every form is written from the Intel SDM vol. 2 opcode tables (ModRM/SIB/REX rules in vol. 2A §2.1-2.2)
and cross-checked against capstone in tests/purgatory/test_asm.py.

Use:
    a = Assembler(bits=64, base=0x100000)
    a.label("top"); a.mov(RAX, 1); a.jmp("top")
    code = a.assemble()

Labels may be used before they are defined (forward references); `assemble()` patches them.
Operands: registers (RAX, EAX, AL, XMM0, DS, CR0 ...), integers (immediates), `Mem` (from `mem()`
or `rip()`), and label names (str) where an address is meant (jumps, `rip()`, `dd/dq`, `imm_addr()`).
`a.bits = 32` switches the code mode mid-stream (like GNU as `.code32`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from ..errors import KexloaderError


class AsmError(KexloaderError):
    """An instruction that cannot be encoded (bad operands, label out of range...). A bug in the caller."""


# --------------------------------------------------------------------------------------------- operands


@dataclass(frozen=True)
class Reg:
    name: str
    num: int  # 0..15 (the ModRM/REX number)
    size: int  # bits: 8, 16, 32, 64, 128; 16 for segment registers; 64 for control registers
    kind: str = "gpr"  # gpr, xmm, seg, cr

    def __repr__(self) -> str:
        return self.name


_R64 = "rax rcx rdx rbx rsp rbp rsi rdi r8 r9 r10 r11 r12 r13 r14 r15".split()
_R32 = "eax ecx edx ebx esp ebp esi edi r8d r9d r10d r11d r12d r13d r14d r15d".split()
_R16 = "ax cx dx bx sp bp si di r8w r9w r10w r11w r12w r13w r14w r15w".split()
_R8 = "al cl dl bl spl bpl sil dil r8b r9b r10b r11b r12b r13b r14b r15b".split()

for _names, _size in ((_R64, 64), (_R32, 32), (_R16, 16), (_R8, 8)):
    for _i, _n in enumerate(_names):
        globals()[_n.upper()] = Reg(_n, _i, _size)
for _i in range(16):
    globals()[f"XMM{_i}"] = Reg(f"xmm{_i}", _i, 128, "xmm")
for _i, _n in enumerate("es cs ss ds fs gs".split()):
    globals()[_n.upper()] = Reg(_n, _i, 16, "seg")
for _i in (0, 2, 3, 4):
    globals()[f"CR{_i}"] = Reg(f"cr{_i}", _i, 64, "cr")

RIP = Reg("rip", -1, 64, "rip")  # only as a Mem base, via rip()

# names for linters and readers (the loop above defines them)
RAX: Reg; RCX: Reg; RDX: Reg; RBX: Reg; RSP: Reg; RBP: Reg; RSI: Reg; RDI: Reg
R8: Reg; R9: Reg; R10: Reg; R11: Reg; R12: Reg; R13: Reg; R14: Reg; R15: Reg
EAX: Reg; ECX: Reg; EDX: Reg; EBX: Reg; ESP: Reg; EBP: Reg; ESI: Reg; EDI: Reg
R8D: Reg; R9D: Reg; R10D: Reg; R11D: Reg; R12D: Reg; R13D: Reg; R14D: Reg; R15D: Reg
AX: Reg; CX: Reg; DX: Reg; BX: Reg; AL: Reg; CL: Reg; DL: Reg; BL: Reg
XMM0: Reg; XMM1: Reg; XMM2: Reg; XMM3: Reg; XMM4: Reg; XMM5: Reg; XMM6: Reg; XMM7: Reg
XMM8: Reg; XMM9: Reg; XMM10: Reg; XMM11: Reg; XMM12: Reg; XMM13: Reg; XMM14: Reg; XMM15: Reg
ES: Reg; CS: Reg; SS: Reg; DS: Reg; FS: Reg; GS: Reg; CR0: Reg; CR2: Reg; CR3: Reg; CR4: Reg


def reg(name: str) -> Reg:
    """Look a register up by its lower-case name ("r13d", "xmm9")."""
    return cast(Reg, globals()[name.upper()])


@dataclass(frozen=True)
class Mem:
    """A memory operand [base + index*scale + disp], or [rip + label] / absolute [label] when `label` is set."""

    base: Reg | None = None
    index: Reg | None = None
    scale: int = 1
    disp: int = 0
    label: str | None = None  # with base=RIP: rip-relative; with base=None: absolute address (label + disp)
    size: int | None = None  # operand size in bits when no register gives it (e.g. `mov dword [x], 1`)


RM = Reg | Mem  # a ModRM r/m operand: a register or memory
_MemFixup = tuple[int, int, str, str, int]  # (offset in the ModRM bytes, size, kind, label, addend)


def mem(base: Reg | None = None, disp: int = 0, index: Reg | None = None, scale: int = 1,
        size: int | None = None) -> Mem:
    return Mem(base, index, scale, disp, None, size)


def rip(label: str, disp: int = 0, size: int | None = None) -> Mem:
    """[rip + (label + disp - next_instruction)]: position independent (64-bit mode only)."""
    return Mem(RIP, None, 1, disp, label, size)


def absolute(label: str, disp: int = 0, size: int | None = None) -> Mem:
    """[label + disp] as an absolute disp32 address (needs `base` of the Assembler; 32-bit mode, or low 2 GiB)."""
    return Mem(None, None, 1, disp, label, size)


def _fits_s8(v: int) -> bool:
    return -128 <= v <= 127


def _fits_s32(v: int) -> bool:
    return -(1 << 31) <= v < (1 << 31)


# condition codes (SDM vol. 1 appendix B): the low nibble of Jcc 70+cc / 0F 80+cc
CC = {"o": 0, "no": 1, "b": 2, "c": 2, "nae": 2, "ae": 3, "nb": 3, "nc": 3, "e": 4, "z": 4, "ne": 5, "nz": 5,
      "be": 6, "na": 6, "a": 7, "nbe": 7, "s": 8, "ns": 9, "p": 10, "pe": 10, "np": 11, "po": 11,
      "l": 12, "nge": 12, "ge": 13, "nl": 13, "le": 14, "ng": 14, "g": 15, "nle": 15}


@dataclass
class _Fixup:
    pos: int  # where the field starts
    size: int  # 1, 2, 4 or 8 bytes
    kind: str  # rel (relative to `end`), abs (label address + addend), off (label offset from code start)
    label: str
    addend: int
    end: int  # end of the instruction, for rel
    signed: bool


# --------------------------------------------------------------------------------------------- assembler


class Assembler:
    """Encodes instructions into a byte buffer; `base` is the address where the code will run."""

    def __init__(self, bits: int = 64, base: int = 0):
        if bits not in (32, 64):
            raise AsmError(f"bits must be 32 or 64, not {bits}")
        self.bits = bits
        self.base = base
        self.buf = bytearray()
        self.labels: dict[str, int] = {}
        self.fixups: list[_Fixup] = []

    # ----- labels, data, layout

    def here(self) -> int:
        """Offset of the next byte from the start of the code."""
        return len(self.buf)

    def label(self, name: str) -> str:
        if name in self.labels:
            raise AsmError(f"label {name!r} defined twice")
        self.labels[name] = len(self.buf)
        return name

    def address(self, name: str) -> int:
        """Absolute address of a defined label."""
        return self.base + self.labels[name]

    def align(self, n: int, fill: int = 0x90) -> None:
        """Pad with `fill` (nop by default) to a multiple of n bytes from the code start."""
        while len(self.buf) % n:
            self.buf.append(fill)

    def raw(self, data: bytes) -> None:
        self.buf += data

    def _data(self, size: int, values: Iterable[int | str]) -> None:
        for v in values:
            if isinstance(v, str):
                self.fixups.append(_Fixup(len(self.buf), size, "abs", v, 0, 0, False))
                v = 0
            if not -(1 << (8 * size - 1)) <= v < (1 << (8 * size)):
                raise AsmError(f"value {v:#x} does not fit in {size} bytes")
            self.buf += (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def db(self, *values: int | str | bytes | bytearray) -> None:
        for v in values:
            if isinstance(v, (bytes, bytearray)):
                self.buf += v
            else:
                self._data(1, [v])

    def dw(self, *values: int | str) -> None:
        self._data(2, values)

    def dd(self, *values: int | str) -> None:
        """32-bit data; a label name stores its absolute address."""
        self._data(4, values)

    def dq(self, *values: int | str) -> None:
        """64-bit data; a label name stores its absolute address."""
        self._data(8, values)

    def assemble(self) -> bytes:
        out = bytearray(self.buf)
        for f in self.fixups:
            if f.label not in self.labels:
                raise AsmError(f"undefined label {f.label!r}")
            target = self.labels[f.label]
            if f.kind == "rel":
                value = target + f.addend - f.end
            elif f.kind == "abs":
                value = self.base + target + f.addend
            else:
                value = target + f.addend
            bits = 8 * f.size
            lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if f.signed else (0, 1 << bits)
            if not lo <= value < hi:
                raise AsmError(f"label {f.label!r} ({f.kind} {value:#x}) does not fit in {f.size} bytes at +{f.pos:#x}")
            out[f.pos:f.pos + f.size] = (value & ((1 << bits) - 1)).to_bytes(f.size, "little")
        return bytes(out)

    # ----- encoding core

    def _check_reg(self, r: Reg) -> None:
        if self.bits == 32 and (r.num >= 8 or r.size == 64 and r.kind == "gpr"):
            raise AsmError(f"{r.name} does not exist in 32-bit mode")
        if self.bits == 32 and r.kind == "gpr" and r.size == 8 and r.num >= 4:
            raise AsmError(f"{r.name} needs a REX prefix (64-bit mode only)")

    def _emit(self, *, prefixes: bytes = b"", opcode: bytes, reg: int | Reg = 0, rm: Reg | Mem,
              w: bool = False, imm: bytes = b"", force_rex: bool = False,
              imm_fixup: tuple[str, int, str] | None = None) -> None:
        """Emit [prefixes] [REX] opcode ModRM [SIB] [disp] [imm] (SDM vol. 2A §2.1).

        `reg` is the ModRM.reg field: a register or an opcode extension (/digit)."""
        rex = 0x48 if w else 0
        if w and self.bits == 32:
            raise AsmError("64-bit operand size in 32-bit mode")
        regnum = reg if isinstance(reg, int) else reg.num
        if isinstance(reg, Reg):
            self._check_reg(reg)
            if reg.kind == "gpr" and reg.size == 8 and reg.num >= 4:
                force_rex = True  # spl/bpl/sil/dil and r8b-r15b
        if regnum >= 8:
            rex |= 0x44
        body = bytearray()
        fixup: _MemFixup | None = None
        if isinstance(rm, Reg):
            self._check_reg(rm)
            if rm.kind == "gpr" and rm.size == 8 and rm.num >= 4:
                force_rex = True
            if rm.num >= 8:
                rex |= 0x41
            body.append(0xC0 | (regnum & 7) << 3 | (rm.num & 7))
        else:
            body, fixup, rex = self._modrm_mem(regnum, rm, rex)
        if force_rex:
            rex |= 0x40
        if rex and self.bits == 32:
            raise AsmError("r8-r15 / REX needed in 32-bit mode")
        start = len(self.buf)
        insn = bytearray(prefixes)
        if rex:
            insn.append(rex)
        insn += opcode
        modrm_at = len(insn)
        insn += body
        insn += imm
        self.buf += insn
        end = len(self.buf)
        if fixup is not None:
            off, size, kind, label, addend = fixup
            # an absolute disp32 is sign-extended in 64-bit mode, a plain 32-bit address in 32-bit mode
            signed = not (kind == "abs" and self.bits == 32)
            self.fixups.append(_Fixup(start + modrm_at + off, size, kind, label, addend, end, signed))
        if imm_fixup is not None:  # (label, size, kind): an immediate that is an address
            label, size, kind = imm_fixup
            self.fixups.append(_Fixup(end - size, size, kind, label, 0, end, kind == "rel"))

    def _modrm_mem(self, regnum: int, m: Mem, rex: int) -> tuple[bytearray, _MemFixup | None, int]:
        """ModRM + SIB + displacement for a memory operand, with the rbp/r13 and rsp/r12 special cases."""
        out = bytearray()
        r = (regnum & 7) << 3
        if m.base is RIP:  # mod=00 rm=101: [rip + disp32] in 64-bit mode
            if self.bits != 64:
                raise AsmError("rip-relative addressing exists only in 64-bit mode")
            if m.index is not None:
                raise AsmError("no index register with rip-relative addressing")
            if m.label is None:
                raise AsmError("rip-relative addressing needs a label (use rip())")
            out.append(0x05 | r)
            out += b"\0\0\0\0"
            return out, (1, 4, "rel", m.label, m.disp), rex
        if m.index is not None:
            if m.index.num == 4 and m.index.kind == "gpr":
                raise AsmError("rsp cannot be an index register")
            if m.scale not in (1, 2, 4, 8):
                raise AsmError(f"bad scale {m.scale}")
            self._check_addr_reg(m.index)
            if m.index.num >= 8:
                rex |= 0x42
        if m.base is None:
            # no base: disp32 only. In 64-bit mode mod=00 rm=101 means rip-relative, so use a SIB with
            # base=101 (no base) and index=100 (none) when there is no index (SDM Table 2-3, note 1).
            if m.index is None and self.bits == 32:
                out.append(0x05 | r)
            else:
                idx = 4 if m.index is None else m.index.num & 7
                scale = {1: 0, 2: 1, 4: 2, 8: 3}[m.scale]
                out += bytes([0x04 | r, scale << 6 | idx << 3 | 5])
            disp_at = len(out)
            if m.label is not None:
                out += b"\0\0\0\0"
                return out, (disp_at, 4, "abs", m.label, m.disp), rex
            if not _fits_s32(m.disp) and not (self.bits == 32 and 0 <= m.disp < 1 << 32):
                raise AsmError(f"displacement {m.disp:#x} does not fit in 32 bits")
            out += (m.disp & 0xFFFFFFFF).to_bytes(4, "little")
            return out, None, rex
        if m.label is not None:
            raise AsmError("a label displacement needs base=None (absolute) or rip()")
        self._check_addr_reg(m.base)
        if m.base.num >= 8:
            rex |= 0x41
        # rbp/r13 as base cannot use mod=00 (that means disp32/rip), so they always carry a displacement
        if m.disp == 0 and (m.base.num & 7) != 5:
            mod, disp = 0, b""
        elif _fits_s8(m.disp):
            mod, disp = 0x40, (m.disp & 0xFF).to_bytes(1, "little")
        elif _fits_s32(m.disp):
            mod, disp = 0x80, (m.disp & 0xFFFFFFFF).to_bytes(4, "little")
        else:
            raise AsmError(f"displacement {m.disp:#x} does not fit in 32 bits")
        if m.index is None and (m.base.num & 7) != 4:
            out.append(mod | r | (m.base.num & 7))
        else:
            # rsp/r12 as base (rm=100) always needs a SIB byte; index=100 means "no index"
            idx = 4 if m.index is None else m.index.num & 7
            scale = {1: 0, 2: 1, 4: 2, 8: 3}[m.scale]
            out += bytes([mod | r | 4, scale << 6 | idx << 3 | (m.base.num & 7)])
        out += disp
        return out, None, rex

    def _check_addr_reg(self, r: Reg) -> None:
        want = 64 if self.bits == 64 else 32
        if r.kind != "gpr" or r.size != want:
            raise AsmError(f"{r.name} cannot address memory in {self.bits}-bit mode (use {want}-bit registers)")
        self._check_reg(r)

    @staticmethod
    def _size(a: RM | int | None, b: RM | int | None = None) -> int:
        for x in (a, b):
            if isinstance(x, Reg) and x.kind == "gpr":
                return x.size
        for x in (a, b):
            if isinstance(x, Mem) and x.size:
                return x.size
        raise AsmError("operand size unknown: give a register or Mem(size=...)")

    def _gpr_form(self, opc8: int, opc: int, reg: int | Reg, rm: RM, *, size: int | None = None,
                  imm: bytes = b"", imm_fixup: tuple[str, int, str] | None = None,
                  extra_opcode: bytes = b"") -> None:
        """An integer op in 8/16/32/64 bits: byte form `opc8`, else `opc` with 66h or REX.W as needed."""
        size = size or self._size(reg if isinstance(reg, Reg) else None, rm)
        prefixes = b"\x66" if size == 16 else b""
        opcode = extra_opcode + bytes([opc8 if size == 8 else opc])
        self._emit(prefixes=prefixes, opcode=opcode, reg=reg, rm=rm, w=size == 64, imm=imm, imm_fixup=imm_fixup)

    def _op_plus_reg(self, opc: int, r: Reg, *, w: bool = False, imm: bytes = b"", prefix: bytes = b"",
                     two_byte: bool = False, imm_fixup: tuple[str, int, str] | None = None) -> None:
        """Forms with the register in the opcode's low 3 bits (50+r, B8+r, 0F C8+r); REX.B for r8-r15."""
        self._check_reg(r)
        rex = (0x48 if w else 0) | (0x41 if r.num >= 8 else 0)
        if r.kind == "gpr" and r.size == 8 and r.num >= 4:
            rex |= 0x40
        if rex and self.bits == 32:
            raise AsmError(f"{r.name} / 64-bit operand not encodable in 32-bit mode")
        op = (b"\x0f" if two_byte else b"") + bytes([opc + (r.num & 7)])
        self.buf += prefix + (bytes([rex]) if rex else b"") + op + imm
        if imm_fixup is not None:
            label, size, kind = imm_fixup
            end = len(self.buf)
            self.fixups.append(_Fixup(end - size, size, kind, label, 0, end, False))

    @staticmethod
    def _imm(value: int, size: int, signed_ok: bool = True) -> bytes:
        lo = -(1 << (size * 8 - 1)) if signed_ok else 0
        if not lo <= value < 1 << (size * 8):
            raise AsmError(f"immediate {value:#x} does not fit in {size} bytes")
        return (value & ((1 << (size * 8)) - 1)).to_bytes(size, "little")

    # ----- data movement

    def mov(self, dst: RM, src: RM | int) -> None:
        """MOV in all the forms we use (SDM vol. 2B "MOV"):
        r/m, r: 88/89 /r · r, r/m: 8A/8B /r · r32, imm32: B8+rd · r64, imm: REX.W C7 /0 id (sign-extended)
        or REX.W B8+rd io · r/m, imm: C6/C7 /0 · Sreg, r/m16: 8E /r · r/m, Sreg: 8C /r ·
        CRn, r: 0F 22 /r · r, CRn: 0F 20 /r."""
        if isinstance(dst, Reg) and dst.kind == "seg" and not isinstance(src, int):
            return self._emit(opcode=b"\x8e", reg=dst.num, rm=src)
        if isinstance(src, Reg) and src.kind == "seg":
            return self._emit(opcode=b"\x8c", reg=src.num, rm=dst)
        if isinstance(dst, Reg) and dst.kind == "cr":
            return self._mov_cr(0x22, dst, src)
        if isinstance(src, Reg) and src.kind == "cr":
            return self._mov_cr(0x20, src, dst)
        if isinstance(src, int):
            size = self._size(dst)
            if isinstance(dst, Reg):
                if size == 64:
                    if _fits_s32(src) and src >= -(1 << 31):
                        return self._emit(opcode=b"\xc7", reg=0, rm=dst, w=True, imm=self._imm(src, 4))
                    if src < 0:
                        src &= (1 << 64) - 1
                    return self._op_plus_reg(0xB8, dst, w=True, imm=self._imm(src, 8, False))
                if size == 8:
                    return self._op_plus_reg(0xB0, dst, imm=self._imm(src, 1))
                return self._op_plus_reg(0xB8, dst, imm=self._imm(src, size // 8),
                                         prefix=b"\x66" if size == 16 else b"")
            isz = min(size, 32) // 8
            if size == 64 and not _fits_s32(src):
                raise AsmError(f"mov qword [m], {src:#x}: only sign-extended imm32 exists")
            return self._gpr_form(0xC6, 0xC7, 0, dst, size=size, imm=self._imm(src, isz))
        if isinstance(dst, Reg) and isinstance(src, (Reg, Mem)):
            if isinstance(src, Reg) and src.size != dst.size:
                raise AsmError(f"mov {dst.name}, {src.name}: size mismatch")
            return self._gpr_form(0x8A, 0x8B, dst, src)
        if isinstance(dst, Mem) and isinstance(src, Reg):
            return self._gpr_form(0x88, 0x89, src, dst)
        raise AsmError(f"mov {dst!r}, {src!r}: no such form")

    def _mov_cr(self, opc: int, cr: Reg, r: RM | int) -> None:
        want = 64 if self.bits == 64 else 32
        if not isinstance(r, Reg) or r.kind != "gpr" or r.size != want:
            raise AsmError(f"mov to/from {cr.name} takes a {want}-bit register")
        self._emit(opcode=bytes([0x0F, opc]), reg=cr.num, rm=r)

    def mov_label(self, dst: Reg, label: str) -> None:
        """mov r32/r64, imm = absolute address of `label` (B8+rd id / REX.W B8+rd io)."""
        if dst.size == 64:
            self._op_plus_reg(0xB8, dst, w=True, imm=b"\0" * 8, imm_fixup=(label, 8, "abs"))
        elif dst.size == 32:
            self._op_plus_reg(0xB8, dst, imm=b"\0" * 4, imm_fixup=(label, 4, "abs"))
        else:
            raise AsmError("mov_label needs a 32- or 64-bit register")

    def lea(self, dst: Reg, src: Mem) -> None:
        """LEA r, m: 8D /r."""
        if not isinstance(src, Mem):
            raise AsmError("lea needs a memory operand")
        self._gpr_form(0x8D, 0x8D, dst, src)

    def movzx(self, dst: Reg, src: RM) -> None:
        """MOVZX r, r/m8: 0F B6 /r · r, r/m16: 0F B7 /r."""
        ssize = src.size if isinstance(src, Reg) else src.size
        if ssize not in (8, 16):
            raise AsmError("movzx source must be 8 or 16 bits (give Mem(size=...))")
        self._emit(prefixes=b"\x66" if dst.size == 16 else b"", opcode=b"\x0f" + bytes([0xB6 if ssize == 8 else 0xB7]),
                   reg=dst, rm=src, w=dst.size == 64)

    def xchg(self, a: Reg, b: RM) -> None:
        """XCHG r/m, r: 86/87 /r."""
        self._gpr_form(0x86, 0x87, a, b)

    def bswap(self, r: Reg) -> None:
        """BSWAP r32/r64: 0F C8+rd (REX.W for 64)."""
        if r.size not in (32, 64):
            raise AsmError("bswap takes a 32- or 64-bit register")
        self._op_plus_reg(0xC8, r, w=r.size == 64, two_byte=True)

    def push(self, x: Reg | int) -> None:
        """PUSH r64: 50+rd · imm8: 6A ib · imm32: 68 id (sign-extended to the stack width)."""
        if isinstance(x, int):
            if _fits_s8(x):
                self.buf += bytes([0x6A]) + self._imm(x, 1)
            else:
                self.buf += bytes([0x68]) + self._imm(x, 4)
            return
        want = 64 if self.bits == 64 else 32
        if x.size != want:
            raise AsmError(f"push takes a {want}-bit register here")
        self._op_plus_reg(0x50, x)

    def pop(self, r: Reg) -> None:
        """POP r64: 58+rd."""
        want = 64 if self.bits == 64 else 32
        if r.size != want:
            raise AsmError(f"pop takes a {want}-bit register here")
        self._op_plus_reg(0x58, r)

    # ----- integer arithmetic and logic

    _ALU = {"add": 0, "or": 1, "adc": 2, "sbb": 3, "and": 4, "sub": 5, "xor": 6, "cmp": 7}

    def _alu(self, name: str, dst: RM, src: RM | int) -> None:
        """Group-1 ALU ops (SDM "ADD" etc.): r/m, r: 00+8k /r (01 for 16/32/64) · r, r/m: 02+8k /r ·
        r/m, imm8 (sign-extended): 83 /k ib · r/m, imm: 80 /k ib, 81 /k id."""
        k = self._ALU[name]
        if isinstance(src, int):
            size = self._size(dst)
            if size == 8:
                return self._gpr_form(0x80, 0x80, k, dst, size=8, imm=self._imm(src, 1))
            if _fits_s8(src):
                return self._gpr_form(0x83, 0x83, k, dst, size=size, imm=self._imm(src, 1))
            if size == 32 and 0 <= src < 1 << 32:
                src = src - (1 << 32) if src >= 1 << 31 else src
            if size == 16 and 0 <= src < 1 << 16:
                return self._gpr_form(0x81, 0x81, k, dst, size=16, imm=self._imm(src, 2))
            if not _fits_s32(src):
                raise AsmError(f"{name}: immediate {src:#x} does not fit in a sign-extended imm32")
            return self._gpr_form(0x81, 0x81, k, dst, size=size, imm=self._imm(src, min(size, 32) // 8))
        if isinstance(src, Reg):
            if isinstance(dst, Reg) and dst.size != src.size:
                raise AsmError(f"{name} {dst.name}, {src.name}: size mismatch")
            return self._gpr_form(8 * k, 8 * k + 1, src, dst)
        if isinstance(dst, Reg) and isinstance(src, Mem):
            return self._gpr_form(8 * k + 2, 8 * k + 3, dst, src)
        raise AsmError(f"{name} {dst!r}, {src!r}: no such form")

    def add(self, dst: RM, src: RM | int) -> None: self._alu("add", dst, src)
    def or_(self, dst: RM, src: RM | int) -> None: self._alu("or", dst, src)
    def adc(self, dst: RM, src: RM | int) -> None: self._alu("adc", dst, src)
    def sbb(self, dst: RM, src: RM | int) -> None: self._alu("sbb", dst, src)
    def and_(self, dst: RM, src: RM | int) -> None: self._alu("and", dst, src)
    def sub(self, dst: RM, src: RM | int) -> None: self._alu("sub", dst, src)
    def xor(self, dst: RM, src: RM | int) -> None: self._alu("xor", dst, src)
    def cmp(self, dst: RM, src: RM | int) -> None: self._alu("cmp", dst, src)

    def test(self, dst: RM, src: Reg | int) -> None:
        """TEST r/m, r: 84/85 /r · r/m, imm: F6 /0 ib, F7 /0 id."""
        if isinstance(src, int):
            size = self._size(dst)
            if size == 32 and src >= 1 << 31:
                src -= 1 << 32
            if size == 64 and not _fits_s32(src):
                raise AsmError(f"test: immediate {src:#x} does not fit in a sign-extended imm32")
            return self._gpr_form(0xF6, 0xF7, 0, dst, size=size, imm=self._imm(src, min(size, 32) // 8))
        self._gpr_form(0x84, 0x85, src, dst)

    def _unary(self, digit: int, opc8: int, opc: int, x: RM) -> None:
        self._gpr_form(opc8, opc, digit, x, size=self._size(x))

    def inc(self, x: RM) -> None: self._unary(0, 0xFE, 0xFF, x)  # FE/FF /0 (not 40+r: that is REX in 64-bit mode)
    def dec(self, x: RM) -> None: self._unary(1, 0xFE, 0xFF, x)  # FE/FF /1
    def not_(self, x: RM) -> None: self._unary(2, 0xF6, 0xF7, x)  # F6/F7 /2
    def neg(self, x: RM) -> None: self._unary(3, 0xF6, 0xF7, x)  # F6/F7 /3
    def mul(self, x: RM) -> None: self._unary(4, 0xF6, 0xF7, x)  # F6/F7 /4: rdx:rax = rax * x (unsigned)
    def div(self, x: RM) -> None: self._unary(6, 0xF6, 0xF7, x)  # F6/F7 /6: rax = rdx:rax / x, rdx = remainder

    _SHIFT = {"rol": 0, "ror": 1, "shl": 4, "shr": 5, "sar": 7}

    def _shift(self, name: str, dst: RM, count: Reg | int) -> None:
        """Group-2 shifts/rotates: r/m, 1: D0/D1 /k · r/m, CL: D2/D3 /k · r/m, imm8: C0/C1 /k ib."""
        k = self._SHIFT[name]
        if count is CL:
            return self._gpr_form(0xD2, 0xD3, k, dst)
        if count == 1:
            return self._gpr_form(0xD0, 0xD1, k, dst)
        if isinstance(count, Reg) or not 0 <= count < 64:
            raise AsmError(f"{name}: bad count {count}")
        self._gpr_form(0xC0, 0xC1, k, dst, imm=bytes([count]))

    def rol(self, dst: RM, count: Reg | int) -> None: self._shift("rol", dst, count)
    def ror(self, dst: RM, count: Reg | int) -> None: self._shift("ror", dst, count)
    def shl(self, dst: RM, count: Reg | int) -> None: self._shift("shl", dst, count)
    def shr(self, dst: RM, count: Reg | int) -> None: self._shift("shr", dst, count)
    def sar(self, dst: RM, count: Reg | int) -> None: self._shift("sar", dst, count)

    # ----- control flow

    def _rel(self, short_op: bytes, near_op: bytes, target: str, short: bool | None) -> None:
        """A relative branch. Backward targets within reach get rel8; forward ones get rel32 unless short=True
        (then assemble() fails if the target is out of reach). Deterministic either way."""
        if short is None:
            if target in self.labels:
                dist = self.labels[target] - (len(self.buf) + len(short_op) + 1)
                short = _fits_s8(dist)
            else:
                short = False
        op = short_op if short else near_op
        size = 1 if short else 4
        self.buf += op + b"\0" * size
        end = len(self.buf)
        self.fixups.append(_Fixup(end - size, size, "rel", target, 0, end, True))

    def jmp(self, target: str | RM, short: bool | None = None) -> None:
        """JMP rel8: EB cb · rel32: E9 cd · r/m64 (or r/m32 in 32-bit mode): FF /4."""
        if isinstance(target, str):
            return self._rel(b"\xeb", b"\xe9", target, short)
        self._indirect(4, target)

    def jmp_abs(self, address: int) -> None:
        """JMP rel32 to a fixed absolute address (E9 cd), computed from `base`."""
        self.buf += b"\xe9\0\0\0\0"
        rel = address - (self.base + len(self.buf))
        if self.bits == 32:
            rel = (rel + (1 << 31)) % (1 << 32) - (1 << 31)  # EIP wraps modulo 2^32
        if not _fits_s32(rel):
            raise AsmError(f"jmp to {address:#x} is out of rel32 reach from {self.base + len(self.buf):#x}")
        self.buf[-4:] = self._imm(rel, 4)

    def call(self, target: str | RM) -> None:
        """CALL rel32: E8 cd · r/m64: FF /2."""
        if isinstance(target, str):
            return self._rel(b"", b"\xe8", target, False)
        self._indirect(2, target)

    def _indirect(self, digit: int, target: RM) -> None:
        want = 64 if self.bits == 64 else 32
        if isinstance(target, Reg) and target.size != want:
            raise AsmError(f"indirect branch takes a {want}-bit register here")
        self._emit(opcode=b"\xff", reg=digit, rm=target)  # default operand size is 64 in 64-bit mode: no REX.W

    def j(self, cc: str, target: str, short: bool | None = None) -> None:
        """Jcc rel8: 70+cc cb · rel32: 0F 80+cc cd."""
        c = CC[cc]
        self._rel(bytes([0x70 + c]), bytes([0x0F, 0x80 + c]), target, short)

    def ret(self) -> None: self.buf.append(0xC3)  # C3

    def lretq(self) -> None:
        """Far return popping RIP then CS, 64-bit operand size: REX.W CB."""
        if self.bits != 64:
            raise AsmError("lretq exists only in 64-bit mode")
        self.buf += b"\x48\xcb"

    def retf(self) -> None:
        """Far return with the default operand size (32-bit in 32-bit mode): CB."""
        self.buf.append(0xCB)

    # ----- system

    def lgdt(self, m: Mem) -> None: self._emit(opcode=b"\x0f\x01", reg=2, rm=m)  # 0F 01 /2
    def lidt(self, m: Mem) -> None: self._emit(opcode=b"\x0f\x01", reg=3, rm=m)  # 0F 01 /3

    def cli(self) -> None: self.buf.append(0xFA)
    def sti(self) -> None: self.buf.append(0xFB)
    def cld(self) -> None: self.buf.append(0xFC)
    def hlt(self) -> None: self.buf.append(0xF4)
    def nop(self) -> None: self.buf.append(0x90)
    def pause(self) -> None: self.buf += b"\xf3\x90"
    def cpuid(self) -> None: self.buf += b"\x0f\xa2"
    def rdmsr(self) -> None: self.buf += b"\x0f\x32"
    def wrmsr(self) -> None: self.buf += b"\x0f\x30"
    def ud2(self) -> None: self.buf += b"\x0f\x0b"

    def inb(self, port: int | None = None) -> None:
        """IN AL, DX: EC · IN AL, imm8: E4 ib."""
        self.buf += b"\xec" if port is None else b"\xe4" + self._imm(port, 1, False)

    def outb(self, port: int | None = None) -> None:
        """OUT DX, AL: EE · OUT imm8, AL: E6 ib."""
        self.buf += b"\xee" if port is None else b"\xe6" + self._imm(port, 1, False)

    def _string(self, opc: int, width: int, rep: bool) -> None:
        """String ops with an optional F3 (REP) prefix; width 1/2/4/8 picks the byte form, 66h or REX.W."""
        if width == 8 and self.bits != 64:
            raise AsmError("64-bit string ops need 64-bit mode")
        out = bytearray(b"\xf3" if rep else b"")
        if width == 2:
            out.append(0x66)
        if width == 8:
            out.append(0x48)
        out.append(opc if width == 1 else opc + 1)
        self.buf += out

    def rep_movs(self, width: int = 1) -> None: self._string(0xA4, width, True)  # F3 A4/A5
    def rep_stos(self, width: int = 1) -> None: self._string(0xAA, width, True)  # F3 AA/AB
    def stos(self, width: int = 1) -> None: self._string(0xAA, width, False)  # AA/AB
    def lods(self, width: int = 1) -> None: self._string(0xAC, width, False)  # AC/AD

    # ----- SSE / SHA (operand order as Intel syntax: dst, src)

    def _sse(self, prefix: bytes, opcode: bytes, dst: RM, src: RM, imm: bytes = b"") -> None:
        for x in (dst, src):
            if isinstance(x, Reg) and x.kind != "xmm":
                raise AsmError(f"{x.name} is not an xmm register")
        if isinstance(dst, Reg):
            reg, rm = dst, src
        elif isinstance(src, Reg):
            reg, rm = src, dst
        else:
            raise AsmError("an SSE instruction needs an xmm register operand")
        self._emit(prefixes=prefix, opcode=opcode, reg=reg, rm=rm, imm=imm)

    def movdqu(self, dst: RM, src: RM) -> None:
        """MOVDQU xmm, m128: F3 0F 6F /r · m128, xmm: F3 0F 7F /r."""
        self._sse(b"\xf3", b"\x0f\x6f" if isinstance(dst, Reg) else b"\x0f\x7f", dst, src)

    def movdqa(self, dst: RM, src: RM) -> None:
        """MOVDQA xmm, xmm/m128: 66 0F 6F /r · m128, xmm: 66 0F 7F /r (memory must be 16-byte aligned)."""
        self._sse(b"\x66", b"\x0f\x6f" if isinstance(dst, Reg) else b"\x0f\x7f", dst, src)

    def paddd(self, dst: RM, src: RM) -> None: self._sse(b"\x66", b"\x0f\xfe", dst, src)  # 66 0F FE /r
    def pxor(self, dst: RM, src: RM) -> None: self._sse(b"\x66", b"\x0f\xef", dst, src)  # 66 0F EF /r
    def punpcklqdq(self, dst: RM, src: RM) -> None: self._sse(b"\x66", b"\x0f\x6c", dst, src)  # 66 0F 6C /r
    def punpckhqdq(self, dst: RM, src: RM) -> None: self._sse(b"\x66", b"\x0f\x6d", dst, src)  # 66 0F 6D /r
    def pshufb(self, dst: RM, src: RM) -> None: self._sse(b"\x66", b"\x0f\x38\x00", dst, src)  # 66 0F 38 00 /r (SSSE3)

    def pshufd(self, dst: RM, src: RM, order: int) -> None:
        """PSHUFD xmm, xmm/m128, imm8: 66 0F 70 /r ib."""
        self._sse(b"\x66", b"\x0f\x70", dst, src, self._imm(order, 1, False))

    def palignr(self, dst: RM, src: RM, shift: int) -> None:
        """PALIGNR xmm, xmm/m128, imm8: 66 0F 3A 0F /r ib (SSSE3)."""
        self._sse(b"\x66", b"\x0f\x3a\x0f", dst, src, self._imm(shift, 1, False))

    def sha256rnds2(self, dst: RM, src: RM) -> None:
        """SHA256RNDS2 xmm1, xmm2/m128, <XMM0>: NP 0F 38 CB /r. dst = CDGH in, ABEF out; src = ABEF."""
        self._sse(b"", b"\x0f\x38\xcb", dst, src)

    def sha256msg1(self, dst: RM, src: RM) -> None: self._sse(b"", b"\x0f\x38\xcc", dst, src)  # NP 0F 38 CC /r
    def sha256msg2(self, dst: RM, src: RM) -> None: self._sse(b"", b"\x0f\x38\xcd", dst, src)  # NP 0F 38 CD /r
