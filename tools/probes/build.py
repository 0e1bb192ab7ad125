#!/usr/bin/env python3
"""Build the probe kernels (see tools/probes/__init__.py) into fixtures/probes/ (deterministic).

    python3 tools/probes/build.py            # rewrite fixtures/probes/*
    python3 tools/probes/build.py --check    # exit 1 if a fixture differs from what this script builds

bzImage probe, three ways in, one reporting routine:

    loader            enters at                      state                          report says
    kexec (64-bit)    prot + 0x200 (startup_64)     long mode, rsi = boot_params    path=64
    32-bit protocol   prot + 0 (code32_start)       protected mode, esi = bp        path=32
    QEMU -kernel      setup + 0x200 (real mode,     CS = seg+0x20, DS = SS = seg     path=rm
                      via the linuxboot option ROM)

QEMU's loader does not build a zero page: like Linux's own setup code, the probe's real-mode stub builds one
(zeroed, the setup header as the loader left it in memory copied in, the BIOS E820 map from INT 15h
AX=E820h), enters protected mode and calls the 32-bit entry with esi = that zero page. The 32-bit entry
(like Linux's startup_32) builds an identity map of the first 4 GiB, enters long mode and jumps to the 64-bit
entry, which reports. So QEMU's loader is an independent reference for everything it decides (command line,
initrd bytes and place, loader type), the BIOS for the memory map, and only the mode switches are ours
(the 32-bit state is reported too). The real-mode and 32-bit stubs record what they were handed.

Multiboot probe: an ELF32 EM_386 like Debian's Xen (one PT_LOAD at 2 MiB from file offset 0x80, multiboot 1
header at file offset 0x88, multiboot 2 header at 0x98), entered in 32-bit protected mode with paging off.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kexloader.formats import bzimage as bz  # noqa: E402
from kexloader.formats import multiboot as mb  # noqa: E402
from kexloader.purgatory.asm import (CR0, CR3, CR4, CS, DS, EAX, EBP, EBX, ECX, EDI, EDX, ES, ESI, ESP, FS,  # noqa: E402
                                     GS, R8, R9, R10, R11, R12, R12D, R13, R13D, R14, R14D, R15, RAX, RBP, RBX,
                                     RCX, RDI, RDX, RSI, RSP, SS, absolute, mem, rip)
from kexloader.purgatory import sha256_code  # noqa: E402
from tools.probes import MAX_DUMP, MAX_STRING, REPORT_END, REPORT_START  # noqa: E402
from tools.probes.asm_extra import ProbeAssembler, Real16, based  # noqa: E402
from tools.probes.emit import Console  # noqa: E402

OUT = REPO / "fixtures" / "probes"
PAGE = 4096

RM_MAGIC = int.from_bytes(b"KXRM", "little")  # eax from the real-mode stub to the 32-bit entry
PM32_MAGIC = int.from_bytes(b"KX32", "little")  # eax from the 32-bit entry to the 64-bit entry

# ----- bzImage probe: the real-mode part (offsets from the start of the setup, linear base L = DS * 16)
SETUP_SECTS = 1  # boot sector + 1 sector: the stub fits in 0x400 bytes
RM_INFO = 0xC00  # what the real-mode stub was handed (see RM_INFO_FIELDS), in the loader's heap
RM_ZERO_PAGE = 0x1000  # the zero page the stub builds (4 KiB)
RM_STACK_TOP = 0x3000  # boot.rst: the setup may use its segment up to 0x8000 at least
RM_INFO_FIELDS = {"ds": 0, "ss": 2, "sp": 4, "cs": 6, "flags": 8, "es": 10, "linear": 16}
BOOT_CS, BOOT_DS = 0x10, 0x18  # Linux's __BOOT_CS / __BOOT_DS (32-bit code there, 64-bit code in our own GDT)

# ----- bzImage probe: the protected-mode part
S64_REGS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
S64 = {r: 8 * i for i, r in enumerate(S64_REGS)} | {
    "rflags": 0x80, "cr0": 0x88, "cr3": 0x90, "cr4": 0x98, "efer": 0xA0,
    "cs": 0xA8, "ds": 0xB0, "es": 0xB8, "ss": 0xC0, "fs": 0xC8, "gs": 0xD0, "gdtr": 0xD8, "idtr": 0xE8}
S32_REGS = ["eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp"]
S32 = {r: 4 * i for i, r in enumerate(S32_REGS)} | {
    "eflags": 0x20, "cr0": 0x24, "cr4": 0x28, "cs": 0x2C, "ds": 0x30, "ss": 0x34, "es": 0x38,
    "efer_lo": 0x3C, "efer_hi": 0x40, "efer_valid": 0x44, "scratch": 0x48}
GDT64 = (0, 0x00CF9A000000FFFF, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)  # 0x08 code32, 0x10 code64, 0x18 data
PT_PAGES = 6  # PML4, PDPT, 4 page directories of 2 MiB pages: identity map of [0, 4 GiB)
STACK = 0x1000
BP_SCRATCH = 0x1E4
# The 64-bit entry never touches paging, so it may be entered with 5-level paging on (a kernel booted
# with LA57 keeps it through relocate_kernel: seen under QEMU -cpu max).
XLOADFLAGS = bz.XLF_KERNEL_64 | bz.XLF_CAN_BE_LOADED_ABOVE_4G | bz.XLF_5LEVEL


def _real_mode_stub(gdt_off: int, pm32_off: int) -> bytes:
    """Real-mode code at setup offset 0x26c (the header's jump lands here); CS = seg + 0x20, so CS-relative
    addresses are setup offsets - 0x200. Returns the bytes."""
    r = Real16(origin=0x26C)
    cs = -0x200
    r.cli()
    r.cld()
    # what the loader handed us, before we change anything (CS override: DS may be anything)
    for name in ("ds", "ss", "cs", "es"):
        r.mov_store_sreg(RM_INFO + RM_INFO_FIELDS[name] + cs, name, cs_override=True)
    r.mov_store(RM_INFO + RM_INFO_FIELDS["sp"] + cs, "sp", cs_override=True)
    r.pushf()  # on the loader's stack
    r.pop("ax")
    r.mov_store(RM_INFO + RM_INFO_FIELDS["flags"] + cs, "ax", cs_override=True)
    # our segments: DS = ES = SS = the setup's segment, our own stack
    r.mov_from_sreg("ax", "cs")
    r.alu_imm("sub", "ax", 0x20)
    r.mov_sreg_from("ds", "ax")
    r.mov_sreg_from("es", "ax")
    r.mov_sreg_from("ss", "ax")
    r.mov_imm("sp", RM_STACK_TOP)
    # zero page: zeroed, then the setup header as the loader left it: bytes [0x1f1, 0x202 + byte at 0x201)
    r.alu_rr("xor", "ax", "ax")
    r.mov_imm("di", RM_ZERO_PAGE)
    r.mov_imm("cx", PAGE // 2)
    r.rep_stosw()
    r.movzx_r16_m8("cx", 0x201)
    r.alu_imm("add", "cx", 0x202 - bz.SETUP_HEADER_OFFSET)
    r.mov_imm("si", bz.SETUP_HEADER_OFFSET)
    r.mov_imm("di", RM_ZERO_PAGE + bz.SETUP_HEADER_OFFSET)
    r.rep_movsb()
    # E820 map from the BIOS (INT 15h, AX = E820h, "SMAP"), 20-byte entries into boot_params.e820_table
    r.alu_rr("xor", "ebx", "ebx")
    r.mov_imm("di", RM_ZERO_PAGE + 0x2D0)
    r.label("e820_next")
    r.mov_imm("eax", 0xE820)
    r.mov_imm("edx", 0x534D4150)
    r.mov_imm("ecx", 20)
    r.int_(0x15)
    r.j("c", "e820_done")
    r.alu_imm("cmp", "eax", 0x534D4150)
    r.j("ne", "e820_done")
    r.inc_byte(RM_ZERO_PAGE + 0x1E8)
    r.alu_imm("add", "di", 20)
    r.test_rr("ebx", "ebx")
    r.j("z", "e820_done")
    r.cmp_byte_imm(RM_ZERO_PAGE + 0x1E8, 128)
    r.j("b", "e820_next")
    r.label("e820_done")
    # A20 on (fast gate, port 92h bit 1; bit 0 would reset the machine)
    r.in_al(0x92)
    r.al_imm("or", 2)
    r.al_imm("and", 0xFE)
    r.out_al(0x92)
    # ebx = L; GDTR base = L + gdt_off; protected mode; o32 far return to L + pm32_off, CS = __BOOT_CS
    r.mov_from_sreg("bx", "ds")
    r.movzx_r32_r16("ebx", "bx")
    r.shl_imm("ebx", 4)
    r.mov_rr("eax", "ebx")
    r.alu_imm("add", "eax", gdt_off, full=True)
    r.mov_store(gdt_off + 0x22, "eax")  # gdtr at gdt_off + 0x20: limit (2 bytes), base (4 bytes)
    r.lgdt32(gdt_off + 0x20)
    r.mov_eax_cr0()
    r.al_imm("or", 1)
    r.mov_cr0_eax()
    r.push_imm32(BOOT_CS)
    r.mov_rr("eax", "ebx")
    r.alu_imm("add", "eax", pm32_off, full=True)
    r.push_r32("eax")
    r.retf32()
    return r.assemble()


def _pm32_stub() -> bytes:
    """32-bit code inside the setup (position independent: ebx = L): flat segments, the 32-bit boot protocol's
    registers (esi = zero page), eax = RM_MAGIC and edi = RM_INFO for the probe, jump to code32_start."""
    a = ProbeAssembler(bits=32, base=0)
    a.mov(EAX, BOOT_DS)
    for s in (DS, ES, SS, FS, GS):
        a.mov(s, EAX)
    a.lea(ESP, mem(EBX, RM_STACK_TOP))
    a.mov(mem(EBX, RM_INFO + RM_INFO_FIELDS["linear"]), EBX)
    a.lea(ESI, mem(EBX, RM_ZERO_PAGE))
    a.lea(EDI, mem(EBX, RM_INFO))
    a.mov(ECX, mem(EBX, 0x214))  # code32_start, as the loader left it
    a.mov(EAX, RM_MAGIC)
    a.xor(EBX, EBX)
    a.xor(EDX, EDX)
    a.xor(EBP, EBP)
    a.jmp(ECX)
    return a.assemble()


def _bz_protected() -> tuple[bytes, int, int]:
    """The protected-mode part: (file bytes, init_size, kernel_info offset)."""
    a = ProbeAssembler(bits=32, base=0)

    # ---- 32-bit entry (boot.rst 32-bit protocol: esi = boot_params, flat segments, paging off)
    a.label("start32")
    a.cli()
    a.cld()
    a.mov_to_dr(0, EBP)  # keep ebp and esp while we find out where we are (no memory of ours known yet)
    a.mov_to_dr(1, ESP)
    a.lea(ESP, mem(ESI, BP_SCRATCH + 4))  # boot_params.scratch as a one-slot stack, as Linux's startup_32
    a.call("here32")
    a.label("here32")
    a.pop(EBP)
    a.sub(EBP, a.labels["here32"])  # ebp = where this part was loaded
    for r, reg in zip(S32_REGS[:6], (EAX, EBX, ECX, EDX, ESI, EDI)):
        a.mov(based(EBP, "s32", S32[r]), reg)
    a.mov_from_dr(EAX, 0)
    a.mov(based(EBP, "s32", S32["ebp"]), EAX)
    a.mov_from_dr(EAX, 1)
    a.mov(based(EBP, "s32", S32["esp"]), EAX)
    a.mov(EAX, mem(ESI, BP_SCRATCH))  # what the call left in scratch (so the report can say so)
    a.mov(based(EBP, "s32", S32["scratch"]), EAX)
    a.lea(ESP, based(EBP, "stack_top"))
    a.pushf()
    a.pop(EAX)
    a.mov(based(EBP, "s32", S32["eflags"]), EAX)
    a.mov(EAX, CR0)
    a.mov(based(EBP, "s32", S32["cr0"]), EAX)
    a.mov(EAX, CR4)
    a.mov(based(EBP, "s32", S32["cr4"]), EAX)
    for name, sreg in (("cs", CS), ("ds", DS), ("ss", SS), ("es", ES)):
        a.mov_sreg(EAX, sreg)
        a.mov(based(EBP, "s32", S32[name]), EAX)
    # identity map of [0, 4 GiB) with 2 MiB pages (P|RW|PS) in our bss
    a.lea(EDI, based(EBP, "page_tables"))
    a.xor(EAX, EAX)
    a.mov(ECX, PT_PAGES * PAGE // 4)
    a.rep_stos(4)
    a.lea(EDI, based(EBP, "page_tables", 2 * PAGE))
    a.mov(EAX, 0x83)
    a.mov(ECX, 4 * 512)
    a.label("pd_fill")
    a.mov(mem(EDI), EAX)
    a.add(EAX, 0x200000)
    a.add(EDI, 8)
    a.dec(ECX)
    a.j("nz", "pd_fill")
    a.lea(EDI, based(EBP, "page_tables"))
    a.lea(EAX, mem(EDI, PAGE + 3))
    a.mov(mem(EDI), EAX)
    a.lea(EAX, mem(EDI, 2 * PAGE + 3))
    for i in range(4):
        a.mov(mem(EDI, PAGE + 8 * i), EAX)
        a.add(EAX, PAGE)
    a.mov(CR3, EDI)
    a.mov(EAX, CR4)
    a.or_(EAX, 1 << 5)  # PAE
    a.mov(CR4, EAX)
    a.mov(ECX, 0xC0000080)  # EFER.LME
    a.rdmsr()
    a.or_(EAX, 1 << 8)
    a.wrmsr()
    a.lea(EAX, based(EBP, "gdt"))  # our GDT: the loader's may be gone after we load segments
    a.mov(based(EBP, "gdtr", 2), EAX)
    a.lgdt(based(EBP, "gdtr"))
    a.mov(EAX, BOOT_DS)
    for s in (DS, ES, SS, FS, GS):
        a.mov(s, EAX)
    a.mov(EAX, CR0)
    a.or_(EAX, (1 << 31) | 1)  # PG (PE is on)
    a.mov(CR0, EAX)
    a.push(0x10)  # far return into the 64-bit code segment at start64
    a.lea(EAX, based(EBP, "start64"))
    a.push(EAX)
    a.mov(EAX, PM32_MAGIC)
    for reg in (EBX, ECX, EDX, EDI, EBP):
        a.xor(reg, reg)
    a.retf()
    if a.here() > bz.KERNEL_64_ENTRY_OFFSET:
        raise AssertionError(f"the 32-bit entry is {a.here():#x} bytes, more than 0x200")
    a.raw(b"\xcc" * (bz.KERNEL_64_ENTRY_OFFSET - a.here()))

    # ---- 64-bit entry (boot.rst 64-bit protocol: rsi = boot_params)
    a.bits = 64
    a.label("start64")
    for r in S64_REGS:  # first of all, before anything changes a register
        a.mov(rip("s64", S64[r]), _reg64(r))
    a.cli()
    a.cld()
    a.lea(RSP, rip("stack_top"))
    a.pushf()
    a.pop(RAX)
    a.mov(rip("s64", S64["rflags"]), RAX)
    for name, cr in (("cr0", CR0), ("cr3", CR3), ("cr4", CR4)):
        a.mov(RAX, cr)
        a.mov(rip("s64", S64[name]), RAX)
    a.mov(ECX, 0xC0000080)
    a.rdmsr()
    a.mov(rip("s64", S64["efer"]), EAX)
    a.mov(rip("s64", S64["efer"] + 4), EDX)
    for name, sreg in (("cs", CS), ("ds", DS), ("es", ES), ("ss", SS), ("fs", FS), ("gs", GS)):
        a.mov_sreg(EAX, sreg)
        a.mov(rip("s64", S64[name]), EAX)
    a.sgdt(rip("s64", S64["gdtr"]))
    a.sidt(rip("s64", S64["idtr"]))

    con = Console(a, 64)
    a.call("uart_init")
    con.text(f"\r\n{REPORT_START} kind=bz path=")
    a.cmp(rip("s64", S64["rax"], size=32), PM32_MAGIC)
    a.j("ne", "path64")
    a.cmp(rip("s32", S32["eax"], size=32), RM_MAGIC)
    a.j("ne", "path32")
    con.text("rm")
    a.jmp("path_done")
    a.label("path32")
    con.text("32")
    a.jmp("path_done")
    a.label("path64")
    con.text("64")
    a.label("path_done")
    for r in S64_REGS:
        con.hex(f"r.{r}", rip("s64", S64[r], size=64))
    for name in ("rflags", "cr0", "cr3", "cr4", "efer"):
        con.hex(f"c.{name}", rip("s64", S64[name], size=64))
    for name in ("cs", "ds", "es", "ss", "fs", "gs"):
        con.hex(f"s.{name}", rip("s64", S64[name], size=16))
    for name in ("gdtr", "idtr"):
        con.hex(f"c.{name}.limit", rip("s64", S64[name], size=16))
        con.hex(f"c.{name}.base", rip("s64", S64[name] + 2, size=64))
    # the 32-bit entry's state, when we came through it
    a.cmp(rip("s64", S64["rax"], size=32), PM32_MAGIC)
    a.j("ne", "no32")
    for name in S32_REGS + ["eflags", "cr0", "cr4", "cs", "ds", "ss", "es", "scratch"]:
        con.hex(f"e.{name}", rip("s32", S32[name], size=32))
    a.cmp(rip("s32", S32["eax"], size=32), RM_MAGIC)
    a.j("ne", "no32")
    a.mov(R12D, rip("s32", S32["edi"]))
    con.dump("rm", R12, 32)
    a.label("no32")

    # the zero page and what it points to
    a.mov(RBX, rip("s64", S64["rsi"]))
    con.dump("zp", RBX, PAGE)
    _load_split(a, R12, 0x228, 0x0C8)  # cmd_line_ptr | ext_cmd_line_ptr << 32
    a.test(R12, R12)
    a.j("z", "no_cmdline")
    con.dump_str("cmdline", R12, MAX_STRING)
    a.label("no_cmdline")
    _load_split(a, R12, 0x218, 0x0C0)  # ramdisk_image | ext_ramdisk_image << 32
    _load_split(a, R13, 0x21C, 0x0C4)  # ramdisk_size | ext_ramdisk_size << 32
    a.test(R13, R13)
    a.j("z", "no_initrd")
    a.mov(RAX, MAX_DUMP)
    a.cmp(R13, RAX)
    a.j("be", "initrd_size_ok")
    a.mov(R13, RAX)
    a.label("initrd_size_ok")
    con.dump("initrd", R12, R13)
    # and the SHA-256 of all of it, with the purgatory's integer-only routine (SSE may be off)
    _load_split(a, R13, 0x21C, 0x0C4)
    a.mov(rip("sha_region"), R12)
    a.mov(rip("sha_region", 8), R13)
    a.lea(RDI, rip("sha_region"))
    a.mov(ESI, 1)
    a.lea(RDX, rip("sha_out"))
    a.lea(RCX, rip("sha_ws"))
    a.lea(R8, rip("sha256_blocks_int"))
    a.call("sha256_regions")
    con.text(" h.initrd=")
    a.lea(RSI, rip("sha_out"))
    a.mov(ECX, 32)
    a.call("dump")
    a.label("no_initrd")
    a.mov(R12, mem(RBX, 0x250))  # setup_data chain: at most 8 entries, 4 KiB of payload each
    a.mov(R14D, 8)
    a.label("sd_next")
    a.test(R12, R12)
    a.j("z", "sd_done")
    a.mov(R13D, mem(R12, 12))
    a.cmp(R13, PAGE)
    a.j("be", "sd_len_ok")
    a.mov(R13D, PAGE)
    a.label("sd_len_ok")
    a.add(R13, 16)
    con.dump("sd", R12, R13)
    a.mov(R12, mem(R12))
    a.dec(R14D)
    a.j("nz", "sd_next")
    a.label("sd_done")
    con.text(f" {REPORT_END}\r\n")
    a.jmp("finish")
    con.routines()
    a.align(16)
    sha256_code.emit_regions(a)
    a.align(16)
    sha256_code.emit_blocks_int(a)
    con.data()

    # ---- data
    a.align(16, 0)
    a.label("gdt")
    a.dq(*GDT64)
    a.label("gdtr")  # limit, 32-bit base (patched by the 32-bit entry)
    a.dw(8 * len(GDT64) - 1)
    a.dd(0)
    a.align(16, 0)
    a.label("kernel_info")  # boot.rst "The kernel_info": "LToP", size, size_total, setup_type_max
    a.dd(0x506F544C, 16, 16, 0x0000000A)
    a.label("version")
    a.db(b"kexloader bzImage probe 1", 0)
    a.align(16, 0)
    code_end = a.here()

    # ---- bss (the loader reserves init_size from the load address; nothing needs it zeroed)
    off = -(-code_end // PAGE) * PAGE
    a.labels["page_tables"] = off
    off += PT_PAGES * PAGE
    a.labels["s64"] = off
    off += 0x100
    a.labels["s32"] = off
    off += 0x100
    a.labels["sha_region"] = off  # {u64 start, u64 len}
    a.labels["sha_out"] = off + 16
    a.labels["sha_ws"] = off + 48
    off += 48 + sha256_code.DIGEST_WORKSPACE_SIZE
    off = -(-off // 16) * 16 + STACK
    a.labels["stack_top"] = off
    init_size = -(-off // PAGE) * PAGE
    code = a.assemble()
    _check_position_independent(a, code)
    return code, init_size, a.labels["kernel_info"]


def _reg64(name: str):
    return {"rax": RAX, "rbx": RBX, "rcx": RCX, "rdx": RDX, "rsi": RSI, "rdi": RDI, "rbp": RBP, "rsp": RSP,
            "r8": R8, "r9": R9, "r10": R10, "r11": R11, "r12": R12, "r13": R13, "r14": R14, "r15": R15}[name]


def _load_split(a, dst, lo_off: int, hi_off: int) -> None:
    """dst = u32 [rbx + lo_off] | u32 [rbx + hi_off] << 32 (a boot_params field and its ext_ part)."""
    low = {R12: R12D, R13: R13D}[dst]
    a.mov(low, mem(RBX, lo_off))
    a.mov(EAX, mem(RBX, hi_off))
    a.shl(RAX, 32)
    a.or_(dst, RAX)


def _check_position_independent(a, code: bytes) -> None:
    bad = [f.label for f in a.fixups if f.kind == "abs"]
    if bad:
        raise AssertionError(f"the bzImage probe must be position independent; absolute references to {bad}")


def build_bzprobe() -> bytes:
    prot, init_size, kernel_info = _bz_protected()
    prot = prot.ljust(-(-len(prot) // 16) * 16, b"\0")

    setup = bytearray(bz.setup_size(SETUP_SECTS))
    setup[0:0x60] = b"kexloader bzImage probe: load it with a bzImage loader (kexec, QEMU -kernel)\r\n".ljust(0x60, b"\0")
    # the real-mode stub starts right after the header (0x26c), then the 32-bit stub, the GDT and the version
    pm32 = _pm32_stub()
    stub_len = len(_real_mode_stub(0, 0))
    pm32_off = 0x26C + stub_len
    gdt_off = -(-(pm32_off + len(pm32)) // 16) * 16
    stub = _real_mode_stub(gdt_off, pm32_off)
    assert len(stub) == stub_len
    version_off = gdt_off + 0x30
    gdt = struct.pack("<4Q", *GDT64[:1], 0, GDT64[1], GDT64[3])  # null, unused, 0x10 code32, 0x18 data
    gdtr = struct.pack("<HI", len(gdt) - 1, 0)
    version = b"kexloader bzImage probe 1\0"
    end = version_off + len(version)
    if end > len(setup):
        raise AssertionError(f"the setup code needs {end:#x} bytes, more than {len(setup):#x}")
    setup[0x26C:0x26C + len(stub)] = stub
    setup[pm32_off:pm32_off + len(pm32)] = pm32
    setup[gdt_off:gdt_off + len(gdt)] = gdt
    setup[gdt_off + 0x20:gdt_off + 0x26] = gdtr
    setup[version_off:end] = version

    header = bz.SetupHeader.build(dict(
        setup_sects=SETUP_SECTS, root_flags=0, syssize=len(prot) // 16, ram_size=0, vid_mode=0xFFFF,
        root_dev=0, jump=0xEB | (0x26C - 0x202) << 8, version=0x020F, realmode_swtch=0, start_sys_seg=0x1000,
        kernel_version=version_off - 0x200, type_of_loader=0, loadflags=bz.LOADED_HIGH, setup_move_size=0x8000,
        code32_start=0x100000, ramdisk_image=0, ramdisk_size=0, bootsect_kludge=0, heap_end_ptr=0,
        ext_loader_ver=0, ext_loader_type=0, cmd_line_ptr=0, initrd_addr_max=0x7FFFFFFF,
        kernel_alignment=0x200000, relocatable_kernel=1, min_alignment=21,
        xloadflags=XLOADFLAGS, cmdline_size=2047,
        hardware_subarch=0, hardware_subarch_data=0, payload_offset=0, payload_length=0, setup_data=0,
        pref_address=0x1000000, init_size=init_size, handover_offset=0, kernel_info_offset=kernel_info))
    setup[bz.SETUP_HEADER_OFFSET:bz.SETUP_HEADER_OFFSET + len(header)] = header
    return bytes(setup) + prot


# ----------------------------------------------------------------------------------------- multiboot probe

MB_BASE = 0x200000  # like Xen: one PT_LOAD at 2 MiB from file offset 0x80
MB_FILE_OFFSET = 0x80
MB1_FLAGS = mb.MB1_PAGE_ALIGN | mb.MB1_MEMORY_INFO
SV = {r: 4 * i for i, r in enumerate(S32_REGS)} | {
    "eflags": 0x20, "cr0": 0x24, "cr4": 0x28, "cs": 0x2C, "ds": 0x30, "es": 0x34, "ss": 0x38,
    "efer_lo": 0x3C, "efer_hi": 0x40, "efer_valid": 0x44, "len": 0x48}
MB2_MAX_INFO = 0x10000
MB_MAX_MODULES = 64


def _sv(name: str, size: int = 32):
    return absolute("sv", SV[name], size=size)


def _mb_probe_code() -> tuple[bytes, int]:
    a = ProbeAssembler(bits=32, base=MB_BASE)
    counter = [0]

    def capped(dst_mem, cap: int) -> None:
        """dst_mem = min(eax, cap) treating a negative eax (end < start) as 0."""
        n = counter[0] = counter[0] + 1
        a.j("ae", f"cap_pos_{n}")  # flags from the preceding sub: CF = end < start
        a.xor(EAX, EAX)
        a.label(f"cap_pos_{n}")
        a.cmp(EAX, cap)
        a.j("be", f"cap_ok_{n}")
        a.mov(EAX, cap)
        a.label(f"cap_ok_{n}")
        a.mov(dst_mem, EAX)

    a.label("start")
    a.jmp("main", short=False)
    a.raw(b"\0" * (8 - a.here()))
    # multiboot 1 header at file offset 0x88 (4-aligned, first 8 KiB), ELF-loaded (no a.out kludge)
    a.dd(mb.MB1_HEADER_MAGIC, MB1_FLAGS, -(mb.MB1_HEADER_MAGIC + MB1_FLAGS) & 0xFFFFFFFF)
    a.raw(b"\0" * (-(MB_FILE_OFFSET + a.here()) % 8))
    # multiboot 2 header (8-aligned, first 32 KiB): required info request {basic meminfo, mmap} and
    # module alignment, as Xen asks; no relocatable tag (the probe is linked at MB_BASE)
    tags = struct.pack("<HHIII", mb.MB2_HTAG_INFO_REQUEST, 0, 16, mb.MB2_TAG_BASIC_MEMINFO, mb.MB2_TAG_MMAP)
    tags += struct.pack("<HHI", mb.MB2_HTAG_MODULE_ALIGN, 0, 8)
    tags += struct.pack("<HHI", mb.MB2_HTAG_END, 0, 8)
    length = 16 + len(tags)
    a.dd(mb.MB2_HEADER_MAGIC, mb.MB2_ARCH_I386, length, -(mb.MB2_HEADER_MAGIC + length) & 0xFFFFFFFF)
    a.raw(tags)

    a.label("main")
    for r, reg in zip(S32_REGS, (EAX, EBX, ECX, EDX, ESI, EDI, EBP, ESP)):
        a.mov(_sv(r), reg)
    a.cli()
    a.cld()
    a.mov_label(ESP, "stack_top")
    a.pushf()
    a.pop(EAX)
    a.mov(_sv("eflags"), EAX)
    a.mov(EAX, CR0)
    a.mov(_sv("cr0"), EAX)
    a.mov(EAX, CR4)
    a.mov(_sv("cr4"), EAX)
    for name, sreg in (("cs", CS), ("ds", DS), ("es", ES), ("ss", SS)):
        a.mov_sreg(EAX, sreg)
        a.mov(_sv(name), EAX)
    # EFER exists when CPUID says long mode, NX or SYSCALL (reading it otherwise faults)
    a.mov(_sv("efer_valid"), 0)
    a.mov(EAX, 0x80000000)
    a.cpuid()
    a.cmp(EAX, 0x80000001)
    a.j("b", "no_efer")
    a.mov(EAX, 0x80000001)
    a.cpuid()
    a.test(EDX, (1 << 29) | (1 << 20) | (1 << 11))
    a.j("z", "no_efer")
    a.mov(ECX, 0xC0000080)
    a.rdmsr()
    a.mov(_sv("efer_lo"), EAX)
    a.mov(_sv("efer_hi"), EDX)
    a.mov(_sv("efer_valid"), 1)
    a.label("no_efer")

    con = Console(a, 32)
    a.call("uart_init")
    con.text(f"\r\n{REPORT_START} kind=mb")
    for name in S32_REGS + ["eflags", "cr0", "cr4"]:
        con.hex(f"{'r' if name in S32_REGS else 'c'}.{name}", _sv(name))
    for name in ("cs", "ds", "es", "ss"):
        con.hex(f"s.{name}", _sv(name, 16))
    a.cmp(_sv("efer_valid"), 1)
    a.j("ne", "efer_done")
    con.text(" c.efer=")
    a.mov(EDX, _sv("efer_hi"))
    a.call("puthex")
    a.mov(EDX, _sv("efer_lo"))
    a.call("puthex")
    a.label("efer_done")

    a.mov(EBX, _sv("ebx"))
    a.mov(EAX, _sv("eax"))
    a.cmp(EAX, mb.MB1_BOOTLOADER_MAGIC)
    a.j("e", "mb1")
    a.cmp(EAX, mb.MB2_BOOTLOADER_MAGIC)
    a.j("e", "mb2")
    a.jmp("done")

    # ---- multiboot 1: the structure, then what its flags say is there
    a.label("mb1")
    con.dump("mbi", EBX, mb.MB1Info.sizeof())
    a.test(mem(EBX, size=32), mb.MBI_CMDLINE)
    a.j("z", "mb1_no_cmdline")
    a.mov(EBP, mem(EBX, 16))
    con.dump_str("cmdline", EBP, MAX_STRING)
    a.label("mb1_no_cmdline")
    a.test(mem(EBX, size=32), mb.MBI_MODULES)
    a.j("z", "mb1_no_mods")
    a.mov(EBP, mem(EBX, 24))  # mods_addr
    a.mov(EDI, mem(EBX, 20))  # mods_count, at most MB_MAX_MODULES
    a.cmp(EDI, MB_MAX_MODULES)
    a.j("be", "mb1_count_ok")
    a.mov(EDI, MB_MAX_MODULES)
    a.label("mb1_count_ok")
    a.mov(EAX, EDI)
    a.shl(EAX, 4)
    a.mov(_sv("len"), EAX)
    con.dump("mods", EBP, _sv("len"))
    a.label("mb1_mod_next")
    a.test(EDI, EDI)
    a.j("z", "mb1_no_mods")
    a.push(EBX)
    a.mov(EBX, mem(EBP, 8))
    con.dump_str("modstr", EBX, MAX_STRING)
    a.mov(EBX, mem(EBP, 0))
    a.mov(EAX, mem(EBP, 4))
    a.sub(EAX, EBX)
    capped(_sv("len"), MAX_DUMP)
    con.dump("mod", EBX, _sv("len"))
    a.pop(EBX)
    a.add(EBP, 16)
    a.dec(EDI)
    a.jmp("mb1_mod_next")
    a.label("mb1_no_mods")
    a.test(mem(EBX, size=32), mb.MBI_MEMMAP)
    a.j("z", "mb1_no_mmap")
    a.mov(EBP, mem(EBX, 48))
    a.mov(EAX, mem(EBX, 44))
    a.cmp(EAX, EAX)  # CF = 0: the length is not a difference
    capped(_sv("len"), PAGE)
    con.dump("mmap", EBP, _sv("len"))
    a.label("mb1_no_mmap")
    a.test(mem(EBX, size=32), mb.MBI_LOADERNAME)
    a.j("z", "done")
    a.mov(EBP, mem(EBX, 64))
    con.dump_str("name", EBP, 256)
    a.jmp("done")

    # ---- multiboot 2: the whole information (strings, memory map are inside), then each module's bytes
    a.label("mb2")
    a.mov(EAX, mem(EBX))
    a.cmp(EAX, EAX)
    capped(_sv("len"), MB2_MAX_INFO)
    con.dump("mbi", EBX, _sv("len"))
    a.lea(EBP, mem(EBX, 8))
    a.mov(EDI, EBX)
    a.add(EDI, _sv("len"))
    a.label("mb2_tag")
    a.lea(EAX, mem(EBP, 8))
    a.cmp(EAX, EDI)
    a.j("a", "done")
    a.mov(EAX, mem(EBP))
    a.test(EAX, EAX)
    a.j("z", "done")
    a.cmp(mem(EBP, 4, size=32), 8)
    a.j("b", "done")
    a.cmp(EAX, mb.MB2_TAG_MODULE)
    a.j("ne", "mb2_tag_next")
    a.push(EBX)
    a.mov(EBX, mem(EBP, 8))
    a.mov(EAX, mem(EBP, 12))
    a.sub(EAX, EBX)
    capped(_sv("len"), MAX_DUMP)
    con.dump("mod", EBX, _sv("len"))
    a.pop(EBX)
    a.label("mb2_tag_next")
    a.mov(EAX, mem(EBP, 4))
    a.add(EAX, 7)
    a.and_(EAX, ~7 & 0xFFFFFFFF)
    a.add(EBP, EAX)
    a.jmp("mb2_tag")

    a.label("done")
    con.text(f" {REPORT_END}\r\n")
    a.jmp("finish")
    con.routines()
    con.data()
    a.align(16, 0)
    code_end = a.here()
    a.labels["sv"] = code_end
    a.labels["stack_top"] = code_end + 0x100 + STACK
    return a.assemble(), code_end + 0x100 + STACK


def build_mbprobe() -> bytes:
    code, memsz = _mb_probe_code()
    entry = MB_BASE
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 2, 3, 1, entry, 52, 0, 0,
                       52, 32, 1, 0, 0, 0)
    phdr = struct.pack("<IIIIIIII", 1, MB_FILE_OFFSET, MB_BASE, MB_BASE, len(code), memsz, 7, 0x20)
    return (ehdr + phdr).ljust(MB_FILE_OFFSET, b"\0") + code


PROBES = {
    "bzprobe.bzImage": build_bzprobe,
    "mbprobe.elf": build_mbprobe,
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    bad = 0
    for name, make in PROBES.items():
        path = OUT / name
        data = make()
        if check:
            if not path.exists() or path.read_bytes() != data:
                print(f"fixtures/probes/{name}: differs from what tools/probes/build.py builds")
                bad = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"fixtures/probes/{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
