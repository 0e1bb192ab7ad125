"""Instruction forms the probe kernels need beyond kexloader.purgatory.asm (which this module does not edit).

* `ProbeAssembler`: the purgatory's `Assembler` plus
    - `[reg + label]` memory operands (`based(EBP, "label")`): disp32 = the label's offset from the start of
      the code, for position-independent 32-bit code that keeps its own load address in a register;
    - `sgdt`/`sidt`, `pushf`/`popf`, `mov drN, r32` / `mov r32, drN`, `int3`.
* `Real16`: a tiny encoder for the few real-mode (16-bit) instructions of the bzImage probe's setup code,
  with labels and short (rel8) jumps.

Encodings are from the Intel SDM vol. 2 opcode tables; tests/test_probes.py disassembles the results with
capstone.
"""

from __future__ import annotations

from kexloader.purgatory.asm import RIP, Assembler, AsmError, Mem, Reg


def based(base: Reg, label: str, disp: int = 0, size: int | None = None) -> Mem:
    """[base + offset_of(label) + disp]: the label's offset from the start of the code, as a disp32."""
    return Mem(base, None, 1, disp, label, size)


class ProbeAssembler(Assembler):
    """Assembler with base+label operands and a few system instructions."""

    def _modrm_mem(self, regnum: int, m: Mem, rex: int):
        if m.label is None or m.base is None or m.base is RIP:
            return super()._modrm_mem(regnum, m, rex)
        if m.index is not None:
            raise AsmError("no index register with a base+label operand")
        self._check_addr_reg(m.base)
        if m.base.num >= 8:
            rex |= 0x41
        out = bytearray()
        r = (regnum & 7) << 3
        if (m.base.num & 7) == 4:  # esp/rsp/r12 as base needs a SIB byte (index=100: none)
            out += bytes([0x80 | r | 4, 0x24])
        else:
            out.append(0x80 | r | (m.base.num & 7))  # mod=10: disp32
        disp_at = len(out)
        out += b"\0\0\0\0"
        return out, (disp_at, 4, "off", m.label, m.disp), rex

    # ----- system instructions

    def sgdt(self, m: Mem) -> None: self._emit(opcode=b"\x0f\x01", reg=0, rm=m)  # 0F 01 /0
    def sidt(self, m: Mem) -> None: self._emit(opcode=b"\x0f\x01", reg=1, rm=m)  # 0F 01 /1
    def pushf(self) -> None: self.buf.append(0x9C)  # PUSHFQ in 64-bit mode, PUSHFD in 32-bit mode
    def popf(self) -> None: self.buf.append(0x9D)
    def int3(self) -> None: self.buf.append(0xCC)

    def mov_to_dr(self, dr: int, r: Reg) -> None:
        """MOV DRn, r32/r64: 0F 23 /r (ModRM.reg = n)."""
        self._mov_dr(0x23, dr, r)

    def mov_from_dr(self, r: Reg, dr: int) -> None:
        """MOV r32/r64, DRn: 0F 21 /r."""
        self._mov_dr(0x21, dr, r)

    def _mov_dr(self, opc: int, dr: int, r: Reg) -> None:
        want = 64 if self.bits == 64 else 32
        if not 0 <= dr <= 7 or r.kind != "gpr" or r.size != want:
            raise AsmError(f"mov dr{dr}, {r.name}: needs DR0-7 and a {want}-bit register")
        self._emit(opcode=bytes([0x0F, opc]), reg=dr, rm=r)

    def mov_sreg(self, dst: Reg, sreg: Reg) -> None:
        """MOV r32, Sreg: 8C /r (the selector, zero-extended on every CPU since the Pentium Pro)."""
        self._emit(opcode=b"\x8c", reg=sreg.num, rm=dst)


# ------------------------------------------------------------------------------------------- real mode


