"""The purgatory: the code the old kernel (or Xen) jumps to, which hands control to the new system.

What it does, in order (as kexec-tools' purgatory does: behaviour, not code):

1. 64-bit entry (Linux `relocate_kernel`, arch/x86/kernel/relocate_kernel_64.S; Xen `arch=EM_X86_64`): load our
   own GDT and a null IDT (the old ones are zapped or unmapped), reload DS/ES/SS/FS/GS = 0x18 and CS = 0x10 by a
   far return, switch to our own stack (the entry RSP is in a page that is not ours). Every plan is loaded
   with KEXEC_ARCH_X86_64 (Xen: arch=EM_X86_64), so this is the only entry.
2. Optional VGA reset to text mode 3 (--reset-vga, vga_code.py), then an optional console: a polled 16550 UART
   and/or the VGA text buffer.
3. The check of the loaded segments: every `zeros` range (the segments' zero fill) must still be all zero,
   and the SHA-256 over `regions` (the bytes the loader handed over) in order must equal `digest`; if either
   fails, print a line and halt forever.
4. kdump backup copy (src -> dst).
5. Hand-off: 64-bit Linux boot protocol (rsi = boot_params, other GPRs 0) or, for multiboot, down to 32-bit
   protected mode with paging off (eax = magic, ebx = info).

The segment is `code` followed by zero-filled bss (stack, SHA workspace, page tables); the purgatory never
writes outside its own segment except for the backup copy (and the VGA text buffer when asked), and never
touches the kernel command line.

Limits, by design:
- `console_vga` writes 0xB8000 directly. Linux's identity map covers the first MiB; Xen's EM_X86_64 map covers
  only the segments, so under Xen use the serial console.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeAlias

from ..errors import KexloaderError
from ..model import PAGE_SIZE, Backup, PurgatoryOptions, align_up
from . import sha256_code, vga_code, zero_code
from .asm import (AL, CR0, CR4, DS, DX, EAX, EBP, EBX, ECX, EDI, EDX, ES, ESI, FS, GS, R8D, R9D, R10D, R11D, R12D,
                  R13D, R14D, R15D, RAX, RCX, RDI, RSI, RSP, SS, Assembler, Mem, mem, rip)


class PurgatoryError(KexloaderError):
    """The purgatory cannot be built for these addresses or options."""


@dataclass(frozen=True)
class Linux64Handoff:
    """64-bit Linux boot protocol: rsi = boot_params, jump to kernel_entry (load address + 0x200) in 64-bit mode,
    CS = 0x10, DS/ES/SS/FS/GS = 0x18, rbx = 0 and every other GPR 0 (Documentation/arch/x86/boot.rst)."""

    boot_params: int
    kernel_entry: int
    rdi: int = 0  # ELF boot notes (kexec-tools' --args-elf): rdi = their address; 0 for the Linux protocol


@dataclass(frozen=True)
class Multiboot32Handoff:
    """Multiboot 1/2 machine state (Multiboot Specification 0.6.96, '3.2 Machine state'): 32-bit protected
    mode, paging off, flat segments, eax = magic, ebx = info address, jump to entry."""

    magic: int
    info: int
    entry: int


Handoff: TypeAlias = Linux64Handoff | Multiboot32Handoff


@dataclass(frozen=True)
class Region:
    """A physical range the purgatory checks: hashes (`regions`) or tests for zeros (`zeros`)."""

    start: int
    size: int


@dataclass(frozen=True)
class PurgatoryImage:
    """`code` goes at the base address; `memsz` (page multiple) includes the zero-filled stack/bss;
    `entry` is the absolute address the kernel or Xen jumps to."""

    code: bytes
    memsz: int
    entry: int


# GDT shared by every path (flat, base 0, limit 4 GiB; SDM vol. 3A §3.4.5):
SEL_CODE32 = 0x08  # 32-bit code (D=1): the multiboot hand-off runs here
SEL_CODE64 = 0x10  # 64-bit code (L=1): Linux's __BOOT_CS
SEL_DATA = 0x18  # read/write data: Linux's __BOOT_DS
GDT = (0, 0x00CF9A000000FFFF, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)

WORKSPACE_SIZE = 256  # SHA-256 driver workspace (sha256_code.WORKSPACE_SIZE) and console state
STACK_SIZE = PAGE_SIZE - WORKSPACE_SIZE  # bss is one page
LOW_4G = 1 << 32
MSR_EFER = 0xC0000080
EFER_LME = 1 << 8
CR0_PG = 1 << 31
VGA_TEXT = 0xB8000
assert sha256_code.WORKSPACE_SIZE + 4 <= WORKSPACE_SIZE  # the VGA cursor dword follows the SHA workspace
VGA_COLS, VGA_ROWS = 80, 25

# 16550 UART registers (offsets from the base port) and bits, as in any 16550 data sheet
UART_THR, UART_DLL, UART_IER, UART_DLM, UART_FCR, UART_LCR, UART_MCR, UART_LSR = 0, 0, 1, 1, 2, 3, 4, 5
LCR_DLAB, LCR_8N1, MCR_DTR_RTS, LSR_THRE = 0x80, 0x03, 0x03, 0x20

MSG_HELLO = b"kexloader purgatory\r\n"
MSG_BAD_DIGEST = b"kexloader purgatory: SHA-256 mismatch, not starting the new system\r\n"


def purgatory_size(handoff: Handoff, *, regions: Sequence[Region] = (), zeros: Sequence[Region] = (),
                   digest: bytes | None = None, options: PurgatoryOptions = PurgatoryOptions(),
                   backup: Backup | None = None) -> int:
    """memsz of the purgatory segment for these arguments (the size does not depend on the base address)."""
    _, memsz, _ = _generate(0, handoff, tuple(regions), tuple(zeros), digest, options, backup)
    return memsz


def build_purgatory(base: int, handoff: Handoff, *, regions: Sequence[Region] = (), zeros: Sequence[Region] = (),
                    digest: bytes | None = None, options: PurgatoryOptions = PurgatoryOptions(),
                    backup: Backup | None = None) -> PurgatoryImage:
    """Generate the purgatory to run at physical address `base` (page aligned). Deterministic.

    regions: hashed in order, their SHA-256 must be `digest`; zeros: must be all zero bytes."""
    _validate(base, handoff, tuple(regions), tuple(zeros), digest, options, backup)
    code, memsz, entry = _generate(base, handoff, tuple(regions), tuple(zeros), digest, options, backup)
    if base + memsz > (1 << 52):
        raise PurgatoryError(f"purgatory at {base:#x} is beyond physical address space")
    for what, checked in (("hashed", regions), ("zero-filled", zeros)):
        for r in checked:
            if r.size and r.start < base + memsz and base < r.start + r.size:
                raise PurgatoryError(f"{what} region [{r.start:#x}, {r.start + r.size:#x}) overlaps the purgatory "
                                     f"[{base:#x}, {base + memsz:#x}), whose stack changes while it checks")
    if isinstance(handoff, Multiboot32Handoff) and base + memsz > LOW_4G:
        raise PurgatoryError(f"purgatory at [{base:#x}, {base + memsz:#x}) must be below 4 GiB for a 32-bit path",
                             hint="place the purgatory segment below 4 GiB")
    return PurgatoryImage(code, memsz, entry)


def _validate(base: int, handoff: Handoff, regions: tuple[Region, ...], zeros: tuple[Region, ...],
              digest: bytes | None, options: PurgatoryOptions, backup: Backup | None) -> None:
    if base < 0 or base % PAGE_SIZE:
        raise PurgatoryError(f"purgatory base {base:#x} is not a page-aligned physical address")
    if not isinstance(handoff, (Linux64Handoff, Multiboot32Handoff)):
        raise PurgatoryError(f"unknown hand-off {handoff!r}")
    if isinstance(handoff, Multiboot32Handoff):
        for what, value in (("magic", handoff.magic), ("info", handoff.info), ("entry", handoff.entry)):
            if not 0 <= value < LOW_4G:
                raise PurgatoryError(f"multiboot {what} {value:#x} is not below 4 GiB (a 32-bit value)",
                                     hint="multiboot images, their info and modules must be below 4 GiB")
    else:
        for what, value in (("boot_params", handoff.boot_params), ("kernel_entry", handoff.kernel_entry)):
            if not 0 <= value < 1 << 52:
                raise PurgatoryError(f"Linux {what} {value:#x} is not a physical address")
    if options.checks and (regions or zeros):
        if digest is None or len(digest) != 32:
            raise PurgatoryError("SHA-256 checks need a 32-byte digest of the regions")
    for r in regions + zeros:
        if r.start < 0 or r.size < 0 or r.start + r.size > (1 << 52):
            raise PurgatoryError(f"bad region {r.start:#x}+{r.size:#x}")
    if backup is not None:
        if min(backup.src, backup.dst, backup.size) < 0 or max(backup.src, backup.dst) + backup.size > 1 << 52:
            raise PurgatoryError(f"bad backup {backup!r}")
        if backup.size and backup.src < backup.dst + backup.size and backup.dst < backup.src + backup.size:
            raise PurgatoryError(f"backup source [{backup.src:#x}, +{backup.size:#x}) and destination "
                                 f"{backup.dst:#x} overlap")
    if options.console_serial:
        if not 0 < options.serial_port <= 0xFFF8:
            raise PurgatoryError(f"serial port {options.serial_port:#x} is not an I/O port")
        baud = options.serial_baud
        if not 0 < baud <= 115200 or 115200 % baud or 115200 // baud > 0xFFFF:
            raise PurgatoryError(f"serial baud {baud} is not 115200/n (the UART divisor must be a whole number)",
                                 hint="use 115200, 57600, 38400, 19200, 9600 ...")


def _generate(base: int, handoff: Handoff, regions: tuple[Region, ...], zeros: tuple[Region, ...],
              digest: bytes | None, options: PurgatoryOptions, backup: Backup | None) -> tuple[bytes, int, int]:
    a = Assembler(bits=64, base=base)
    checks = bool(options.checks and (regions or zeros))
    console = options.console_serial or options.console_vga

    a.label("start64")
    a.cli()
    a.cld()
    a.lgdt(rip("gdtr"))
    a.lidt(rip("idtr"))
    a.mov(EAX, SEL_DATA)
    for s in (DS, ES, SS, FS, GS):
        a.mov(s, EAX)
    a.lea(RAX, rip("cs_reloaded"))  # far return to reload CS with our descriptor (no far jmp imm in 64-bit mode)
    a.push(SEL_CODE64)
    a.push(RAX)
    a.lretq()
    a.label("cs_reloaded")
    a.lea(RSP, rip("stack_top"))

    if options.reset_vga:
        vga_code.emit_reset_vga(a)  # first: the VGA console below then writes to a mode-3 screen
    if console:
        _console_init(a, options)
        a.lea(RSI, rip("msg_hello"))
        a.call("puts")
    if checks:
        zero_code.emit_zero_check(a, len(zeros), fail_label="bad_digest")  # first: no SSE, and quick to fail
        sha256_code.emit_verify(a, len(regions), fail_label="bad_digest")
    if backup is not None and backup.size:
        a.mov(RSI, backup.src)
        a.mov(RDI, backup.dst)
        a.mov(RCX, backup.size)
        a.rep_movs(1)  # ERMSB makes rep movsb as fast as anything else here; DF=0 from cld
    if isinstance(handoff, Linux64Handoff):
        _handoff_linux64(a, handoff)
    else:
        _handoff_multiboot32(a, handoff)

    if checks:
        a.label("bad_digest")
        if console:
            a.lea(RSI, rip("msg_bad_digest"))
            a.call("puts")
        a.label("halt")  # never hand over: halt, and halt again after an NMI
        a.cli()
        a.hlt()
        a.jmp("halt")
        sha256_code.emit_routines(a)
        zero_code.emit_zero_regions(a)
    if console:
        _console_routines(a, options)

    # ----- data
    a.align(16, 0)
    a.label("gdt")
    a.dq(*GDT)
    a.label("gdtr")  # limit, base: 6 bytes read in 32-bit mode, 10 in 64-bit mode
    a.dw(8 * len(GDT) - 1)
    a.dq("gdt")
    a.label("idtr")  # null IDT: any exception or NMI resets the machine instead of running garbage
    a.dw(0)
    a.dq(0)
    a.align(8, 0)
    if isinstance(handoff, Linux64Handoff):
        a.label("linux_entry")
        a.dq(handoff.kernel_entry)
        a.label("linux_bp_q")
        a.dq(handoff.boot_params)
        if handoff.rdi:
            a.label("linux_rdi_q")
            a.dq(handoff.rdi)
    if checks:
        # purgatory_size may come without a digest: the size is the same for any 32 bytes
        sha256_code.emit_verify_data(a, regions, digest if digest is not None else bytes(32))
        zero_code.emit_zero_data(a, zeros)
    if console:
        a.label("msg_hello")
        a.db(MSG_HELLO, 0)
        if checks:
            a.label("msg_bad_digest")
            a.db(MSG_BAD_DIGEST, 0)
    code_end = a.here()

    # ----- bss (zero-filled by the kernel/Xen; we initialise what we read anyway)
    bss = align_up(code_end, PAGE_SIZE)
    offset = bss
    a.labels["workspace"] = offset
    offset += WORKSPACE_SIZE
    offset = align_up(offset, 16) + STACK_SIZE
    a.labels["stack_top"] = offset
    memsz = align_up(offset, PAGE_SIZE)

    code = a.assemble()
    entry = base + a.labels["start64"]
    return code, memsz, entry


# ------------------------------------------------------------------------------------------- hand-offs


def _handoff_linux64(a: Assembler, h: Linux64Handoff) -> None:
    """rsi = boot_params (and rdi, for ELF boot notes), every other GPR 0, jump to the kernel's 64-bit entry
    (boot.rst "64-bit BOOT PROTOCOL")."""
    a.mov(RSI, rip("linux_bp_q"))
    if h.rdi:
        a.mov(RDI, rip("linux_rdi_q"))
    for r in (EAX, EBX, ECX, EDX, EDI, EBP, R8D, R9D, R10D, R11D, R12D, R13D, R14D, R15D):
        if r == EDI and h.rdi:
            continue
        a.xor(r, r)  # 32-bit xor zero-extends to 64 bits
    a.jmp(rip("linux_entry"))  # FF /4 through memory: no register has to carry the address


def _handoff_multiboot32(a: Assembler, h: Multiboot32Handoff) -> None:
    """64-bit -> 32-bit protected mode, paging off (SDM vol. 3A §10.8.5.4 "Initializing ... leaving IA-32e
    mode"): far return into a 32-bit code segment (compatibility mode), clear CR0.PG while running identity
    mapped, clear EFER.LME, CR4 = 0 (PAE/LA57 may only go once paging is off), flat data segments."""
    a.lea(RAX, rip("compat32"))  # below 4 GiB (checked), so the 32-bit EIP is the same address
    a.push(SEL_CODE32)
    a.push(RAX)
    a.lretq()
    a.bits = 32
    a.label("compat32")
    a.mov(EAX, CR0)
    a.and_(EAX, ~CR0_PG & 0xFFFFFFFF)
    a.mov(CR0, EAX)
    a.mov(ECX, MSR_EFER)
    a.rdmsr()
    a.and_(EAX, ~EFER_LME & 0xFFFFFFFF)
    a.wrmsr()
    a.xor(EAX, EAX)
    a.mov(CR4, EAX)
    a.mov(EAX, SEL_DATA)
    for s in (DS, ES, FS, GS, SS):
        a.mov(s, EAX)
    a.mov(EAX, h.magic)
    a.mov(EBX, h.info)
    for r in (ECX, EDX, ESI, EDI, EBP):
        a.xor(r, r)
    a.jmp_abs(h.entry)
    a.bits = 64


# ------------------------------------------------------------------------------------------- console


def _console_init(a: Assembler, o: PurgatoryOptions) -> None:
    """VGA cursor to the top-left; UART 8N1 at 115200/divisor, FIFOs on, interrupts off, polled."""
    if o.console_vga:
        a.mov(_vga_cursor(), 0)
    if o.console_serial:
        p = o.serial_port
        divisor = 115200 // o.serial_baud
        for off, value in ((UART_IER, 0), (UART_LCR, LCR_DLAB), (UART_DLL, divisor & 0xFF),
                           (UART_DLM, divisor >> 8), (UART_LCR, LCR_8N1), (UART_FCR, 0x07),
                           (UART_MCR, MCR_DTR_RTS)):
            a.mov(EDX, p + off)
            a.mov(AL, value)
            a.outb()


def _vga_cursor() -> Mem:
    return rip("workspace", sha256_code.WORKSPACE_SIZE, size=32)  # a dword after the SHA workspace


def _console_routines(a: Assembler, o: PurgatoryOptions) -> None:
    """puts(rsi = NUL-terminated string): each byte to the UART (polled) and/or the VGA text buffer.
    Clobbers rax, rcx, rdx, rsi, rdi."""
    a.label("puts")
    a.label("puts_next")
    a.movzx(EAX, mem(RSI, size=8))
    a.test(AL, AL)
    a.j("z", "puts_done")
    a.add(RSI, 1)
    if o.console_serial:
        # wait for the transmit holding register, but not forever: a missing UART must not hang us
        a.mov(ECX, 0x100000)
        a.mov(EDX, o.serial_port + UART_LSR)
        a.mov(EDI, EAX)
        a.label("thr_wait")
        a.inb()
        a.test(AL, LSR_THRE)
        a.j("nz", "thr_ready")
        a.pause()
        a.dec(ECX)
        a.j("nz", "thr_wait")
        a.label("thr_ready")
        a.mov(EAX, EDI)
        a.mov(EDX, o.serial_port + UART_THR)
        a.outb()
    if o.console_vga:
        # cursor (a cell index) lives in the workspace; '\n' moves to the next row, '\r' is ignored,
        # and the screen wraps to the top instead of scrolling
        cursor = _vga_cursor()
        a.mov(ECX, cursor)
        a.cmp(AL, ord("\r"))
        a.j("e", "puts_next")
        a.cmp(AL, ord("\n"))
        a.j("ne", "vga_put")
        a.mov(EAX, ECX)  # next row: cursor += 80 - cursor % 80
        a.xor(EDX, EDX)
        a.mov(EDI, VGA_COLS)
        a.div(EDI)  # edx = cursor % 80
        a.add(ECX, VGA_COLS)
        a.sub(ECX, EDX)
        a.jmp("vga_wrap")
        a.label("vga_put")
        a.mov(EDX, 0x0700)  # attribute 7 (grey on black) in the high byte
        a.or_(EDX, EAX)
        a.mov(EDI, VGA_TEXT)
        a.mov(mem(RDI, 0, RCX, 2), DX)
        a.add(ECX, 1)
        a.label("vga_wrap")
        a.cmp(ECX, VGA_COLS * VGA_ROWS)
        a.j("b", "vga_keep")
        a.xor(ECX, ECX)
        a.label("vga_keep")
        a.mov(cursor, ECX)
    a.jmp("puts_next")
    a.label("puts_done")
    a.ret()
