"""SHA-256 (FIPS 180-4) in generated x86-64 code, for the purgatory's check of the loaded segments.

Three position-independent routines, all with the System V C calling convention (so tests and
tools/bench_sha256.py call them natively through ctypes, and the purgatory calls them the same way):

    sha256_blocks_int(uint32 state[8], const uint8 *data, size_t nblocks)     integer only (no SSE: the
        kexec entry state has CR4.OSFXSR clear, Linux arch/x86/kernel/relocate_kernel_64.S)
    sha256_blocks_shani(uint32 state[8], const uint8 *data, size_t nblocks)   SHA extensions + SSSE3
        (SDM vol. 2: SHA256RNDS2, SHA256MSG1, SHA256MSG2; PSHUFB/PALIGNR)
    sha256_regions(const struct {u64 start, len;} *regions, size_t n, uint8 out[32], void *workspace,
                   blocks_fn)                                                   the whole hash over the
        concatenation of the regions (any lengths), padding included; workspace: WORKSPACE_SIZE bytes

Round structure and constants are from FIPS 180-4 §4.2.2, §5.3.3 and §6.2; the SHA-NI register layout
(ABEF/CDGH) from the SDM's SHA256RNDS2 operation description.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .asm import (CR0, CR4, EAX, EBP, EBX, ECX, EDX, ESI, R8, R8D, R9D, R10D, R11D, R12, R12D, R13, R13D, R14,
                  R14D, R15, R15D, RAX, RBP, RBX, RCX, RDI, RDX, RSI, RSP, XMM0, XMM1, XMM2, XMM3, XMM4, XMM5,
                  XMM6, XMM7, XMM8, XMM9, XMM10, AsmError, Assembler, Mem, Reg, mem, rip)
from .zero_code import emit_zero_regions

if TYPE_CHECKING:
    from .program import Region  # program imports this module

# FIPS 180-4 §4.2.2: first 32 bits of the fractional parts of the cube roots of the first 64 primes
K = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)
# FIPS 180-4 §5.3.3: initial hash value (square roots of the first 8 primes)
H0 = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)

# sha256_regions workspace layout
WS_STATE, WS_BUF, WS_TOTAL, WS_PTR, WS_LEN = 0, 32, 96, 104, 112
DIGEST_WORKSPACE_SIZE = 128
# the purgatory's verify step adds: computed digest, saved CR4/CR0
WS_DIGEST, WS_SAVED_CR4, WS_SAVED_CR0 = 128, 160, 168
WORKSPACE_SIZE = 176

CPUID_SHA_BIT = 29  # CPUID.(EAX=7,ECX=0):EBX
CPUID_SSSE3_BIT = 9  # CPUID.1:ECX
CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 9, 1 << 10
CR0_MP, CR0_EM, CR0_TS = 1 << 1, 1 << 2, 1 << 3

_SAVED = (RBX, RBP, R12, R13, R14, R15)  # callee-saved in the System V ABI


# ------------------------------------------------------------------------------------------ integer


def emit_blocks_int(a: Assembler, name: str = "sha256_blocks_int") -> None:
    """FIPS 180-4 §6.2.2, fully unrolled and written for short dependency chains (the round-to-round
    chains through e and a set the pace): a..h live in r8d..r15d and are renamed instead of moved; each Sigma is three rotations of the same
    input (two of them in parallel) instead of a chain of five; T1 is built from h + W + K first (known a round
    early), then Ch, then Sigma1; Maj(a, b, c) = ((a ^ b) & (b ^ c)) ^ b reuses the a ^ b of the round
    before as this round's b ^ c. The message schedule is a 16-word ring on the stack (W[t-16] is overwritten
    by W[t]); the data pointer and the block count live on the stack too, to free rsi and rdx."""
    data_ptr, count = mem(RSP, 64, size=64), mem(RSP, 72, size=64)
    a.label(name)
    for r in _SAVED:
        a.push(r)
    a.sub(RSP, 80)
    a.test(RDX, RDX)
    a.j("z", f"{name}_done")
    a.mov(data_ptr, RSI)
    a.mov(count, RDX)
    a.label(f"{name}_block")
    a.mov(RBP, data_ptr)  # rbp: the block's bytes until round 15, then a schedule temporary
    names = [R8D, R9D, R10D, R11D, R12D, R13D, R14D, R15D]  # a, b, c, d, e, f, g, h
    for i, r in enumerate(names):
        a.mov(r, mem(RDI, 4 * i))
    ab, bc = ESI, EDX  # a ^ b of this round, b ^ c (the previous round's a ^ b); they swap every round
    a.mov(bc, names[1])
    a.xor(bc, names[2])

    def w(t: int) -> Mem:
        return mem(RSP, 4 * (t % 16), size=32)

    for t in range(64):
        va, vb, vc, vd, ve, vf, vg, vh = names
        if t < 16:
            a.mov(EAX, mem(RBP, 4 * t))
            a.bswap(EAX)  # message words are big-endian
        else:
            # W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16]
            _small_sigma(a, EAX, EBX, w(t - 15), (7, 18, 3))  # s0
            _small_sigma(a, ECX, EBP, w(t - 2), (17, 19, 10))  # s1
            a.add(EAX, ECX)
            a.add(EAX, w(t - 16))
            a.add(EAX, w(t - 7))
        if t + 2 < 64:  # W[62] and W[63] are read by no later schedule step
            a.mov(w(t), EAX)
        # T1 = h + K[t] + W[t] + Ch(e, f, g) + S1(e), accumulated in h
        a.add(vh, EAX)
        a.add(vh, K[t])
        a.mov(EBX, vf)
        a.xor(EBX, vg)
        a.and_(EBX, ve)
        a.xor(EBX, vg)  # Ch(e, f, g) = ((f ^ g) & e) ^ g
        _big_sigma(a, ECX, EAX, ve, (6, 11, 25))  # S1(e)
        a.add(vh, EBX)
        a.add(vh, ECX)
        a.add(vd, vh)  # e' = d + T1
        # T2 = S0(a) + Maj(a, b, c); a' = T1 + T2
        _big_sigma(a, ECX, EAX, va, (2, 13, 22))  # S0(a)
        a.mov(ab, va)
        a.xor(ab, vb)
        a.and_(bc, ab)
        a.xor(bc, vb)  # Maj(a, b, c)
        a.add(ECX, bc)
        a.add(vh, ECX)
        ab, bc = bc, ab  # this round's a ^ b is the next round's b ^ c
        names = [vh, va, vb, vc, vd, ve, vf, vg]  # the register that held h now holds a
        if t == 15:
            a.add(data_ptr, 64)
    assert names[0] is R8D  # 64 renamings bring every value back to its register
    for i, r in enumerate(names):
        a.add(mem(RDI, 4 * i), r)
    a.dec(count)
    a.j("nz", f"{name}_block")
    a.label(f"{name}_done")
    a.add(RSP, 80)
    for r in reversed(_SAVED):
        a.pop(r)
    a.ret()


def _small_sigma(a: Assembler, out: Reg, tmp: Reg, word: Mem, ops: tuple[int, int, int]) -> None:
    """out = ror(x, r1) ^ ror(x, r2) ^ (x >> s) for x = word (FIPS 180-4 §4.1.2); not on the rounds' chains."""
    r1, r2, s = ops
    a.mov(tmp, word)
    a.mov(out, tmp)
    a.ror(out, r2 - r1)
    a.xor(out, tmp)
    a.ror(out, r1)  # ror r2 ^ ror r1
    a.shr(tmp, s)
    a.xor(out, tmp)


