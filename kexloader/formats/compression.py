"""Compressed kernels, initrds and modules: detect by content, inflate with a hard output limit.

Formats (the names `sniff` returns):

  ``gzip``        1f 8b 08, flags' reserved bits clear; multi-member.
  ``xz``          fd 37 7a 58 5a 00 + stream flags whose CRC32 matches; multi-stream.
  ``lzma``        the 13-byte "alone" header (no magic), validated strictly: properties byte < 225
                  with lc + lp <= 4, a dictionary of 2^n or 2^n + 2^(n-1) bytes and at least 4 KiB
                  (what every encoder writes; liblzma's own "picky" rule, which alone would take
                  all-zero data), uncompressed size -1 or < 2^38, and a trial decode of the first
                  256 bytes (random data fails within 64). kexec-tools checks only the properties
                  byte. An lzma stream damaged in its first 256 bytes is taken for raw data, and
                  lzma, like lz4-legacy, has no checksum: later damage is found only when it
                  breaks the stream's structure.
  ``bzip2``       "BZh" + '1'..'9' + the block magic 31 41 59 26 53 59 (or the end-of-stream
                  magic 17 72 45 38 50 90 of an empty stream); multi-stream.
  ``zstd``        28 b5 2f fd with the frame header's reserved bit clear; multi-frame.
  ``lz4``         the lz4 frame format, 04 22 4d 18 with a version-01 descriptor; multi-frame.
  ``lz4-legacy``  02 21 4c 18, then blocks of (le32 compressed size, lz4 block) that each inflate
                  to at most 8 MiB: what the kernel's ``lz4 -l`` writes. There is no end marker: the
                  stream ends at the end of the data, at a size field of 0 or too large for a block
                  (as the lz4 tool decides), or where a new legacy magic starts another stream.
                  The magic alone is an empty stream (``lz4 -l`` of nothing).

Skippable frames (magic 50..5f 2a 4d 18, le32 length) may precede or follow zstd and lz4 frames.

What follows the last complete stream:

- zero bytes are ignored, for every format: images padded to a block size, xz stream padding;
- for gzip, anything else is ignored too, as zlib's gzread (and so kexec-tools) ignores it;
- for the others, anything else is a `CorruptStreamError`, unless the caller passes
  ``allow_trailing=True`` (a payload cut out of a bzImage ends with a 4-byte size, and a payload
  found by `find_payloads` is followed by the rest of the image).

Output is produced in bounded steps (1 MiB; an lz4-legacy block is 8 MiB; zstd, which takes no
output bound, is fed so little input that a step stays under a quarter of the room left) and
counted: `DecompressionLimitError` is raised as soon as the output passes ``limit``, so a bomb
never inflates further. The same error is raised for an xz or lzma stream whose dictionary needs
more than 256 MiB of memory. Checksums are verified where the stream has them (gzip, xz, bzip2;
zstd and lz4 frames when their writer added one, as the zstd tool does by default).

Nothing here reads files or imports kexloader; callers map `CompressionError` to their own errors.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

# bz2, lzma, lz4 and zstandard are imported by the code that decodes their format: a plain bzImage, -S, -u
# and -e never load them (a start-up cost the command line pays on every call).

if TYPE_CHECKING:
    from typing_extensions import Buffer     # collections.abc.Buffer from Python 3.12 on

_B = TypeVar("_B", bound="Buffer")

__all__ = [
    "DEFAULT_LIMIT", "FORMATS", "CompressionError", "CorruptStreamError", "TruncatedStreamError",
    "DecompressionLimitError", "sniff", "decompress", "maybe_decompress", "find_payloads",
]

DEFAULT_LIMIT = 1 << 30             # 1 GiB: more than any kernel, module or initrd we expect
FORMATS = ("gzip", "xz", "lzma", "bzip2", "zstd", "lz4", "lz4-legacy")

_STEP = 1 << 16                     # input fed per call
_CHUNK = 1 << 20                    # output asked for per call
_LZMA_MEMLIMIT = 256 << 20          # xz -9 needs 65 MiB; a hostile dictionary size stops here
_LZMA_TRIAL = 256                   # input bytes trial-decoded to accept a header-only lzma match
_LZ4_LEGACY_BLOCK = 8 << 20
_LZ4_LEGACY_BOUND = _LZ4_LEGACY_BLOCK + _LZ4_LEGACY_BLOCK // 255 + 16   # LZ4_COMPRESSBOUND
_ZSTD_MAX_RATIO = 1 << 15           # a 4-byte RLE block inflates to 128 KiB

_GZIP_MAGIC = b"\x1f\x8b\x08"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_BLOCK = b"\x31\x41\x59\x26\x53\x59"
_BZIP2_EOS = b"\x17\x72\x45\x38\x50\x90"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"


class CompressionError(ValueError):
    """A stream that cannot be inflated. `format` names the compression (None: not compressed)."""

    def __init__(self, message: str, *, format: str | None = None, output_size: int = 0):
        super().__init__(message)
        self.format = format
        self.output_size = output_size


class CorruptStreamError(CompressionError):
    """The data is not a valid stream of its format (bad header, data, checksum, trailing data)."""


class TruncatedStreamError(CompressionError):
    """The stream ends before its end marker."""


class DecompressionLimitError(CompressionError):
    """The output would pass the caller's limit."""


