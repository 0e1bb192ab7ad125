"""tools/extract_vmlinux.py on synthetic bzImages of every compression and, when cached, Debian's kernel."""

import bz2
import gzip
import importlib.util
import io
import lzma
import os
import struct
from pathlib import Path

import lz4.block
import lz4.frame
import pytest
import zstandard
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "compression"
CACHE = Path(os.environ.get("KEXLOADER_CACHE", Path.home() / ".cache" / "kexloader"))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ex = _load("extract_vmlinux")
mkfix = _load("mkcompression_fixtures")

RELOCS = struct.pack("<3I", 0, 0x1000010, 0)        # stands for vmlinux.relocs after vmlinux.bin
ELF = mkfix.tiny_elf()


def _lz4_legacy(data):
    block = lz4.block.compress(data, store_size=False)
    return b"\x02\x21\x4c\x18" + len(block).to_bytes(4, "little") + block


ENCODE = {"gzip": lambda d: gzip.compress(d, mtime=0), "xz": lambda d: lzma.compress(d, check=lzma.CHECK_CRC32),
          "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE), "bzip2": bz2.compress,
          "zstd": lambda d: zstandard.ZstdCompressor(write_checksum=True).compress(d),
          "lz4": lz4.frame.compress, "lz4-legacy": _lz4_legacy}


def payload(fmt, vmlinux=ELF + RELOCS, size=None):
    """As the kernel build: compressed vmlinux.bin + relocs, then the le32 size unless gzip."""
    data = ENCODE[fmt](vmlinux)
    return data if fmt == "gzip" else data + struct.pack("<I", len(vmlinux) if size is None else size)


@pytest.mark.parametrize("fmt", ENCODE)
def test_every_compression_from_the_header(fmt):
    got = ex.extract(mkfix.bzimage(payload(fmt)))
    assert got == ex.Extracted(ELF, fmt, "at payload_offset 0x100", len(RELOCS))


@pytest.mark.parametrize("fmt", [f for f in ENCODE if f != "lz4-legacy"])
def test_every_compression_by_scanning_an_old_image(fmt):
    """Not lz4-legacy: it has no end marker, so only payload_length (2.08+) tells where it ends;
    images older than 2.08 predate every compression but gzip anyway."""
    image = mkfix.bzimage(payload(fmt), version=0x0206, setup_sects=0)   # setup_sects 0 means 4
    assert ex.extract(image) == ex.Extracted(ELF, fmt, f"found at {5 * 512 + 0x100:#x}", len(RELOCS))


def test_fixtures():
    assert ex.extract((FIXTURES / "bzimage-xz.bin").read_bytes()) == ex.Extracted(
        ELF, "xz", "at payload_offset 0x100", 12)
    assert ex.extract((FIXTURES / "bzimage-v206-gzip.bin").read_bytes()) == ex.Extracted(
        ELF, "gzip", "found at 0xb00", 12)


def test_a_whole_file_compressed_bzimage():
    image = (FIXTURES / "bzimage-xz.bin").read_bytes()
    assert ex.extract(zstandard.ZstdCompressor().compress(image)).vmlinux == ELF


