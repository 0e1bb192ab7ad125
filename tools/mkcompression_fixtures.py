#!/usr/bin/env python3
"""Build fixtures/compression/: one small sample compressed by each real command-line tool, and
two synthetic bzImage-shaped files for tools/extract_vmlinux.py.

    python3 tools/mkcompression_fixtures.py [OUTDIR]

The samples come from the CLI encoders (gzip, xz, lzma, bzip2, zstd, lz4), not from the Python
libraries the decoder uses, so the tests check our reading against independent writers. The
command lines are those of the kernel's scripts/Makefile.lib (`lz4 -l` is the kernel's legacy
format; `xz --check=crc32 --x86` as scripts/xz_wrap.sh). Output is deterministic for a given set
of tool versions; SHA256SUMS records what was built. The tests also import `tiny_elf` and
`bzimage` from here to build bzImages with every compression in memory.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "compression"

# name -> the command that compresses stdin to stdout
SAMPLES = {
    "sample.gz": ["gzip", "-9", "-n", "-c"],
    "sample.xz": ["xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c"],
    "sample.lzma": ["lzma", "-9", "-c"],
    "sample.bz2": ["bzip2", "-9", "-c"],
    "sample.zst": ["zstd", "-19", "-q", "-c"],
    "sample.lz4": ["lz4", "-9", "-q", "-c"],
    "sample.lz4l": ["lz4", "-l", "-9", "-q", "-c"],
}
COMPRESSORS = {"gzip": SAMPLES["sample.gz"], "xz": SAMPLES["sample.xz"], "lzma": SAMPLES["sample.lzma"],
               "bzip2": SAMPLES["sample.bz2"], "zstd": SAMPLES["sample.zst"], "lz4": SAMPLES["sample.lz4"],
               "lz4-legacy": SAMPLES["sample.lz4l"]}


def sample() -> bytes:
    """About 20 KiB: compressible text, then 2 KiB of a fixed pseudo-random sequence."""
    text = b"".join(b"kexloader compression fixture line %05d\n" % i for i in range(450))
    noise = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(64))
    return text + noise


def tiny_elf(code: bytes = b"\xf4" * 16) -> bytes:
    """An ELF64 x86-64 executable: header, one PT_LOAD, `code` at 0x1000000. No sections."""
    ehdr = struct.pack("<4s5B7x2H I 3Q I 6H", b"\x7fELF", 2, 1, 1, 0, 0, 2, 62, 1,
                       0x1000000, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<2I 6Q", 1, 5, 120, 0x1000000, 0x1000000, len(code), len(code), 0x200000)
    return ehdr + phdr + code


def bzimage(payload: bytes, *, version: int = 0x020F, setup_sects: int = 1) -> bytes:
    """A bzImage-shaped file: boot sector + setup, protected-mode code, `payload` inside it.

    With version >= 2.08 the header's payload_offset/payload_length point at the payload, counted
    from the protected-mode code at (setup_sects or 4) + 1 sectors (see `kernel_payload`)."""
    setup = bytearray(((setup_sects or 4) + 1) * 512)
    struct.pack_into("<B", setup, 0x1F1, setup_sects)
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = 0x01                                          # LOADED_HIGH
    head = b"\x90" * 0x100                                       # stands for the decompressor's code
    tail = b"\xcc" * 0x40
    if version >= 0x0208:
        struct.pack_into("<II", setup, 0x248, len(head), len(payload))
    if version >= 0x020C:
        struct.pack_into("<H", setup, 0x236, 0x03)               # XLF_KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
    return bytes(setup) + head + payload + tail


def compress(fmt: str, data: bytes) -> bytes:
    return subprocess.run(COMPRESSORS[fmt], input=data, stdout=subprocess.PIPE, check=True).stdout


def kernel_payload(fmt: str, vmlinux: bytes) -> bytes:
    """As arch/x86/boot/compressed: compressed vmlinux.bin(+relocs), then le32 size for non-gzip."""
    data = compress(fmt, vmlinux)
    return data if fmt == "gzip" else data + struct.pack("<I", len(vmlinux))


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    out.mkdir(parents=True, exist_ok=True)
    files = {"sample.bin": sample()}
    for name, cmd in SAMPLES.items():
        files[name] = subprocess.run(cmd, input=files["sample.bin"], stdout=subprocess.PIPE, check=True).stdout
    vmlinux = tiny_elf() + struct.pack("<3I", 0, 0x1000010, 0)     # + a stand-in for vmlinux.relocs
    files["bzimage-xz.bin"] = bzimage(kernel_payload("xz", vmlinux))
    files["bzimage-v206-gzip.bin"] = bzimage(compress("gzip", vmlinux), version=0x0206, setup_sects=0)
    sums = []
    for name, data in sorted(files.items()):
        (out / name).write_bytes(data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    (out / "SHA256SUMS").write_text("".join(sums))
    print(f"wrote {len(files)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