def _big_sigma(a: Assembler, out: Reg, tmp: Reg, x: Reg, rotations: tuple[int, int, int]) -> None:
    """out = ror(x, r1) ^ ror(x, r2) ^ ror(x, r3) (FIPS 180-4 §4.1.2), two rotations in parallel: depth 3."""
    r1, r2, r3 = rotations
    a.mov(out, x)
    a.ror(out, r1)
    a.mov(tmp, x)
    a.ror(tmp, r2)
    a.xor(out, tmp)
    a.ror(tmp, r3 - r2)
    a.xor(out, tmp)


# ------------------------------------------------------------------------------------------ SHA-NI


def emit_blocks_shani(a: Assembler, name: str = "sha256_blocks_shani") -> None:
    """Four rounds per SHA256RNDS2 pair. State is kept as ABEF (xmm1) and CDGH (xmm2), dword 3 first
    (SDM: SHA256RNDS2 takes A,B,E,F from src[127:0] high to low); xmm3-6 hold W in groups of four,
    xmm0 the implicit W+K operand, xmm7 a temporary, xmm8 the byte-swap mask, xmm9/10 the saved state."""
    state0, state1, tmp, mask, save0, save1 = XMM1, XMM2, XMM7, XMM8, XMM9, XMM10
    msgs = [XMM3, XMM4, XMM5, XMM6]
    a.label(name)
    a.test(RDX, RDX)
    a.j("z", f"{name}_ret")
    a.movdqa(mask, rip(f"{name}_bswap"))
    a.movdqu(state0, mem(RDI))  # a b c d (dword 0 first)
    a.movdqu(state1, mem(RDI, 16))  # e f g h
    a.pshufd(state0, state0, 0x1B)  # d c b a
    a.pshufd(state1, state1, 0x1B)  # h g f e
    a.movdqa(tmp, state1)
    a.punpckhqdq(tmp, state0)  # f e b a  = ABEF
    a.punpcklqdq(state1, state0)  # h g d c = CDGH
    a.movdqa(state0, tmp)
    a.label(f"{name}_block")
    a.movdqa(save0, state0)
    a.movdqa(save1, state1)
    for i in range(16):
        m = msgs[i % 4]
        if i < 4:
            a.movdqu(m, mem(RSI, 16 * i))
            a.pshufb(m, mask)  # big-endian message words
        else:
            # W[4i..4i+3] from the four previous groups (FIPS 180-4 §6.2.2 step 1)
            a.sha256msg1(m, msgs[(i - 3) % 4])  # W[t-16] + s0(W[t-15])
            a.movdqa(tmp, msgs[(i - 1) % 4])
            a.palignr(tmp, msgs[(i - 2) % 4], 4)  # W[t-7]
            a.paddd(m, tmp)
            a.sha256msg2(m, msgs[(i - 1) % 4])  # + s1(W[t-2])
        a.movdqa(XMM0, m)
        a.paddd(XMM0, rip(f"{name}_k", 16 * i))
        a.sha256rnds2(state1, state0)  # rounds 4i, 4i+1: state1 becomes ABEF, state0 is now CDGH
        a.pshufd(XMM0, XMM0, 0x0E)  # W+K of the next two rounds into the low qword
        a.sha256rnds2(state0, state1)  # rounds 4i+2, 4i+3: back to state0 = ABEF, state1 = CDGH
    a.paddd(state0, save0)
    a.paddd(state1, save1)
    a.add(RSI, 64)
    a.dec(RDX)
    a.j("nz", f"{name}_block")
    a.movdqa(tmp, state1)
    a.punpckhqdq(tmp, state0)  # d c b a
    a.punpcklqdq(state1, state0)  # h g f e
    a.pshufd(tmp, tmp, 0x1B)
    a.pshufd(state1, state1, 0x1B)
    a.movdqu(mem(RDI), tmp)
    a.movdqu(mem(RDI, 16), state1)
    a.label(f"{name}_ret")
    a.ret()
    a.align(16, 0)
    a.label(f"{name}_bswap")  # PSHUFB mask reversing the bytes of each dword
    a.db(bytes([3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12]))
    a.label(f"{name}_k")
    a.dd(*K)


