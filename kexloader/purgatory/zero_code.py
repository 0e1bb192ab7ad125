"""The purgatory's check of the zero fills: generated x86-64 code that tests that ranges are all zero.

A segment's memory past its buffer (memsz - bufsz: for a bzImage, the kernel's whole decompression room)
is zero-filled by the kernel or Xen at load time. Hashing it would prove nothing more than reading it:
instead of putting those bytes through SHA-256 on both sides, the host hashes only the bytes it hands over
and the purgatory checks that every fill is still all zero, at memory speed.

    uint64 zero_regions(const struct {u64 start, len;} *regions, size_t n)
        0 when every byte of every region is zero, non-zero otherwise (System V ABI, so tests and
        tools/bench_sha256.py call it natively; it touches only caller-saved registers and no stack)

64 bytes per step as eight qword loads ORed into two accumulators; the last len % 64 bytes one at a
time, so no byte outside a region is read (under Xen the page tables map the segments only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .asm import AL, EAX, ESI, R8, R8D, R9, R10, RAX, RCX, RDI, RDX, RSI, Assembler, mem, rip

if TYPE_CHECKING:
    from .program import Region  # program imports this module


def emit_zero_regions(a: Assembler, name: str = "zero_regions") -> None:
    a.label(name)
    a.xor(EAX, EAX)  # al accumulates the tail bytes; stays 0 while everything is zero
    a.test(RSI, RSI)
    a.j("z", f"{name}_ret")
    a.label(f"{name}_next")
    a.mov(RDX, mem(RDI))  # start
    a.mov(RCX, mem(RDI, 8))  # length
    a.add(RDI, 16)
    a.mov(R8, RCX)
    a.shr(RCX, 6)
    a.j("z", f"{name}_tail")
    a.label(f"{name}_chunk")
    a.mov(R9, mem(RDX))
    a.mov(R10, mem(RDX, 8))
    for off in range(16, 64, 16):
        a.or_(R9, mem(RDX, off))
        a.or_(R10, mem(RDX, off + 8))
    a.or_(R9, R10)
    a.j("nz", f"{name}_found")
    a.add(RDX, 64)
    a.dec(RCX)
    a.j("nz", f"{name}_chunk")
    a.label(f"{name}_tail")
    a.and_(R8D, 63)
    a.j("z", f"{name}_done")
    a.label(f"{name}_byte")
    a.or_(AL, mem(RDX, size=8))
    a.add(RDX, 1)
    a.dec(R8D)
    a.j("nz", f"{name}_byte")
    a.label(f"{name}_done")
    a.dec(RSI)
    a.j("nz", f"{name}_next")
    a.label(f"{name}_ret")
    a.ret()
    a.label(f"{name}_found")
    a.mov(EAX, 1)
    a.ret()


def emit_zero_check(a: Assembler, count: int, fail_label: str) -> None:
    """Call zero_regions over the table emit_zero_data writes; jump to fail_label if any byte is not zero."""
    a.lea(RDI, rip("zero_table"))
    a.mov(ESI, count)
    a.call("zero_regions")
    a.test(RAX, RAX)
    a.j("nz", fail_label)


def emit_zero_data(a: Assembler, zeros: Sequence[Region]) -> None:
    a.align(8, 0)
    a.label("zero_table")  # {u64 start, u64 len}[]
    for r in zeros:
        a.dq(r.start, r.size)