def test_elf32_size():
    ehdr = struct.pack("<4s5B7x2HI3I I6H", b"\x7fELF", 1, 1, 1, 0, 0, 2, 3, 1, 0x100000, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    phdr = struct.pack("<8I", 1, 84, 0x100000, 0x100000, 10, 10, 5, 0x1000)
    assert ex.elf_size(ehdr + phdr + bytes(10) + b"trailer") == 94


@pytest.mark.parametrize("image, message", [
    (b"MZ" + bytes(4096), "^not a bzImage"),
    (mkfix.bzimage(payload("xz", size=999)),
     "^xz at payload_offset 0x100: inflates to 148 bytes, but the size word says 999$"),
    (mkfix.bzimage(payload("gzip", vmlinux=b"not an ELF file")),
     "^no compressed ELF payload: gzip at payload_offset 0x100: inflates to 15 bytes that are not an ELF file$"),
    (mkfix.bzimage(payload("xz")[:-40] + bytes(36)),
     "^no compressed ELF payload: xz at payload_offset 0x100: xz stream is (truncated|corrupt)"),
    (mkfix.bzimage(b"\x00" * 64), "^no compressed payload at payload_offset 0x100, length 0x40"),
    (mkfix.bzimage(payload("gzip", vmlinux=ELF[:100])),
     "^gzip at payload_offset 0x100: the ELF headers end at 0x78, past the 0x64 bytes inflated$"),
    (mkfix.bzimage(b"\x90" * 64, version=0x0206), "^no compressed ELF payload: no compressed stream found$"),
])
def test_errors(image, message):
    with pytest.raises(ex.ExtractError, match=message):
        ex.extract(image)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "vmlinux"
    assert ex.main([str(FIXTURES / "bzimage-xz.bin"), str(out)]) == 0
    assert out.read_bytes() == ELF
    printed = capsys.readouterr().out
    assert "136 bytes of ELF from the xz payload at payload_offset 0x100; dropped the 12 bytes" in printed
    assert ex.main([str(FIXTURES / "sample.bin"), str(out)]) == 1
    assert capsys.readouterr().err == "extract_vmlinux: not a bzImage (no 0xAA55 at 0x1fe and 'HdrS' at 0x202)\n"


def _debian_kernels() -> list[Path]:
    """Each VM platform's kernel ($cache/platforms/NAME/linux/boot, tools/apt-platforms.sh), else the legacy
    $cache/linux/boot (where tools/install-deps.sh unpacked it before)."""
    found = [sorted(p.glob("linux/boot/vmlinuz-*-amd64"))[-1] for p in sorted(CACHE.glob("platforms/*"))
             if sorted(p.glob("linux/boot/vmlinuz-*-amd64"))]
    return found or sorted(CACHE.glob("linux/boot/vmlinuz-*-amd64"))[-1:]


def _compression(vmlinuz: Path) -> str:
    version = vmlinuz.name.removeprefix("vmlinuz-")
    for cfg in (vmlinuz.parent / f"config-{version}", vmlinuz.parent.parent / "lib/modules" / version / "config"):
        if cfg.is_file():
            text = cfg.read_text(errors="replace")
            for algo in ("gzip", "bzip2", "lzma", "xz", "lzo", "lz4", "zstd"):
                if f"CONFIG_KERNEL_{algo.upper()}=y" in text:
                    return algo
    return "xz"


DEBIAN = _debian_kernels()


@pytest.mark.skipif(not DEBIAN, reason=f"no Debian kernel in {CACHE}/platforms/*/linux/boot (tools/install-deps.sh)")
@pytest.mark.parametrize("vmlinuz", DEBIAN, ids=[p.name for p in DEBIAN])
def test_debian_kernel(vmlinuz):
    image = vmlinuz.read_bytes()
    got = ex.extract(image)
    assert got.compression == _compression(vmlinuz) and got.where.startswith("at payload_offset")
    elf = ELFFile(io.BytesIO(got.vmlinux))
    assert elf.elfclass == 64 and elf["e_machine"] == "EM_X86_64"
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    assert loads and max(s["p_offset"] + s["p_filesz"] for s in loads) <= len(got.vmlinux)
    # e_entry is startup_64's physical address: the start of .text on 6.1 (0x1000000), a little after it
    # on 6.12 (0x1000c43), in .init.text on 7.x
    assert any(s["p_paddr"] <= elf["e_entry"] < s["p_paddr"] + s["p_memsz"] for s in loads), hex(elf["e_entry"])
    if vmlinuz.name.startswith("vmlinuz-6.1."):
        assert elf["e_entry"] == 0x1000000
    assert b"Linux version " + vmlinuz.name.removeprefix("vmlinuz-").encode() in got.vmlinux
    assert got.dropped % 4 == 0 and got.dropped > 0                     # vmlinux.relocs: 32-bit entries