# ------------------------------------------------------------------------------------------ driver


def emit_regions(a: Assembler, name: str = "sha256_regions") -> None:
    """SHA-256 of the concatenated regions: whole blocks straight from memory, the pieces that straddle
    region ends through the workspace buffer, then the FIPS 180-4 §5.1.1 padding."""
    ws = R15
    buffered = RBX  # bytes waiting in the buffer (0..63)
    a.label(name)
    for r in _SAVED:
        a.push(r)
    a.sub(RSP, 8)  # keep rsp 16-byte aligned at our calls
    a.mov(R12, RDI)
    a.mov(R13, RSI)
    a.mov(R14, RDX)
    a.mov(ws, RCX)
    a.mov(RBP, R8)
    a.lea(RSI, rip(f"{name}_h0"))
    a.mov(RDI, ws)
    a.mov(ECX, 32)
    a.rep_movs(1)
    a.xor(EBX, EBX)
    a.mov(mem(ws, WS_TOTAL, size=64), 0)

    a.label(f"{name}_next")
    a.test(R13, R13)
    a.j("z", f"{name}_finish")
    a.mov(RAX, mem(R12))
    a.mov(mem(ws, WS_PTR), RAX)
    a.mov(RAX, mem(R12, 8))
    a.mov(mem(ws, WS_LEN), RAX)
    a.add(mem(ws, WS_TOTAL), RAX)
    a.add(R12, 16)
    a.dec(R13)
    a.test(buffered, buffered)
    a.j("z", f"{name}_whole")
    # top the buffer up from this region: n = min(64 - buffered, len)
    a.mov(ECX, 64)
    a.sub(RCX, buffered)
    a.cmp(RCX, mem(ws, WS_LEN))
    a.j("be", f"{name}_fill")
    a.mov(RCX, mem(ws, WS_LEN))
    a.label(f"{name}_fill")
    a.sub(mem(ws, WS_LEN), RCX)
    a.mov(RSI, mem(ws, WS_PTR))
    a.lea(RDI, mem(ws, WS_BUF, buffered))
    a.add(buffered, RCX)
    a.rep_movs(1)
    a.mov(mem(ws, WS_PTR), RSI)
    a.cmp(EBX, 64)
    a.j("ne", f"{name}_next")  # not full: this region is used up
    _call_blocks(a, ws)
    a.xor(EBX, EBX)
    a.label(f"{name}_whole")
    a.mov(RDX, mem(ws, WS_LEN))
    a.shr(RDX, 6)
    a.j("z", f"{name}_tail")
    a.mov(RSI, mem(ws, WS_PTR))
    a.mov(RAX, RDX)
    a.shl(RAX, 6)
    a.add(mem(ws, WS_PTR), RAX)
    a.mov(RDI, ws)
    a.call(RBP)
    a.label(f"{name}_tail")
    a.mov(RCX, mem(ws, WS_LEN))
    a.and_(ECX, 63)
    a.mov(buffered, RCX)
    a.mov(RSI, mem(ws, WS_PTR))
    a.lea(RDI, mem(ws, WS_BUF))
    a.rep_movs(1)
    a.jmp(f"{name}_next")

    # padding: 0x80, zeros, 64-bit big-endian bit length, in one or two blocks
    a.label(f"{name}_finish")
    a.mov(mem(ws, WS_BUF, buffered, size=8), 0x80)
    a.inc(buffered)
    a.cmp(EBX, 56)
    a.j("be", f"{name}_pad")
    a.lea(RDI, mem(ws, WS_BUF, buffered))
    a.mov(ECX, 64)
    a.sub(RCX, buffered)
    a.xor(EAX, EAX)
    a.rep_stos(1)
    _call_blocks(a, ws)
    a.xor(EBX, EBX)
    a.label(f"{name}_pad")
    a.lea(RDI, mem(ws, WS_BUF, buffered))
    a.mov(ECX, 56)
    a.sub(RCX, buffered)
    a.xor(EAX, EAX)
    a.rep_stos(1)
    a.mov(RAX, mem(ws, WS_TOTAL))
    a.shl(RAX, 3)
    a.bswap(RAX)
    a.mov(mem(ws, WS_BUF + 56), RAX)
    _call_blocks(a, ws)
    for i in range(8):
        a.mov(EAX, mem(ws, 4 * i))
        a.bswap(EAX)
        a.mov(mem(R14, 4 * i), EAX)
    a.add(RSP, 8)
    for r in reversed(_SAVED):
        a.pop(r)
    a.ret()
    a.align(4, 0)
    a.label(f"{name}_h0")
    a.dd(*H0)


