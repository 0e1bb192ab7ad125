#!/usr/bin/env python3
"""Extract the vmlinux ELF from a bzImage: find its compressed payload and inflate it.

    python3 tools/extract_vmlinux.py BZIMAGE OUT

The payload's place comes from the setup header (boot protocol 2.08+): payload_offset (0x248)
and payload_length (0x24c), counted from the protected-mode code at (setup_sects + 1) * 512,
setup_sects (0x1f1) 0 meaning 4. Older images are scanned for compressed streams instead. A
bzImage that is itself compressed as a whole (vmlinuz.gz) is inflated first.

The kernel build appends the le32 uncompressed size to every payload but a gzip one (gzip keeps
it in its own trailer); it is checked against the output. The payload is vmlinux.bin plus, on
relocatable kernels, vmlinux.relocs; OUT gets the ELF file only, cut at its last header, section
or segment byte.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path
from typing import NamedTuple

from kexloader.formats import compression

LIMIT = 512 << 20                   # far more than any vmlinux


class ExtractError(Exception):
    """The input is not a bzImage with an inflatable ELF payload."""


class Extracted(NamedTuple):
    vmlinux: bytes
    compression: str                # the payload's, as compression.sniff names it
    where: str                      # "at payload_offset 0x2cc" or "found at 0xb00"
    dropped: int                    # bytes inflated after the ELF file (vmlinux.relocs)


def elf_size(elf: bytes) -> int:
    """Bytes up to the end of the ELF file's last header, section or segment."""
    try:
        return _elf_size(elf)
    except struct.error:
        raise ExtractError(f"the ELF file is cut short in its headers ({len(elf):#x} bytes)") from None


def _elf_size(elf: bytes) -> int:
    if elf[4:5] == b"\x02":
        ehsize = 0x40
        phoff, shoff = struct.unpack_from("<QQ", elf, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<4H", elf, 0x36)
        ph, sh = (lambda p: struct.unpack_from("<8xQ16xQ", elf, p)), (lambda p: struct.unpack_from("<4xI16xQQ", elf, p))
    elif elf[4:5] == b"\x01":
        ehsize = 0x34
        phoff, shoff = struct.unpack_from("<II", elf, 0x1C)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<4H", elf, 0x2A)
        ph, sh = (lambda p: struct.unpack_from("<4xI8xI", elf, p)), (lambda p: struct.unpack_from("<4xI8xII", elf, p))
    else:
        raise ExtractError(f"ELF class {elf[4:5].hex()} is neither 32 nor 64 bits")
    end = max(ehsize, phoff + phnum * phentsize, shoff + shnum * shentsize)
    if end > len(elf):
        raise ExtractError(f"the ELF headers end at {end:#x}, past the {len(elf):#x} bytes inflated")
    for i in range(phnum):
        offset, filesz = ph(phoff + i * phentsize)
        end = max(end, offset + filesz)
    for i in range(shnum):
        sh_type, offset, size = sh(shoff + i * shentsize)
        if sh_type != 8:                                        # SHT_NOBITS takes no file space
            end = max(end, offset + size)
    if end > len(elf):
        raise ExtractError(f"the ELF contents end at {end:#x}, past the {len(elf):#x} bytes inflated")
    return end


def _payloads(image: bytes):
    """(payload, compression, size word or None, where) candidates, best first."""
    code = ((image[0x1F1] or 4) + 1) * 512
    version = struct.unpack_from("<H", image, 0x206)[0]
    offset, length = struct.unpack_from("<II", image, 0x248) if version >= 0x0208 else (0, 0)
    if length:                                                  # the header says where it is
        payload = image[code + offset:code + offset + length]
        name = compression.sniff(payload)
        if len(payload) != length or name is None:
            raise ExtractError(f"no compressed payload at payload_offset {offset:#x}, length {length:#x} "
                               f"(from {code:#x}, in {len(image):#x} bytes)")
        size = None if name == "gzip" else struct.unpack_from("<I", payload, length - 4)[0]
        yield payload if size is None else payload[:-4], name, size, f"at payload_offset {offset:#x}"
        return
    for offset, name in compression.find_payloads(image[code:]):   # protocol < 2.08: look for it
        yield image[code + offset:], name, None, f"found at {code + offset:#x}"


def extract(image: bytes, *, limit: int = LIMIT) -> Extracted:
    """The vmlinux ELF file in a bzImage's bytes, and where it came from."""
    image, _ = compression.maybe_decompress(image, limit=limit)
    if len(image) < 0x26C or image[0x202:0x206] != b"HdrS" or image[0x1FE:0x200] != b"\x55\xaa":
        raise ExtractError("not a bzImage (no 0xAA55 at 0x1fe and 'HdrS' at 0x202)")
    problems = []
    for payload, name, size, where in _payloads(image):
        try:
            out = compression.decompress(payload, limit=limit, allow_trailing=True)
        except compression.CompressionError as e:
            problems.append(f"{name} {where}: {e}")
            continue
        if out[:4] != b"\x7fELF":
            problems.append(f"{name} {where}: inflates to {len(out)} bytes that are not an ELF file")
            continue
        if size is not None and size != len(out):
            raise ExtractError(f"{name} {where}: inflates to {len(out)} bytes, but the size word says {size}")
        try:
            end = elf_size(out)
        except ExtractError as e:
            raise ExtractError(f"{name} {where}: {e}") from None
        return Extracted(out[:end], name, where, len(out) - end)
    raise ExtractError("no compressed ELF payload: " + ("; ".join(problems) or "no compressed stream found"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bzimage", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        got = extract(args.bzimage.read_bytes())
    except (OSError, ExtractError) as e:
        print(f"extract_vmlinux: {e}", file=sys.stderr)
        return 1
    args.out.write_bytes(got.vmlinux)
    print(f"{args.out}: {len(got.vmlinux)} bytes of ELF from the {got.compression} payload {got.where}"
          + (f"; dropped the {got.dropped} bytes after it (vmlinux.relocs)" if got.dropped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
