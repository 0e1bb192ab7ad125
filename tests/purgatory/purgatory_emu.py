"""A unicorn machine in the state the old kernel (or Xen) leaves at the purgatory's 64-bit entry.

Linux relocate_kernel (interfaces.md §1.8): long mode with an identity map built here (2 MiB pages
over all emulated memory, in a "control page" area that belongs to no segment), CR4 = PAE only, EFER.LME/LMA,
RFLAGS = 0, GPRs 0, CS = 0x10 / DS..GS = 0x18 loaded from an "old kernel" GDT, then GDTR and IDTR zapped to
limit 0 (descriptor caches stay valid, as on hardware). RSP = control page + 4096 - 8 with a 0 qword there.

Far returns and far jumps are emulated by QEMU's TCG inside unicorn from the descriptors in memory (a broken
GDT entry faults, see test_program.py), so mode switches are modelled, not faked. IN/OUT go to hooks: OUT is
recorded, IN from a UART line-status register answers "transmitter empty".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import capstone
from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

MEM_SIZE = 64 << 20
CONTROL = MEM_SIZE - (64 << 10)  # page tables, old GDT and stack of the "old kernel"
MSR_EFER = 0xC0000080
PROBE = b"\x40\x90\xf4"  # inc eax (32-bit mode) / REX nop (64-bit mode); hlt


@dataclass
class Outcome:
    reached: bool  # execution arrived at the target entry
    regs: dict = field(default_factory=dict)  # registers at the target entry (or where it stopped)
    port_writes: list = field(default_factory=list)  # (port, value)
    port_log: list = field(default_factory=list)  # (port, value) for OUT, (port, None) for IN, in order
    error: str | None = None
    halted: bool = False
    mode_at_target: int | None = None  # 32 or 64, probed by running one instruction at the target

    def serial(self, port: int = 0x3F8) -> bytes:
        """Bytes written to the UART's transmit register (not the divisor latch: LCR bit 7 tells which)."""
        out, dlab = bytearray(), False
        for p, v in self.port_writes:
            if p == port + 3:
                dlab = bool(v & 0x80)
            elif p == port and not dlab:
                out.append(v & 0xFF)
        return bytes(out)