# ---------------------------------------------------------------------------------------------
# Header checks: view -> bool. Exact, and cheap except lzma's trial decode.

def _u32(view: memoryview, pos: int) -> int:
    return int.from_bytes(view[pos:pos + 4], "little")


def _is_gzip(h: memoryview) -> bool:
    return len(h) >= 10 and h[:3] == _GZIP_MAGIC and not h[3] & 0xE0


def _is_xz(h: memoryview) -> bool:
    return (len(h) >= 12 and h[:6] == _XZ_MAGIC and h[6] == 0 and h[7] < 16
            and zlib.crc32(h[6:8]) == _u32(h, 8))


def _is_bzip2(h: memoryview) -> bool:
    return len(h) >= 10 and h[:3].tobytes() == b"BZh" and 0x31 <= h[3] <= 0x39 and h[4:10] in (_BZIP2_BLOCK, _BZIP2_EOS)


def _is_zstd(h: memoryview) -> bool:
    return len(h) >= 5 and h[:4] == _ZSTD_MAGIC and not h[4] & 0x08


def _is_lz4(h: memoryview) -> bool:
    return (len(h) >= 7 and h[:4] == _LZ4_MAGIC and h[4] >> 6 == 1 and not h[4] & 0x02
            and not h[5] & 0x8F and h[5] >> 4 >= 4)


def _is_lz4_legacy(h: memoryview) -> bool:
    return len(h) >= 4 and h[:4] == _LZ4_LEGACY_MAGIC


def _is_lzma(h: memoryview) -> bool:
    if len(h) < 14:
        return False
    props, dict_size, size = h[0], _u32(h, 1), int.from_bytes(h[5:13], "little")
    lc, lp = props % 9, props // 9 % 5
    if props >= 225 or lc + lp > 4:
        return False
    low = dict_size & -dict_size
    if dict_size < 4096 or dict_size not in (low, 3 * low, 0xFFFFFFFF):
        return False                                # 2^n, 2^n + 2^(n-1), or "unknown"
    if size != (1 << 64) - 1 and size >= 1 << 38:
        return False
    import lzma
    try:                                            # trial decode: random data fails within 64 bytes
        lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT).decompress(h[:_LZMA_TRIAL], 1 << 16)
    except lzma.LZMAError as e:
        return "Memory usage limit" in str(e)       # a good header asking for a huge dictionary
    return True


