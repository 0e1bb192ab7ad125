"""`kexloader --inspect FILE [--json]`: kind, compression, versions, flags, sizes, ELF and multiboot details."""

import gzip
import json
import lzma
import os
import random
from pathlib import Path

import pytest
import zstandard

from kexloader import cli
from kexloader.inspect import inspect_image, to_text

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"


def inspect_cli(path, capsys, *extra):
    code = cli.main(["--inspect", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def info_of(path) -> dict:
    return inspect_image(Path(path).read_bytes(), str(path))


def test_bzimage():
    info = info_of(FIX / "bzimage/tiny.bzImage")
    assert info["kind"] == "bzImage64" and info["matches"] == ["bzImage64", "bzImage"] and info["loadable"]
    b = info["bzimage"]
    assert b["boot_protocol"] == "2.15" and b["kernel_64"] and b["relocatable"] and b["above_4g"]
    assert b["init_size"] == 0x400000 and b["pref_address"] == 0x1000000 and b["cmdline_size"] == 2047
    assert b["setup_size"] == 5 * 512 and b["protected_mode_size"] == info["size"] - 5 * 512
    assert info["compression"] is None and info["errors"] == []


def test_old_protocol_hides_newer_fields_and_says_why_it_cannot_load():
    info = info_of(FIX / "bzimage/tiny-protocol-2.10.bzImage")
    b = info["bzimage"]
    assert b["boot_protocol"] == "2.10" and "xloadflags" not in b and "kernel_info_offset" not in b
    assert "init_size" in b and not b["kernel_64"]
    assert any("2.10 is too old" in e for e in info["errors"])


def test_real_header_excerpt():
    info = info_of(FIX / "bzimage/debian-6.1.0-56-amd64.head4096")
    b = info["bzimage"]
    assert b["boot_protocol"] == "2.15" and b["xloadflags"] == 0x7F and b["init_size"] == 0x3F98000
    assert b["payload"]["length"] == 8122480
    assert any("truncated bzImage" in e for e in info["errors"])  # only the first 4 KiB are kept


def test_vmlinux_fixture():
    info = info_of(FIX / "elf/tiny-vmlinux.elf")
    e = info["elf"]
    assert info["kind"] == "elf-x86_64" and e["class"] == "ELF64" and e["entry"] == 0x1000000
    assert [(ld["paddr"], ld["memsz"], ld["flags"]) for ld in e["loads"]] == \
        [(0x1000000, 0x3000, "R-X"), (0x1200000, 0x1000, "RW-")]
    assert e["linux"]["release"] == "6.1.0-kexloader-fixture" and "Linux" in e["linux"]["recognised_by"]
    assert info["version"] == "6.1.0-kexloader-fixture"
    assert {"name": "Xen", "type": 6, "desc": "linux"} in e["notes"]


def test_banner_gives_the_version():
    info = info_of(FIX / "elf/tiny-banner.elf")
    assert info["version"] == "Linux version 6.1.0-banner (fixture) #1 SMP"


def test_multiboot_headers_and_tags():
    info = info_of(FIX / "multiboot/tiny-mb12.elf")
    assert info["kind"] == "multiboot2-x86" and info["matches"][:2] == ["multiboot2-x86", "multiboot-x86"]
    assert info["multiboot1"]["offset"] == 0x88 and info["multiboot1"]["flags_names"] == ["page_align", "memory_info"]
    tags = {t["name"]: t for t in info["multiboot2"]["tags"]}
    assert tags["information_request"]["requests"] == ["basic_meminfo", "mmap"]
    assert tags["relocatable"]["min_addr"] == 0x200000 and tags["relocatable"]["preference"] == "highest"
    assert info["elf"]["class"] == "ELF32"


def test_compressed_file_reports_both_sizes(tmp_path):
    raw = (FIX / "elf/tiny-vmlinux.elf").read_bytes()
    path = tmp_path / "v.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    info = info_of(path)
    assert info["compression"] == "zstd" and info["decompressed_size"] == len(raw) and info["kind"] == "elf-x86_64"


def test_text_and_json_through_the_cli(capsys):
    code, out, err = inspect_cli(FIX / "elf/tiny-vmlinux.elf", capsys)
    assert code == 0 and "kind:" in out and "elf-x86_64" in out and "PT_LOAD 0:" in out
    code, out, err = inspect_cli(FIX / "elf/tiny-vmlinux.elf", capsys, "--json")
    assert code == 0 and json.loads(out)["kind"] == "elf-x86_64"


@pytest.mark.parametrize("content, words", [
    (b"#!/bin/sh\necho hi\n", "no image kind claims this file"),
    (lzma.compress(random.Random(1).randbytes(10000))[:5000], "xz stream is truncated"),
    (gzip.compress(random.Random(2).randbytes(1000), mtime=0)[:-12] + bytes(12), "gzip"),
])
def test_unknown_or_damaged_files_exit_1_with_a_report(content, words, tmp_path, capsys):
    path = tmp_path / "f"
    path.write_bytes(content)
    code, out, err = inspect_cli(path, capsys, "--json")
    info = json.loads(out)
    assert code == 1 and any(words in e for e in info["errors"]) and "Traceback" not in err


def test_missing_file_is_one_line(capsys):
    code, out, err = inspect_cli("/nonexistent/vmlinuz", capsys)
    assert code == 1 and "cannot read image /nonexistent/vmlinuz" in err and err.count("\n") == 1


def test_text_report_lines_are_aligned():
    text = to_text(info_of(FIX / "multiboot/tiny-mb12.elf"))
    cols = {line.index(":") for line in text.splitlines() if not line.startswith(" ")}
    assert "multiboot 2:" in text and "tag 10" in text and text.count("\n") > 5 and len(cols) > 0


# --- Debian's files, when cached ---------------------------------------------------------------------

def _cache() -> Path:
    env = os.environ.get("KEXLOADER_CACHE")
    return Path(env) if env else Path.home() / ".cache/kexloader"


def _cached(pattern: str) -> Path:
    found = sorted(_cache().glob(pattern))
    if not found:
        pytest.skip(f"{pattern} is not in the cache (tools/install-deps.sh)")
    return found[-1]


def test_debian_kernel():
    info = info_of(_cached("linux/boot/vmlinuz-*"))
    assert info["kind"] == "bzImage64" and info["errors"] == []
    assert info["version"].startswith(info["file"].rsplit("vmlinuz-", 1)[1] + " (")
    assert info["bzimage"]["payload"]["compression"] in ("xz", "zstd", "gzip", "lzma", "lz4", "bzip2")


def test_debian_xen_gz():
    info = info_of(_cached("xen/boot/xen-*-amd64.gz"))
    assert info["compression"] == "gzip" and info["kind"] == "multiboot2-x86"
    assert info["xen"]["version"].startswith("4.") and info["version"].startswith("Xen 4.")
    names = [t["name"] for t in info["multiboot2"]["tags"]]
    assert "information_request" in names and "relocatable" in names