class Real16:
    """Real-mode (16-bit default operand and address size) code: only what the setup stub uses.

    Memory operands are [disp16] (mod=00 rm=110), optionally with a CS override. 32-bit registers
    get the 66h operand-size prefix. `origin` is the offset the code will run at within its segment."""

    R16 = {"ax": 0, "cx": 1, "dx": 2, "bx": 3, "sp": 4, "bp": 5, "si": 6, "di": 7}
    R32 = {"e" + k: v for k, v in R16.items()}
    SREG = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}
    CC = {"b": 2, "c": 2, "ae": 3, "e": 4, "z": 4, "ne": 5, "nz": 5}

    def __init__(self, origin: int = 0):
        self.origin = origin
        self.buf = bytearray()
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str]] = []  # rel8 fields

    def label(self, name: str) -> None:
        if name in self.labels:
            raise AsmError(f"label {name!r} defined twice")
        self.labels[name] = len(self.buf)

    def raw(self, data: bytes) -> None:
        self.buf += data

    def _reg(self, name: str) -> tuple[int, bytes]:
        if name in self.R16:
            return self.R16[name], b""
        if name in self.R32:
            return self.R32[name], b"\x66"
        raise AsmError(f"real mode: unknown register {name}")

    @staticmethod
    def _disp16(addr: int) -> bytes:
        if not 0 <= addr <= 0xFFFF:
            raise AsmError(f"real mode: address {addr:#x} does not fit in 16 bits")
        return addr.to_bytes(2, "little")

    # data movement
    def mov_store_sreg(self, addr: int, sreg: str, cs_override: bool = False) -> None:
        """MOV [disp16], Sreg: [2E] 8C /r with mod=00 rm=110."""
        self.buf += (b"\x2e" if cs_override else b"") + bytes([0x8C, 0x06 | self.SREG[sreg] << 3]) + self._disp16(addr)

    def mov_store(self, addr: int, reg: str, cs_override: bool = False) -> None:
        """MOV [disp16], r16/r32: [2E] [66] 89 /r."""
        n, p = self._reg(reg)
        self.buf += (b"\x2e" if cs_override else b"") + p + bytes([0x89, 0x06 | n << 3]) + self._disp16(addr)

    def mov_sreg_from(self, sreg: str, reg: str) -> None:
        """MOV Sreg, r16: 8E /r."""
        n, p = self._reg(reg)
        if p:
            raise AsmError("mov Sreg takes a 16-bit register")
        self.buf += bytes([0x8E, 0xC0 | self.SREG[sreg] << 3 | n])

    def mov_from_sreg(self, reg: str, sreg: str) -> None:
        """MOV r16, Sreg: 8C /r."""
        n, p = self._reg(reg)
        if p:
            raise AsmError("mov r, Sreg takes a 16-bit register here")
        self.buf += bytes([0x8C, 0xC0 | self.SREG[sreg] << 3 | n])

    def mov_imm(self, reg: str, value: int) -> None:
        """MOV r16, imm16: B8+r iw · MOV r32, imm32: 66 B8+r id."""
        n, p = self._reg(reg)
        size = 4 if p else 2
        self.buf += p + bytes([0xB8 + n]) + (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def mov_rr(self, dst: str, src: str) -> None:
        """MOV r/m, r: [66] 89 /r (register form)."""
        d, pd = self._reg(dst)
        s, ps = self._reg(src)
        if pd != ps:
            raise AsmError("mov: size mismatch")
        self.buf += pd + bytes([0x89, 0xC0 | s << 3 | d])

    def movzx_r32_r16(self, dst: str, src: str) -> None:
        """MOVZX r32, r16: 66 0F B7 /r."""
        d, pd = self._reg(dst)
        s, ps = self._reg(src)
        if not pd or ps:
            raise AsmError("movzx r32, r16")
        self.buf += bytes([0x66, 0x0F, 0xB7, 0xC0 | d << 3 | s])

    def movzx_r16_m8(self, dst: str, addr: int) -> None:
        """MOVZX r16, byte [disp16]: 0F B6 /r."""
        d, p = self._reg(dst)
        if p:
            raise AsmError("movzx r16, m8")
        self.buf += bytes([0x0F, 0xB6, 0x06 | d << 3]) + self._disp16(addr)

    # arithmetic
    _ALU = {"add": 0, "or": 1, "and": 4, "sub": 5, "xor": 6, "cmp": 7}

    def alu_imm(self, op: str, reg: str, value: int, full: bool = False) -> None:
        """Group 1 with an immediate: [66] 83 /k ib (sign-extended) or [66] 81 /k iw/id (`full`: always)."""
        n, p = self._reg(reg)
        k = self._ALU[op]
        size = 4 if p else 2
        if -128 <= value <= 127 and not full:
            self.buf += p + bytes([0x83, 0xC0 | k << 3 | n, value & 0xFF])
        else:
            self.buf += p + bytes([0x81, 0xC0 | k << 3 | n]) + (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def alu_rr(self, op: str, dst: str, src: str) -> None:
        """Group 1 register-register: [66] 01+8k /r (r/m = dst, reg = src)."""
        d, pd = self._reg(dst)
        s, ps = self._reg(src)
        if pd != ps:
            raise AsmError(f"{op}: size mismatch")
        self.buf += pd + bytes([8 * self._ALU[op] + 1, 0xC0 | s << 3 | d])

    def test_rr(self, a: str, b: str) -> None:
        """TEST r/m, r: [66] 85 /r."""
        x, px = self._reg(a)
        y, py = self._reg(b)
        self.buf += px + bytes([0x85, 0xC0 | y << 3 | x])

    def shl_imm(self, reg: str, count: int) -> None:
        """SHL r, imm8: [66] C1 /4 ib."""
        n, p = self._reg(reg)
        self.buf += p + bytes([0xC1, 0xE0 | n, count])

    def inc_byte(self, addr: int) -> None:
        """INC byte [disp16]: FE /0."""
        self.buf += b"\xfe\x06" + self._disp16(addr)

    def cmp_byte_imm(self, addr: int, value: int) -> None:
        """CMP byte [disp16], imm8: 80 /7 ib."""
        self.buf += b"\x80\x3e" + self._disp16(addr) + bytes([value & 0xFF])

    def al_imm(self, op: str, value: int) -> None:
        """OR AL, imm8: 0C ib · AND AL, imm8: 24 ib."""
        self.buf += bytes([{"or": 0x0C, "and": 0x24}[op], value & 0xFF])

    # system, strings, stack
    def cli(self) -> None: self.buf.append(0xFA)
    def cld(self) -> None: self.buf.append(0xFC)
    def pushf(self) -> None: self.buf.append(0x9C)
    def rep_stosw(self) -> None: self.buf += b"\xf3\xab"
    def rep_movsb(self) -> None: self.buf += b"\xf3\xa4"
    def int_(self, n: int) -> None: self.buf += bytes([0xCD, n])
    def in_al(self, port: int) -> None: self.buf += bytes([0xE4, port])
    def out_al(self, port: int) -> None: self.buf += bytes([0xE6, port])

    def pop(self, reg: str) -> None:
        """POP r16: 58+r."""
        n, p = self._reg(reg)
        self.buf += p + bytes([0x58 + n])

    def push_r32(self, reg: str) -> None:
        """PUSH r32 in 16-bit code: 66 50+r."""
        n, p = self._reg(reg)
        if not p:
            raise AsmError("push_r32 takes a 32-bit register")
        self.buf += bytes([0x66, 0x50 + n])

    def push_imm32(self, value: int) -> None:
        """PUSH imm8 with a 32-bit operand: 66 6A ib (sign-extended to 32 bits)."""
        if not -128 <= value <= 127:
            raise AsmError("push_imm32 takes a value that fits in a signed byte")
        self.buf += bytes([0x66, 0x6A, value & 0xFF])

    def lgdt32(self, addr: int) -> None:
        """LGDT m16&32 with a 32-bit operand (all 32 base bits): 66 0F 01 /2, [disp16]."""
        self.buf += b"\x66\x0f\x01\x16" + self._disp16(addr)

    def mov_eax_cr0(self) -> None: self.buf += b"\x0f\x20\xc0"  # MOV r32, CR0: 0F 20 /r (always 32-bit here)
    def mov_cr0_eax(self) -> None: self.buf += b"\x0f\x22\xc0"  # MOV CR0, r32: 0F 22 /r
    def retf32(self) -> None: self.buf += b"\x66\xcb"  # o32 RETF: pops EIP (32) then CS (32-bit slot)

    # control flow
    def j(self, cc: str, target: str) -> None:
        """Jcc rel8: 70+cc cb."""
        self.buf += bytes([0x70 + self.CC[cc], 0])
        self.fixups.append((len(self.buf) - 1, target))

    def jmp_short(self, target: str) -> None:
        """JMP rel8: EB cb."""
        self.buf += b"\xeb\0"
        self.fixups.append((len(self.buf) - 1, target))

    def assemble(self) -> bytes:
        out = bytearray(self.buf)
        for pos, target in self.fixups:
            if target not in self.labels:
                raise AsmError(f"undefined label {target!r}")
            rel = self.labels[target] - (pos + 1)
            if not -128 <= rel <= 127:
                raise AsmError(f"short jump to {target!r} out of reach ({rel})")
            out[pos] = rel & 0xFF
        return bytes(out)


__all__ = ["ProbeAssembler", "Real16", "based"]