_CHECKS = (("gzip", _is_gzip), ("xz", _is_xz), ("bzip2", _is_bzip2), ("zstd", _is_zstd), ("lz4", _is_lz4),
           ("lz4-legacy", _is_lz4_legacy), ("lzma", _is_lzma))
_CHECK = dict(_CHECKS)


def _view(data: Buffer) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _skippable(view: memoryview, pos: int) -> int | None:
    """Length of the skippable frame at `pos` (zstd and lz4 share them), or None."""
    if len(view) - pos >= 4 and view[pos] & 0xF0 == 0x50 and view[pos + 1:pos + 4].tobytes() == b"\x2a\x4d\x18":
        return 8 + _u32(view, pos + 4)
    return None


def _skip_frames(view: memoryview, pos: int, fmt: str) -> int:
    """Skip the skippable frames at `pos`; a cut one is a `TruncatedStreamError`."""
    while (n := _skippable(view, pos)) is not None:
        if pos + n > len(view):
            raise TruncatedStreamError(f"{fmt} skippable frame at offset {pos} is truncated", format=fmt)
        pos += n
    return pos


def sniff(data: Buffer) -> str | None:
    """The compression of `data` (one of `FORMATS`), or None for data that is not compressed."""
    view = _view(data)
    start = 0
    while (n := _skippable(view, start)) is not None and start + n < len(view):
        start += n
    head = view[start:]
    for name, check in _CHECKS:
        if check(head):
            return name if start == 0 or name in ("zstd", "lz4") else None
    return None


# ---------------------------------------------------------------------------------------------
# Decoders: one stream at the start of `view`, output into `out`; return the input consumed.

class _Out:
    def __init__(self, fmt: str, limit: int) -> None:
        self.fmt, self.limit, self.size = fmt, limit, 0
        self.chunks: list[bytes] = []

    def room(self) -> int:
        """One byte more than allowed, so that passing the limit is seen."""
        return self.limit - self.size + 1

    def want(self) -> int:
        """Output to ask for in one call: peak memory stays near the limit."""
        return min(self.room(), _CHUNK)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise DecompressionLimitError(
                f"{self.fmt} stream inflates to more than the {self.limit}-byte limit; stopped there",
                format=self.fmt, output_size=self.size)
        if chunk:
            self.chunks.append(chunk)

    def truncated(self) -> TruncatedStreamError:
        return TruncatedStreamError(f"{self.fmt} stream is truncated after {self.size} bytes of output",
                                    format=self.fmt, output_size=self.size)

    def corrupt(self, why: object) -> CorruptStreamError:
        return CorruptStreamError(f"{self.fmt} stream is corrupt after {self.size} bytes of output: {why}",
                                  format=self.fmt, output_size=self.size)


class _Decompressor(Protocol):
    """What `_stream` uses of a decompressor object: lzma's and bz2's shape."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, buf: bytes | memoryview, max_length: int, /) -> bytes: ...


class _Zlib:
    """zlib's object in the shape of lzma's and bz2's (needs_input, unconsumed input kept)."""

    def __init__(self) -> None:
        self._d, self.needs_input = zlib.decompressobj(wbits=31), True

    def decompress(self, buf: bytes | memoryview, max_length: int, /) -> bytes:
        chunk = self._d.decompress(buf or self._d.unconsumed_tail, max_length)
        self.needs_input = not self._d.unconsumed_tail and len(chunk) < max_length
        return chunk

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