def _call_blocks(a: Assembler, ws: Reg) -> None:
    """blocks_fn(state, buffer, 1)."""
    a.mov(RDI, ws)
    a.lea(RSI, mem(ws, WS_BUF))
    a.mov(EDX, 1)
    a.call(RBP)


# ------------------------------------------------------------------------------------------ purgatory glue


ROUTINES = ("sha256_regions", "sha256_blocks_int", "sha256_blocks_shani")


def emit_routines(a: Assembler) -> None:
    """All three routines, 16-byte aligned (the SHA-NI constants are read with aligned SSE loads).

    They are position independent and depend on nothing but themselves, so their bytes are assembled ahead
    (assemble_routines, by tools/sha256_routines.py into sha256_routines.py, which a test checks against the
    assembler) and copied in: encoding the unrolled integer rounds takes ~15 ms."""
    from .sha256_routines import CODE as code, OFFSETS as offsets
    a.align(16)
    start = a.here()
    for name in ROUTINES:
        if name in a.labels:
            raise AsmError(f"label {name!r} defined twice")
        a.labels[name] = start + offsets[name]
    a.raw(code)


def assemble_routines() -> tuple[bytes, dict[str, int]]:
    """The three routines assembled at address 0, and where each starts."""
    a = Assembler(bits=64, base=0)
    emit_regions(a)
    a.align(16)
    emit_blocks_int(a)
    a.align(16)
    emit_blocks_shani(a)
    return a.assemble(), {name: a.labels[name] for name in ROUTINES}