class Machine:
    def __init__(self, *, sha_ni: bool | None = None, emulate_sha: bool = False):
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(0, MEM_SIZE)
        self.port_writes: list[tuple[int, int]] = []
        self.port_log: list[tuple[int, int | None]] = []
        self.cpuid_calls: list[int] = []
        uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._in, None, 1, 0, X.UC_X86_INS_IN)
        self.sha_ni = sha_ni
        if sha_ni is not None:
            uc.hook_add(UC_HOOK_INSN, self._cpuid, None, 1, 0, X.UC_X86_INS_CPUID)
        self.sha_emulated = 0
        self._decoded: dict = {}
        if emulate_sha:  # unicorn's TCG (QEMU 5) predates the SHA extensions: supply them here
            uc.hook_add(UC_HOOK_INSN_INVALID, self._sha_insn)
        self._state64()

    # ---- entry state

    def _state64(self) -> None:
        uc = self.uc
        pml4, pdpt, pd = CONTROL, CONTROL + 0x1000, CONTROL + 0x2000
        uc.mem_write(pml4, struct.pack("<Q", pdpt | 3))
        uc.mem_write(pdpt, struct.pack("<Q", pd | 3))
        uc.mem_write(pd, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(MEM_SIZE >> 21)))
        gdt = CONTROL + 0x3000
        uc.mem_write(gdt, struct.pack("<4Q", 0, 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF))
        uc.reg_write(X.UC_X86_REG_CR3, pml4)
        uc.reg_write(X.UC_X86_REG_CR4, 0x20)  # PAE only: SSE instructions fault until someone sets OSFXSR
        uc.reg_write(X.UC_X86_REG_CR0, 0x80000011)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt, 31, 0))
        uc.reg_write(X.UC_X86_REG_CS, 0x10)
        for r in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS, X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(r, 0x18)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0, 0))  # zapped, as native_gdt_invalidate() leaves it
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0, 0))
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        stack = CONTROL + 0x4000 + 4096 - 8
        uc.mem_write(stack, b"\0" * 8)
        uc.reg_write(X.UC_X86_REG_RSP, stack)

    # ---- hooks

    def _out(self, uc, port, size, value, user_data):
        self.port_writes.append((port, value))
        self.port_log.append((port, value))

    def _in(self, uc, port, size, user_data):
        self.port_log.append((port, None))
        return 0x60 if port & 7 == 5 else 0  # LSR: THR empty + transmitter empty; other registers 0

    def _cpuid(self, uc, user_data):
        leaf = uc.reg_read(X.UC_X86_REG_EAX)
        self.cpuid_calls.append(leaf)
        eax = ebx = ecx = edx = 0
        if leaf == 0:
            eax = 7
        elif leaf == 1:
            ecx = (1 << 9) | (1 << 19)  # SSSE3, SSE4.1
            edx = (1 << 25) | (1 << 26)  # SSE, SSE2
        elif leaf == 7:
            ebx = (1 << 29) if self.sha_ni else 0
        for r, v in ((X.UC_X86_REG_RAX, eax), (X.UC_X86_REG_RBX, ebx), (X.UC_X86_REG_RCX, ecx),
                     (X.UC_X86_REG_RDX, edx)):
            uc.reg_write(r, v)
        return 1  # skip the emulator's own CPUID

    def _sha_insn(self, uc, user_data) -> bool:
        """SHA256RNDS2/MSG1/MSG2 xmm, xmm from the SDM's operation sections; #UD (False) unless CR4.OSFXSR."""
        if not uc.reg_read(X.UC_X86_REG_CR4) & 0x200:
            return False
        rip = uc.reg_read(X.UC_X86_REG_RIP)
        raw = bytes(uc.mem_read(rip, 15))
        if (rip, raw) not in self._decoded:
            md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
            md.detail = True
            insn = next(md.disasm(raw, rip, count=1), None)
            if insn is None or not insn.mnemonic.startswith("sha256") or len(insn.operands) < 2:
                return False
            ids = [getattr(X, "UC_X86_REG_" + insn.reg_name(op.reg).upper()) for op in insn.operands[:2]]
            self._decoded[rip, raw] = (insn.mnemonic, ids, insn.size)
        mnemonic, ids, size = self._decoded[rip, raw]
        dst, src = (_dwords(uc.reg_read(i)) for i in ids)
        if mnemonic == "sha256rnds2":
            result = _rnds2(dst, src, _dwords(uc.reg_read(X.UC_X86_REG_XMM0)))
        elif mnemonic == "sha256msg1":
            result = [(dst[i] + _s0((dst + src)[i + 1])) & M32 for i in range(4)]
        else:
            w = [0] * 20
            w[14], w[15] = src[2], src[3]
            for i in range(4):
                w[16 + i] = (dst[i] + _s1(w[14 + i])) & M32
            result = w[16:20]
        uc.reg_write(ids[0], sum(v << (32 * i) for i, v in enumerate(result)))
        uc.reg_write(X.UC_X86_REG_RIP, rip + size)
        self.sha_emulated += 1
        return True

    # ---- use

    def write(self, addr: int, data: bytes) -> None:
        self.uc.mem_write(addr, bytes(data))

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(addr, size))

    def msr(self, index: int) -> int:
        return self.uc.reg_read(X.UC_X86_REG_MSR, index)

    def run(self, entry: int, target: int, *, max_insns: int = 2_000_000, probe_mode: bool = True,
            write_probe: bool = True) -> Outcome:
        """Run from `entry` until `target` is about to execute (reached) or the CPU halts/faults/runs out.

        With probe_mode, the bytes 40 90 (inc eax in 32-bit mode; a REX prefix + nop in 64-bit mode) are
        put at the target and one more instruction runs, which tells the real code size of CS."""
        uc = self.uc
        if probe_mode and write_probe:
            self.write(target, PROBE)  # when the target is hashed, PROBE is in its segment data instead
        out = Outcome(False)
        try:
            uc.emu_start(entry, target, count=max_insns)
        except UcError as e:
            out.error = str(e)
        pc = uc.reg_read(X.UC_X86_REG_RIP)
        out.reached = pc == target and out.error is None
        out.regs = self.regs()
        out.port_writes = list(self.port_writes)
        out.port_log = list(self.port_log)
        if not out.reached and out.error is None:
            out.halted = self.read(pc - 1, 1) == b"\xf4"
        if out.reached and probe_mode:
            eax = out.regs["rax"]
            try:
                uc.emu_start(target, 0, count=1)
            except UcError as e:  # pragma: no cover - would be a bug in the probe
                out.error = str(e)
            after = uc.reg_read(X.UC_X86_REG_RAX)
            out.mode_at_target = 32 if after == (eax + 1) & 0xFFFFFFFF else 64
        return out

    def regs(self) -> dict:
        uc = self.uc
        names = "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip".split()
        regs = {n: uc.reg_read(getattr(X, f"UC_X86_REG_{n.upper()}")) for n in names}
        for n in "cs ds es ss fs gs cr0 cr3 cr4 eflags".split():
            regs[n] = uc.reg_read(getattr(X, f"UC_X86_REG_{n.upper()}"))
        regs["efer"] = self.msr(MSR_EFER)
        regs["gdtr"] = uc.reg_read(X.UC_X86_REG_GDTR)
        regs["idtr"] = uc.reg_read(X.UC_X86_REG_IDTR)
        return regs

    def descriptor(self, selector: int) -> int:
        """The 8-byte GDT descriptor the selector names, read through the current GDTR."""
        _, base, limit, _ = self.uc.reg_read(X.UC_X86_REG_GDTR)
        assert selector + 7 <= limit
        return struct.unpack("<Q", self.read(base + (selector & ~7), 8))[0]


M32 = 0xFFFFFFFF


def _dwords(x: int) -> list[int]:
    return [(x >> (32 * i)) & M32 for i in range(4)]


def _ror(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & M32


def _s0(x: int) -> int:
    return _ror(x, 7) ^ _ror(x, 18) ^ (x >> 3)


def _s1(x: int) -> int:
    return _ror(x, 17) ^ _ror(x, 19) ^ (x >> 10)


def _rnds2(cdgh: list[int], abef: list[int], wk: list[int]) -> list[int]:
    a, b, e, f = abef[3], abef[2], abef[1], abef[0]
    c, d, g, h = cdgh[3], cdgh[2], cdgh[1], cdgh[0]
    for k in wk[:2]:
        ch = (e & f) ^ (~e & g)
        maj = (a & b) ^ (a & c) ^ (b & c)
        t1 = (h + (_ror(e, 6) ^ _ror(e, 11) ^ _ror(e, 25)) + ch + k) & M32
        t2 = ((_ror(a, 2) ^ _ror(a, 13) ^ _ror(a, 22)) + maj) & M32
        a, b, c, d, e, f, g, h = (t1 + t2) & M32, a, b, c, (d + t1) & M32, e, f, g
    return [f, e, b, a]