class _Zstd:
    """zstandard's object has no output bound: feed it little enough input that a step stays small."""

    needs_input = True

    def __init__(self) -> None:
        import zstandard
        self._d = zstandard.ZstdDecompressor().decompressobj()

    def decompress(self, buf: bytes | memoryview, max_length: int, /) -> bytes:
        return self._d.decompress(buf)

    def step(self, room: int) -> int:
        return min(_STEP, max(64, room // (4 * _ZSTD_MAX_RATIO)))   # a step inflates to <= room / 4

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


_Maker = tuple[Callable[[], _Decompressor], type[Exception] | tuple[type[Exception], ...]]


def _maker(fmt: str) -> _Maker:
    """The decompressor factory and error types of `fmt`, its library imported on first use."""
    if fmt == "gzip":
        return _Zlib, zlib.error
    if fmt in ("xz", "lzma"):
        import lzma
        kind = lzma.FORMAT_XZ if fmt == "xz" else lzma.FORMAT_ALONE
        return (lambda: lzma.LZMADecompressor(kind, memlimit=_LZMA_MEMLIMIT)), lzma.LZMAError
    if fmt == "bzip2":
        import bz2
        return bz2.BZ2Decompressor, OSError
    if fmt == "zstd":
        import zstandard
        return _Zstd, zstandard.ZstdError
    if fmt == "lz4":
        import lz4.frame
        return lz4.frame.LZ4FrameDecompressor, RuntimeError
    raise KeyError(fmt)


def _stream(fmt: str, view: memoryview, out: _Out) -> int:
    make, errors = _maker(fmt)
    dec, pos = make(), 0
    buf: bytes | memoryview
    while not dec.eof:
        if dec.needs_input:
            if pos >= len(view):
                raise out.truncated()
            step = dec.step(out.room()) if isinstance(dec, _Zstd) else _STEP
            buf, pos = view[pos:pos + step], pos + step
        else:
            buf = b""
        try:
            chunk = dec.decompress(buf, out.want())
        except errors as e:
            if "Memory usage limit" in str(e):          # liblzma: the header's dictionary is too large
                raise DecompressionLimitError(f"{fmt} stream needs more than {_LZMA_MEMLIMIT >> 20} MiB of "
                                              "memory to decode (its dictionary is too large)", format=fmt) from None
            raise out.corrupt(e) from None
        out.add(chunk)
    return min(pos, len(view)) - len(dec.unused_data or b"")


def _stream_lz4_legacy(view: memoryview, out: _Out) -> int:
    import lz4.block
    pos = 4
    while pos < len(view):
        if len(view) - pos < 4:                     # a cut size field, or padding
            if any(view[pos:]):
                raise out.truncated()
            break
        size = _u32(view, pos)
        if size == 0 or size > _LZ4_LEGACY_BOUND:   # not a block: the end of this stream
            break
        if pos + 4 + size > len(view):
            raise out.truncated()
        try:
            chunk = lz4.block.decompress(view[pos + 4:pos + 4 + size], uncompressed_size=_LZ4_LEGACY_BLOCK)
        except lz4.block.LZ4BlockError as e:
            raise out.corrupt(f"block at offset {pos}: {e}") from None
        out.add(chunk)
        pos += 4 + size
    return pos


def _skip_zeros(view: memoryview, pos: int) -> int:
    while pos < len(view):
        chunk = bytes(view[pos:pos + 4096])
        rest = chunk.lstrip(b"\0")
        if rest:
            return pos + len(chunk) - len(rest)
        pos += len(chunk)
    return pos


def decompress(data: Buffer, *, limit: int = DEFAULT_LIMIT, allow_trailing: bool = False) -> bytes:
    """Inflate every stream of `data`'s format in turn (members, streams, frames).

    Raises `CompressionError` for data that is not compressed, `CorruptStreamError`,
    `TruncatedStreamError` or `DecompressionLimitError` (more than `limit` bytes of output).
    With `allow_trailing`, data after the last complete stream is ignored whatever it is.
    """
    try:
        return _decompress(data, limit, allow_trailing)
    except CompressionError as e:
        error = e
    # Drop the traceback and the library's error: their frames hold memoryviews of `data`, which
    # would keep an mmap from closing ("BufferError: cannot close exported pointers exist").
    error.__traceback__ = error.__context__ = None
    raise error


def _decompress(data: Buffer, limit: int, allow_trailing: bool) -> bytes:
    fmt = sniff(data)
    if fmt is None:
        raise CompressionError("data is not compressed (no gzip, xz, lzma, bzip2, zstd or lz4 header)")
    view, out, pos = _view(data), _Out(fmt, limit), 0
    while True:
        if fmt in ("zstd", "lz4"):
            pos = _skip_frames(view, pos, fmt)
        if pos and not _CHECK[fmt](view[pos:]):
            pos = _skip_zeros(view, pos)
            if pos == len(view):
                break
            if not _CHECK[fmt](view[pos:]):
                if allow_trailing or fmt == "gzip":
                    break
                raise CorruptStreamError(
                    f"{fmt} stream is followed by {len(view) - pos} bytes that are neither zero padding "
                    f"nor another {fmt} stream (at offset {pos})", format=fmt, output_size=out.size)
        rest = view[pos:]
        pos += _stream_lz4_legacy(rest, out) if fmt == "lz4-legacy" else _stream(fmt, rest, out)
    return b"".join(out.chunks)


def maybe_decompress(data: _B, *, limit: int = DEFAULT_LIMIT) -> tuple[_B | bytes, str | None]:
    """(inflated data, format) for compressed `data`; (`data` itself, None) otherwise."""
    fmt = sniff(data)
    return (data, None) if fmt is None else (decompress(data, limit=limit), fmt)


# lzma has no magic: look for the properties byte every kernel build uses (lc=3 lp=0 pb=2) and
# the zero low bytes of a dictionary of 64 KiB or more; the header check then decides.
_SCAN = (("gzip", _GZIP_MAGIC), ("xz", _XZ_MAGIC), ("bzip2", b"BZh"), ("zstd", _ZSTD_MAGIC),
         ("lz4", _LZ4_MAGIC), ("lz4-legacy", _LZ4_LEGACY_MAGIC), ("lzma", b"\x5d\x00\x00"))


def _plausible(fmt: str, view: memoryview) -> bool:
    """The stream at the start of `view` has output, and its first 4 KiB decode without error."""
    out = _Out(fmt, 4096)
    try:
        if fmt == "lz4-legacy":
            _stream_lz4_legacy(view[:_STEP], out)
        else:
            _stream(fmt, view[:_STEP], out)
    except CorruptStreamError:
        return False
    except TruncatedStreamError:                    # cut short by the probe's input window
        return True
    except DecompressionLimitError:                 # the probe's output limit, or a huge dictionary
        return out.size > 0
    return out.size > 0


_FIND_WINDOW = 1 << 20


def _find_all(data: Buffer, view: memoryview, magic: bytes) -> Iterator[int]:
    """Every offset of `magic` in `data`, as repeated bytes.find: bytes and bytearray searched directly,
    anything else (a mapped file) a window at a time, so that no copy of the whole image is made."""
    if isinstance(data, (bytes, bytearray)):
        at = data.find(magic)
        while at >= 0:
            yield at
            at = data.find(magic, at + 1)
        return
    for base in range(0, len(view), _FIND_WINDOW):
        window = view[base:base + _FIND_WINDOW + len(magic) - 1].tobytes()  # overlaps the next by len(magic) - 1
        at = window.find(magic)
        while 0 <= at < _FIND_WINDOW:  # one that starts in the overlap is the next window's
            yield base + at
            at = window.find(magic, at + 1)


def find_payloads(data: Buffer) -> list[tuple[int, str]]:
    """(offset, format) of every embedded stream whose header checks out and whose start decodes.

    Candidates, not proof: the caller decompresses each (e.g. a bzImage's payload is the one that
    inflates to an ELF file)."""
    view = _view(data)
    found: list[tuple[int, str]] = []
    for name, magic in _SCAN:
        for pos in _find_all(data, view, magic):
            if _CHECK[name](view[pos:pos + _LZMA_TRIAL]) and _plausible(name, view[pos:]):
                found.append((pos, name))
    return sorted(found)