def emit_verify(a: Assembler, count: int, fail_label: str, workspace: str = "workspace") -> None:
    """Pick the block routine by CPUID, hash the regions, restore CR0/CR4, jump to fail_label on a mismatch.

    SHA-NI is used only when CPUID.(7,0):EBX[29] (SHA) and CPUID.1:ECX[9] (SSSE3) are set; then CR4.OSFXSR and
    OSXMMEXCPT are turned on and CR0.EM/TS off (SDM vol. 3A §14.1.3), and both are put back afterwards."""
    a.lea(RBP, rip("sha256_blocks_int"))
    a.mov(RAX, CR4)
    a.mov(rip(workspace, WS_SAVED_CR4), RAX)
    a.mov(RAX, CR0)
    a.mov(rip(workspace, WS_SAVED_CR0), RAX)
    a.xor(EAX, EAX)
    a.cpuid()
    a.cmp(EAX, 7)
    a.j("b", "sha_chosen")
    a.mov(EAX, 1)
    a.cpuid()
    a.mov(ESI, ECX)
    a.mov(EAX, 7)
    a.xor(ECX, ECX)
    a.cpuid()
    a.test(EBX, 1 << CPUID_SHA_BIT)
    a.j("z", "sha_chosen")
    a.test(ESI, 1 << CPUID_SSSE3_BIT)
    a.j("z", "sha_chosen")
    a.mov(RAX, CR0)
    a.and_(RAX, ~(CR0_EM | CR0_TS))
    a.or_(RAX, CR0_MP)
    a.mov(CR0, RAX)
    a.mov(RAX, CR4)
    a.or_(RAX, CR4_OSFXSR | CR4_OSXMMEXCPT)
    a.mov(CR4, RAX)
    a.lea(RBP, rip("sha256_blocks_shani"))
    a.label("sha_chosen")
    a.lea(RDI, rip("sha_regions"))
    a.mov(ESI, count)
    a.lea(RDX, rip(workspace, WS_DIGEST))
    a.lea(RCX, rip(workspace))
    a.mov(R8, RBP)
    a.call("sha256_regions")
    a.mov(RAX, rip(workspace, WS_SAVED_CR0))
    a.mov(CR0, RAX)
    a.mov(RAX, rip(workspace, WS_SAVED_CR4))
    a.mov(CR4, RAX)
    for i in range(4):
        a.mov(RAX, rip(workspace, WS_DIGEST + 8 * i))
        a.cmp(RAX, rip("sha_digest", 8 * i))
        a.j("ne", fail_label)


def emit_verify_data(a: Assembler, regions: Sequence[Region], digest: bytes) -> None:
    a.align(8, 0)
    a.label("sha_regions")  # {u64 start, u64 len}[], in the order the loader hashed them
    for r in regions:
        a.dq(r.start, r.size)
    a.label("sha_digest")
    a.db(bytes(digest))


# ------------------------------------------------------------------------------------------ standalone


def native_routines(base: int = 0) -> tuple[bytes, dict[str, int]]:
    """The three routines and zero_code's zero_regions alone, for native tests and the benchmark:
    (code, {name: offset})."""
    a = Assembler(bits=64, base=base)
    emit_routines(a)
    a.align(16)
    emit_zero_regions(a)
    code = a.assemble()
    return code, {n: a.labels[n] for n in (*ROUTINES, "zero_regions")}
