"""kexloader.formats.compression: round trips, exact sniffing, and corrupt, truncated and bomb inputs."""

import bz2
import gzip
import hashlib
import importlib.util
import lzma
import mmap
import os
import random
import time
import tracemalloc
import zlib
from pathlib import Path

import lz4.block
import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from kexloader.formats import compression as c
from kexloader.formats.compression import (
    CompressionError,
    CorruptStreamError,
    DecompressionLimitError,
    TruncatedStreamError,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "compression"
_spec = importlib.util.spec_from_file_location("mkcompression_fixtures", ROOT / "tools" / "mkcompression_fixtures.py")
mkfix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mkfix)

MiB = 1 << 20


def lz4_legacy(data: bytes, mode: str = "high_compression") -> bytes:
    """What `lz4 -l` writes: the legacy magic, then (le32 size, lz4 block) per 8 MiB of input."""
    out = [b"\x02\x21\x4c\x18"]
    for i in range(0, len(data), 8 * MiB):
        b = lz4.block.compress(data[i:i + 8 * MiB], store_size=False, mode=mode)
        out += [len(b).to_bytes(4, "little"), b]
    return b"".join(out)


ENCODE = {      # checksums on, as the CLI tools write them (zstd) or as a kernel build would want them
    "gzip": lambda d: gzip.compress(d, mtime=0),
    "xz": lambda d: lzma.compress(d, check=lzma.CHECK_CRC32),
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "bzip2": bz2.compress,
    "zstd": lambda d: zstandard.ZstdCompressor(write_checksum=True).compress(d),
    "lz4": lambda d: lz4.frame.compress(d, content_checksum=True),
    "lz4-legacy": lz4_legacy,
}
FORMATS = list(ENCODE)
CHECKSUMMED = [f for f in FORMATS if f != "lz4-legacy"]
MULTI = [f for f in FORMATS if f != "lzma"]           # formats whose spec allows concatenation
SKIPPABLE = b"\x5a\x2a\x4d\x18" + (6).to_bytes(4, "little") + b"skip!!"

_rnd = random.Random(20240611)
RANDOM = _rnd.randbytes(150_000)
TEXT = b"".join(b"kexloader line %06d: the quick brown fox\n" % i for i in range(20_000))
DATA = {"empty": b"", "byte": b"x", "random": RANDOM, "text": TEXT, "mixed": TEXT[:30_000] + RANDOM[:20_000]}
MIXED = DATA["mixed"]
_encoded: dict[str, bytes] = {}


def enc(fmt: str) -> bytes:
    """MIXED compressed as `fmt` (cached)."""
    if fmt not in _encoded:
        _encoded[fmt] = ENCODE[fmt](MIXED)
    return _encoded[fmt]


def raises(error, fragment, data, **kw):
    with pytest.raises(error, match=fragment) as info:
        c.decompress(data, **kw)
    assert type(info.value) is error
    return info.value


# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", DATA)
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt, kind):
    packed = ENCODE[fmt](DATA[kind])
    assert c.sniff(packed) == fmt
    assert c.decompress(packed) == DATA[kind]
    assert c.maybe_decompress(packed) == (DATA[kind], fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_like_inputs(fmt):
    for wrap in (bytearray, memoryview):
        assert c.sniff(wrap(enc(fmt))) == fmt
        assert c.decompress(wrap(enc(fmt))) == MIXED


def test_an_mmap_closes_after_an_error(tmp_path):
    path = tmp_path / "cut.xz"
    path.write_bytes(enc("xz")[:100])
    with path.open("rb") as f, pytest.raises(TruncatedStreamError):
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:     # closing raised BufferError
            c.decompress(m)


def test_lz4_legacy_multi_block():
    data = TEXT * 14                                                   # 8.9 MiB: two blocks
    packed = lz4_legacy(data, mode="fast")
    assert int.from_bytes(packed[4:8], "little") < len(packed) - 8    # more than one block
    assert c.decompress(packed) == data


@pytest.mark.parametrize("name, fmt", [
    ("sample.gz", "gzip"), ("sample.xz", "xz"), ("sample.lzma", "lzma"), ("sample.bz2", "bzip2"),
    ("sample.zst", "zstd"), ("sample.lz4", "lz4"), ("sample.lz4l", "lz4-legacy")])
def test_cli_made_fixtures(name, fmt):
    """Streams written by the real tools (gzip, xz --x86, lzma, bzip2, zstd, lz4, lz4 -l)."""
    packed = (FIXTURES / name).read_bytes()
    assert c.sniff(packed) == fmt
    assert c.decompress(packed) == (FIXTURES / "sample.bin").read_bytes() == mkfix.sample()


def test_fixture_checksums():
    for line in (FIXTURES / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest, name


# --- several streams, padding, trailing data -------------------------------------------------------

@pytest.mark.parametrize("fmt", MULTI)
def test_multi_stream(fmt):
    a, b = ENCODE[fmt](b"first " * 1000), ENCODE[fmt](RANDOM[:70_000])    # b spans more than one read
    assert c.decompress(a + b + a) == b"first " * 1000 + RANDOM[:70_000] + b"first " * 1000
    assert c.decompress(a + bytes(8) + b) == b"first " * 1000 + RANDOM[:70_000]     # e.g. xz stream padding


@pytest.mark.parametrize("fmt", ["zstd", "lz4"])
def test_skippable_frames(fmt):
    packed = SKIPPABLE + enc(fmt) + SKIPPABLE + enc(fmt) + SKIPPABLE
    assert c.sniff(packed) == fmt
    assert c.decompress(packed) == MIXED * 2
    assert c.sniff(SKIPPABLE) is None and c.sniff(SKIPPABLE + b"raw data") is None
    raises(TruncatedStreamError, f"^{fmt} skippable frame at offset {len(enc(fmt))} is truncated$",
           enc(fmt) + SKIPPABLE[:-1])


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_padding_is_ignored(fmt):
    assert c.decompress(enc(fmt) + bytes(4096 + 3)) == MIXED


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "gzip"])
def test_trailing_data_is_corrupt(fmt):
    packed = enc(fmt) + bytes(4) + b"\x01\x02\x03\x04junk"
    raises(CorruptStreamError, f"^{fmt} stream is followed by 8 bytes that are neither zero padding nor "
           f"another {fmt} stream \\(at offset {len(enc(fmt)) + 4}\\)$", packed)
    assert c.decompress(packed, allow_trailing=True) == MIXED


def test_gzip_ignores_trailing_data_as_gzread_does():
    assert c.decompress(enc("gzip") + b"\x01\x02\x03\x04junk") == MIXED


# --- exact sniffing ---------------------------------------------------------------------------------

