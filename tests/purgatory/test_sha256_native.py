"""The purgatory's SHA-256 routines and its zero check run natively (mapped executable in this process,
called through ctypes with the System V ABI they follow); the digests are compared with hashlib."""

import ctypes
import hashlib
import mmap
import os
import random
from pathlib import Path

import pytest

from kexloader.purgatory.sha256_code import WORKSPACE_SIZE, native_routines


def _has_sha_ni() -> bool:
    try:
        return " sha_ni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


SHA_NI = pytest.param("sha256_blocks_shani", marks=pytest.mark.skipif(not _has_sha_ni(),
                                                                       reason="CPU lacks sha_ni"))
ROUTINES = ["sha256_blocks_int", SHA_NI]
SIZES = [0, 1, 2, 3, 31, 32, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4095, 4096, 65537, 1 << 20]


class Native:
    def __init__(self):
        code, self.offsets = native_routines()
        self.map = mmap.mmap(-1, len(code), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self.map.write(code)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        self.regions = ctypes.CFUNCTYPE(None, vp, sz, vp, vp, vp)(self.addr + self.offsets["sha256_regions"])
        self.blocks = {n: ctypes.CFUNCTYPE(None, vp, vp, sz)(self.addr + self.offsets[n])
                       for n in ("sha256_blocks_int", "sha256_blocks_shani")}
        self.zero_regions = ctypes.CFUNCTYPE(ctypes.c_uint64, vp, sz)(self.addr + self.offsets["zero_regions"])

    def nonzero(self, buf: bytearray, spans) -> int:
        """zero_regions over (offset, length) spans of buf."""
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        flat = [v for off, n in spans for v in (base + off, n)]
        table = (ctypes.c_uint64 * max(2, len(flat)))(*flat)
        return self.zero_regions(table, len(spans))

    def digest(self, parts, blocks: str) -> bytes:
        keep = [ctypes.create_string_buffer(bytes(p), max(1, len(p))) for p in parts]
        flat = [v for k, p in zip(keep, parts) for v in (ctypes.addressof(k), len(p))]
        table = (ctypes.c_uint64 * max(2, len(flat)))(*flat)
        out = ctypes.create_string_buffer(32)
        ws = ctypes.create_string_buffer(b"\xa5" * WORKSPACE_SIZE, WORKSPACE_SIZE)  # no reliance on zeros
        self.regions(table, len(parts), out, ws, ctypes.c_void_p(self.addr + self.offsets[blocks]))
        return out.raw


@pytest.fixture(scope="module")
def native():
    return Native()


@pytest.mark.parametrize("blocks", ROUTINES)
@pytest.mark.parametrize("size", SIZES)
def test_one_buffer(native, blocks, size):
    data = random.Random(size).randbytes(size)
    assert native.digest([data], blocks) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("blocks", ROUTINES)
def test_known_answers(native, blocks):
    """FIPS 180-4 examples (NIST CSRC "SHA256.pdf"): "abc" and the 448-bit two-block message."""
    assert native.digest([b"abc"], blocks).hex() == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    msg = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
    assert native.digest([msg], blocks).hex() == \
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"


@pytest.mark.parametrize("blocks", ROUTINES)
def test_many_regions_straddling_blocks(native, blocks):
    rng = random.Random(7)
    for trial in range(60):
        parts = [rng.randbytes(rng.choice([0, 1, 5, 63, 64, 65, 100, 200, 4096, rng.randrange(300)]))
                 for _ in range(rng.randrange(1, 9))]
        assert native.digest(parts, blocks) == hashlib.sha256(b"".join(parts)).digest(), trial


@pytest.mark.parametrize("blocks", ROUTINES)
def test_no_regions(native, blocks):
    assert native.digest([], blocks) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("blocks", ROUTINES)
def test_blocks_keep_callee_saved_registers_and_count_zero(native, blocks):
    """Called many times through ctypes: a clobbered rbx/rbp/r12-r15 or stack would crash the interpreter."""
    state = (ctypes.c_uint32 * 8)(*range(8))
    data = ctypes.create_string_buffer(os.urandom(64 * 5), 64 * 5)
    native.blocks[blocks](state, data, 0)
    assert list(state) == list(range(8))  # zero blocks: state untouched
    for _ in range(1000):
        native.blocks[blocks](state, data, 5)


def test_routines_agree_on_random_data(native):
    if not _has_sha_ni():
        pytest.skip("CPU lacks sha_ni")
    data = os.urandom(3 << 20)
    assert native.digest([data], "sha256_blocks_int") == native.digest([data], "sha256_blocks_shani")


# ------------------------------------------------------------------------------------------- zero_regions

GUARD = 64  # non-zero bytes on both sides of every region: a read outside it would be seen


def _guarded(lengths):
    """A buffer of zero regions with the given lengths at odd offsets, each between 0xFF guards."""
    buf, spans = bytearray(b"\xff" * (GUARD + 3)), []
    for n in lengths:
        spans.append((len(buf), n))
        buf += bytes(n) + b"\xff" * (GUARD + 5)
    return buf, spans


LENGTHS = [0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 200, 4096, 4099, 65536 + 31]


@pytest.mark.parametrize("length", LENGTHS)
def test_zero_regions_accepts_zeros_and_reads_nothing_outside(native, length):
    buf, spans = _guarded([length, 5, length])
    assert native.nonzero(buf, spans) == 0


@pytest.mark.parametrize("length", [n for n in LENGTHS if n])
def test_zero_regions_sees_one_nonzero_byte_anywhere(native, length):
    buf, spans = _guarded([100, length, 64])
    off, n = spans[1]
    positions = sorted({0, 1, 7, 8, 63, 64, n // 2, n - 65, n - 64, n - 2, n - 1} & set(range(n)))
    for pos in positions:
        for value in (0x01, 0x80):
            buf[off + pos] = value
            assert native.nonzero(buf, spans) != 0, (pos, value)
            buf[off + pos] = 0
    assert native.nonzero(buf, spans) == 0


def test_zero_regions_without_regions(native):
    assert native.nonzero(bytearray(b"\xff"), []) == 0


def test_zero_regions_random(native):
    rng = random.Random(11)
    for trial in range(200):
        buf, spans = _guarded([rng.randrange(1, 700) for _ in range(rng.randrange(1, 5))])
        off, n = rng.choice(spans)
        pos = off + rng.randrange(n)
        buf[pos] = 1 << rng.randrange(8)
        assert native.nonzero(buf, spans) != 0, trial
        buf[pos] = 0
        assert native.nonzero(buf, spans) == 0, trial
