"""The probes' console code, generated for 64-bit (bzImage probe) or 32-bit (multiboot probe) mode.

Register conventions of the routines (native width: rax/eax ... written A, C, D, P):
    putc      al = character; preserves everything
    puts      P = NUL-terminated string; clobbers A, P
    puthex    D = value: 16 (64-bit) or 8 (32-bit) hex digits; clobbers A, C (D rotates back to itself)
    dump      P = address, C = length: two hex digits per byte; clobbers A, C, P
    dump_str  P = address, C = maximum: hex bytes up to (not including) the NUL; clobbers A, C, P
Nothing here uses a table or an absolute address except the strings of the 32-bit variant, so the 64-bit code
is position independent.
"""

from __future__ import annotations

from kexloader.purgatory.asm import AL, EAX, ECX, EDX, ESI, RAX, RCX, RDX, RSI, Mem, Reg, absolute, mem, reg, rip

from . import COM1, DEBUG_EXIT_PORT, EXIT_VALUE

UART_THR, UART_IER, UART_FCR, UART_LCR, UART_MCR, UART_LSR = 0, 1, 2, 3, 4, 5
LSR_THRE = 0x20


class Console:
    def __init__(self, a, bits: int, port: int = COM1):
        self.a = a
        self.bits = bits
        self.port = port
        self.A, self.C, self.D, self.P = (RAX, RCX, RDX, RSI) if bits == 64 else (EAX, ECX, EDX, ESI)
        self.digits = 16 if bits == 64 else 8
        self.strings: dict[str, str] = {}

    # ----- call sites

    def text(self, s: str) -> None:
        """Print a constant string (clobbers A, P)."""
        label = self.strings.get(s)
        if label is None:
            label = self.strings[s] = f"str_{len(self.strings)}"
        if self.bits == 64:
            self.a.lea(RSI, rip(label))
        else:
            self.a.mov_label(ESI, label)
        self.a.call("puts")

    def hex(self, name: str, src) -> None:
        """` name=<hex>` with the value from a register or memory operand (loaded into D)."""
        self.text(f" {name}=")
        self.load(self.D, src)
        self.a.call("puthex")

    def load(self, dst: Reg, src) -> None:
        """dst (a native-width register) = a register, a memory operand (zero-extended) or a constant."""
        a = self.a
        if isinstance(src, Reg):
            if src.kind == "seg":
                a.mov_sreg(low32(dst), src)
            elif src.size == 32 and dst.size == 64:
                a.mov(low32(dst), src)  # zero-extends
            elif src.size < 32:
                a.movzx(low32(dst), src)
            elif src != dst:
                a.mov(dst, src)
        elif isinstance(src, Mem):
            size = src.size or dst.size
            if size in (8, 16):
                a.movzx(low32(dst), src)
            elif size == 32:
                a.mov(low32(dst), src)
            else:
                a.mov(dst, src)
        elif isinstance(src, int):
            a.mov(dst, src)
        else:
            raise TypeError(f"cannot load {src!r}")

    def dump(self, name: str, addr: Reg, length) -> None:
        """` m.NAME@<addr>=<hex bytes>`; `addr` must be a register the routines do not clobber."""
        self._dump_head(name, addr)
        self.load(self.C, length)
        self.a.mov(self.P, addr)
        self.a.call("dump")

    def dump_str(self, name: str, addr: Reg, maximum: int) -> None:
        self._dump_head(name, addr)
        self.a.mov(self.C, maximum)
        self.a.mov(self.P, addr)
        self.a.call("dump_str")

    def _dump_head(self, name: str, addr: Reg) -> None:
        self.text(f" m.{name}@")
        self.a.mov(self.D, addr)
        self.a.call("puthex")
        self.text("=")

    # ----- routines and data

    def routines(self) -> None:
        a, A, C, D, P = self.a, self.A, self.C, self.D, self.P
        a.label("uart_init")  # 115200 8N1, FIFOs on, interrupts off (the probe polls)
        for off, value in ((UART_IER, 0), (UART_LCR, 0x80), (0, 1), (1, 0), (UART_LCR, 0x03), (UART_FCR, 0x07),
                           (UART_MCR, 0x03)):
            a.mov(EDX, self.port + off)
            a.mov(AL, value)
            a.outb()
        a.ret()

        a.label("putc")  # wait (boundedly: a missing UART must not hang us) for the transmit register
        a.push(D)
        a.push(C)
        a.push(A)
        a.mov(ECX, 0x100000)
        a.mov(EDX, self.port + UART_LSR)
        a.label("putc_wait")
        a.inb()
        a.test(AL, LSR_THRE)
        a.j("nz", "putc_ready")
        a.pause()
        a.dec(ECX)
        a.j("nz", "putc_wait")
        a.label("putc_ready")
        a.pop(A)
        a.mov(EDX, self.port + UART_THR)
        a.outb()
        a.pop(C)
        a.pop(D)
        a.ret()

        a.label("puts")
        a.movzx(EAX, mem(P, size=8))
        a.test(AL, AL)
        a.j("z", "puts_done")
        a.call("putc")
        a.inc(P)
        a.jmp("puts")
        a.label("puts_done")
        a.ret()

        a.label("nibble")  # al = 0..15 -> one hex digit
        a.cmp(AL, 10)
        a.j("b", "nibble_digit")
        a.add(AL, ord("a") - 10 - ord("0"))
        a.label("nibble_digit")
        a.add(AL, ord("0"))
        a.jmp("putc")

        a.label("putbyte")  # al = byte -> two hex digits
        a.push(A)
        a.shr(AL, 4)
        a.call("nibble")
        a.pop(A)
        a.and_(AL, 15)
        a.jmp("nibble")

        a.label("puthex")
        a.mov(ECX, self.digits)
        a.label("puthex_next")
        a.rol(D, 4)
        a.mov(EAX, EDX)
        a.and_(EAX, 15)
        a.call("nibble")
        a.dec(ECX)
        a.j("nz", "puthex_next")
        a.ret()

        a.label("dump")
        a.test(C, C)
        a.j("z", "dump_done")
        a.label("dump_next")
        a.movzx(EAX, mem(P, size=8))
        a.call("putbyte")
        a.inc(P)
        a.dec(C)
        a.j("nz", "dump_next")
        a.label("dump_done")
        a.ret()

        a.label("dump_str")
        a.test(C, C)
        a.j("z", "dump_str_done")
        a.movzx(EAX, mem(P, size=8))
        a.test(AL, AL)
        a.j("z", "dump_str_done")
        a.call("putbyte")
        a.inc(P)
        a.dec(C)
        a.jmp("dump_str")
        a.label("dump_str_done")
        a.ret()

        # End the machine: isa-debug-exit if QEMU has one; otherwise a triple fault (no IDT), which ends
        # QEMU under -no-reboot and resets anything else; hlt as a last resort.
        a.label("finish")
        a.mov(AL, EXIT_VALUE)
        a.outb(DEBUG_EXIT_PORT)
        a.lidt(rip("null_idtr") if self.bits == 64 else absolute("null_idtr"))
        a.int3()
        a.label("finish_halt")
        a.cli()
        a.hlt()
        a.jmp("finish_halt")

    def data(self) -> None:
        a = self.a
        a.align(8, 0)
        a.label("null_idtr")
        a.dw(0)
        a.dq(0)
        for s, label in self.strings.items():
            a.label(label)
            a.db(s.encode("ascii"), 0)


_R32 = "eax ecx edx ebx esp ebp esi edi r8d r9d r10d r11d r12d r13d r14d r15d".split()


def low32(r: Reg) -> Reg:
    """The 32-bit register with the same number (writing it zero-extends into the 64-bit one)."""
    return reg(_R32[r.num])