def _raw_samples():
    yield "empty", b""
    yield "zeros", bytes(4096)
    yield "ones", b"\xff" * 4096
    yield "text", TEXT[:4096]
    yield "random", RANDOM[:4096]
    yield "elf", mkfix.tiny_elf()
    yield "bzimage-head", mkfix.bzimage(b"payload")[:4096]
    yield "bzimage-fixture", (FIXTURES / "bzimage-xz.bin").read_bytes()
    for head in sorted((ROOT / "fixtures" / "bzimage").glob("*.head4096")):    # real kernels' first 4 KiB
        yield head.name, head.read_bytes()
    yield "cpio", b"070701" + b"0" * 104 + b"TRAILER!!!\0\0"
    yield "fixture-raw", (FIXTURES / "sample.bin").read_bytes()
    for f in FORMATS:                                   # an encoded stream with its first byte changed
        yield f"{f}-bad-magic", b"\x00" + enc(f)[1:]
    yield "gzip-reserved-flag", b"\x1f\x8b\x08\x20" + bytes(16)
    yield "gzip-not-deflate", b"\x1f\x8b\x07\x00" + bytes(16)
    yield "xz-bad-flags-crc", enc("xz")[:8] + b"\0\0\0\0" + enc("xz")[12:]
    yield "bzip2-level-0", b"BZh0" + enc("bzip2")[4:]
    yield "bzip2-no-block-magic", b"BZh9" + bytes(16)
    yield "zstd-reserved-bit", enc("zstd")[:4] + bytes([enc("zstd")[4] | 0x08]) + enc("zstd")[5:]
    yield "lz4-version-2", enc("lz4")[:4] + bytes([enc("lz4")[4] ^ 0xC0]) + enc("lz4")[5:]
    lz = enc("lzma")
    yield "lzma-dict-0", lz[:1] + bytes(4) + lz[5:]            # liblzma's picky rule alone takes this
    yield "lzma-dict-odd", lz[:1] + (5 << 20).to_bytes(4, "little") + lz[5:]
    yield "lzma-lc-lp-5", bytes([5 + 9 * 0]) + lz[1:]          # lc=5: lc + lp > 4
    yield "lzma-props-225", b"\xe1" + lz[1:]
    yield "lzma-huge-size", lz[:5] + (1 << 40).to_bytes(8, "little") + lz[13:]
    yield "lzma-header-then-garbage", lz[:13] + RANDOM[:200]


@pytest.mark.parametrize("name, data", list(_raw_samples()), ids=[n for n, _ in _raw_samples()])
def test_raw_data_is_not_compressed(name, data):
    assert c.sniff(data) is None
    assert c.maybe_decompress(data)[0] is data
    raises(CompressionError, "^data is not compressed", data)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 1 << 64), size=st.integers(0, 2048))
def test_random_bytes_are_not_compressed(seed, size):
    """Seeded bytes: st.binary() mines the module's constants and builds real headers (the lz4 -l
    magic alone is a valid empty stream); those are the hostile-stream test's business."""
    assert c.sniff(random.Random(seed).randbytes(size)) is None


def test_headers_that_are_almost_lzma():
    lz = enc("lzma")
    assert c.sniff(lz[:13] + bytes(300)) == "lzma"          # a good header, damaged data: lzma's error
    raises(TruncatedStreamError, "^lzma stream is truncated", lz[:13] + bytes(300))


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(FORMATS), cut=st.integers(0, 200), tail=st.binary(max_size=300))
def test_hostile_streams_raise_only_compression_errors(fmt, cut, tail):
    """A real stream's start followed by anything: bytes or a CompressionError, never anything else."""
    packed = enc(fmt)[:cut] + tail
    try:
        c.decompress(packed, limit=MiB)
    except CompressionError:
        pass


# --- corrupt, truncated, oversized ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", CHECKSUMMED)
def test_bit_flips_are_corrupt(fmt):
    packed = enc(fmt)
    for pos in range(len(packed) // 4, 3 * len(packed) // 4, len(packed) // 40):
        for bit in (0, 6):
            bad = bytearray(packed)
            bad[pos] ^= 1 << bit
            raises(CorruptStreamError, f"^{fmt} stream is corrupt after \\d+ bytes of output: ", bytes(bad))


def test_lz4_legacy_bad_block_is_corrupt():
    """lz4-legacy has no checksum: a flip is found only when it breaks a block (match before the start)."""
    bad_block = b"\x00\xff\xff" + bytes(8)
    packed = enc("lz4-legacy") + len(bad_block).to_bytes(4, "little") + bad_block
    raises(CorruptStreamError, f"^lz4-legacy stream is corrupt after {len(MIXED)} bytes of output: "
           f"block at offset {len(enc('lz4-legacy'))}: ", packed)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_everywhere(fmt):
    packed = enc(fmt)
    cuts = sorted({16, 17, 20, 32, len(packed) - 1, len(packed) - 2, len(packed) - 4}
                  | set(range(16, len(packed), len(packed) // 25)))
    for cut in cuts:
        e = raises(TruncatedStreamError, f"^{fmt} stream is truncated after \\d+ bytes of output$", packed[:cut])
        assert e.format == fmt and 0 <= e.output_size <= len(MIXED)


def test_truncation_message_counts_output():
    packed = ENCODE["gzip"](RANDOM)
    e = raises(TruncatedStreamError, "^gzip stream is truncated after", packed[:len(packed) // 2])
    assert 0 < e.output_size < len(RANDOM)
    assert str(e) == f"gzip stream is truncated after {e.output_size} bytes of output"


def test_truncated_second_stream():
    packed = enc("xz") + enc("xz")[:-10]
    e = raises(TruncatedStreamError, "^xz stream is truncated after", packed)
    assert e.output_size >= len(MIXED)


_bombs: dict[str, bytes] = {}


def bomb(fmt: str) -> bytes:
    """1 GiB of zeros in 32 streams of 32 MiB (lzma: one stream), each already twice the limit."""
    if fmt not in _bombs:
        piece = {"gzip": lambda d: gzip.compress(d, compresslevel=1, mtime=0),
                 "xz": lambda d: lzma.compress(d, preset=0),
                 "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE, preset=0),
                 "zstd": lambda d: zstandard.ZstdCompressor(level=1).compress(d),
                 "lz4": lz4.frame.compress,
                 "lz4-legacy": lambda d: lz4_legacy(d, mode="fast")}.get(fmt, ENCODE[fmt])(bytes(32 * MiB))
        _bombs[fmt] = piece if fmt == "lzma" else piece * 32
    return _bombs[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_decompression_bomb_stops_at_the_limit(fmt):
    packed = bomb(fmt)
    assert len(packed) < 8 * MiB                                      # lz4's ratio is the lowest: 1:250
    tracemalloc.start()
    start = time.monotonic()
    try:
        e = raises(DecompressionLimitError, f"^{fmt} stream inflates to more than the 16777216-byte limit; "
                   "stopped there$", packed, limit=16 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 5                               # inflating it all takes far longer
    assert 16 * MiB < e.output_size <= 16 * MiB + 8 * MiB
    assert peak < 16 * MiB + 17 * MiB, f"peak {peak >> 20} MiB"     # lz4-legacy: an 8 MiB block, copied


@pytest.mark.parametrize("fmt", FORMATS)
def test_limit_is_inclusive(fmt):
    assert c.decompress(enc(fmt), limit=len(MIXED)) == MIXED
    e = raises(DecompressionLimitError, f"^{fmt} stream inflates to more than the {len(MIXED) - 1}-byte limit",
               enc(fmt), limit=len(MIXED) - 1)
    assert e.output_size > len(MIXED) - 1


@pytest.mark.parametrize("fmt", ["lzma", "xz"])
def test_hostile_dictionary_is_refused(fmt):
    """A header asking for a 1.5 GiB dictionary stops at the memory limit instead of allocating it."""
    if fmt == "lzma":
        packed = b"\x5d" + (3 << 29).to_bytes(4, "little") + enc("lzma")[5:]
    else:                                   # patch the block header: encoding with 1.5 GiB would take seconds
        packed = bytearray(lzma.compress(b"x", check=lzma.CHECK_CRC32))
        assert packed[12:17] == b"\x02\x00\x21\x01\x16"           # 12-byte header, LZMA2, 8 MiB dictionary
        packed[16] = 37                                             # (2 | 37 & 1) << (37 // 2 + 11) = 1.5 GiB
        packed[20:24] = zlib.crc32(packed[12:20]).to_bytes(4, "little")
        packed = bytes(packed)
    assert c.sniff(packed) == fmt
    raises(DecompressionLimitError, f"^{fmt} stream needs more than 256 MiB of memory to decode", packed)


def test_errors_are_value_errors_with_context():
    for cls in (CorruptStreamError, TruncatedStreamError, DecompressionLimitError):
        assert issubclass(cls, CompressionError) and issubclass(cls, ValueError)
    e = raises(CorruptStreamError, "gzip", b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 100)
    assert e.format == "gzip"


# --- find_payloads ---------------------------------------------------------------------------------

def test_find_payloads_in_an_image():
    filler = random.Random(7).randbytes(3000)
    blob, expected = bytearray(filler), []
    for fmt in FORMATS:
        expected.append((len(blob), fmt))
        blob += enc(fmt) + filler
    assert c.find_payloads(bytes(blob)) == expected
    assert c.find_payloads(memoryview(bytes(blob))) == expected
    assert c.find_payloads(filler * 10) == []
    heads = {"gzip": 10, "xz": 12, "lzma": 13, "bzip2": 10, "zstd": 5, "lz4": 7, "lz4-legacy": 4}
    for fmt, size in heads.items():     # a header followed by other data: not a payload
        assert c.find_payloads(filler + enc(fmt)[:size] + filler) == [], fmt


def test_find_payloads_in_bzimage_fixtures():
    assert c.find_payloads((FIXTURES / "bzimage-xz.bin").read_bytes()) == [(1024 + 0x100, "xz")]
    assert c.find_payloads((FIXTURES / "bzimage-v206-gzip.bin").read_bytes()) == [(2560 + 0x100, "gzip")]


_CACHE = Path(os.environ.get("KEXLOADER_CACHE", Path.home() / ".cache" / "kexloader"))   # tools/install-deps.sh


def _cached(pattern: str) -> list[Path]:
    """One file per VM platform ($cache/platforms/NAME/..., tools/apt-platforms.sh), else the legacy $cache/..."""
    found = [sorted(p.glob(pattern))[-1] for p in sorted(_CACHE.glob("platforms/*")) if sorted(p.glob(pattern))]
    return found or sorted(_CACHE.glob(pattern))[-1:]


def _kernel_compression(vmlinuz: Path) -> str | None:
    """CONFIG_KERNEL_<X>=y from the package's config (boot/config-VER or lib/modules/VER/config)."""
    version = vmlinuz.name.removeprefix("vmlinuz-")
    for cfg in (vmlinuz.parent / f"config-{version}", vmlinuz.parent.parent / "lib/modules" / version / "config"):
        if cfg.is_file():
            for algo in ("gzip", "bzip2", "lzma", "xz", "lzo", "lz4", "zstd"):
                if f"CONFIG_KERNEL_{algo.upper()}=y" in cfg.read_text(errors="replace"):
                    return algo
    return None


DEBIAN = _cached("linux/boot/vmlinuz-*-amd64")
XEN = _cached("xen/boot/xen-*-amd64.gz")


@pytest.mark.skipif(not XEN, reason=f"no Debian Xen in {_CACHE}/platforms/*/xen/boot (tools/install-deps.sh)")
@pytest.mark.parametrize("xen", XEN, ids=[p.name for p in XEN])
def test_debian_xen_gz(xen):
    """kexec-tools built by Debian cannot read this at all; it is what the seed's Xen paths load."""
    packed = xen.read_bytes()
    assert c.sniff(packed) == "gzip"
    assert c.decompress(packed, limit=64 * MiB)[:4] == b"\x7fELF"


@pytest.mark.skipif(not DEBIAN, reason=f"no Debian kernel in {_CACHE}/platforms/*/linux/boot (tools/install-deps.sh)")
@pytest.mark.parametrize("vmlinuz", DEBIAN, ids=[p.name for p in DEBIAN])
def test_debian_kernel_payload_is_found(vmlinuz):
    image = vmlinuz.read_bytes()
    code = ((image[0x1F1] or 4) + 1) * 512
    assert c.sniff(image) is None
    algo = _kernel_compression(vmlinuz) or "xz"  # Debian 12's is xz, Debian 13's zstd
    assert c.find_payloads(image) == [(code + int.from_bytes(image[0x248:0x24C], "little"), algo)]
