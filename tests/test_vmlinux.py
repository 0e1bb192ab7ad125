"""ELF kernels (elf-x86_64): probe order and --type, p_paddr placement, the three argument styles,
the Linux-vmlinux default, moving a vmlinux into a crash region, hostile ELF files; compressed
kernels through the CLI (every format; corrupt, truncated, oversized); Debian's kernel when cached."""

import bz2
import gzip
import lzma
import os
import random
import struct
from pathlib import Path

import lz4.block
import lz4.frame
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kexloader import api, cli, files, images, system
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import (KexloaderError, MalformedImageError, NotSupportedYet, PlacementError,
                              UnknownFormatError, UnsupportedImageError, UsageError)
from kexloader.formats import bootparams as bp
from kexloader.images import vmlinux
from kexloader.model import LoadRequest, MiB, PurgatoryOptions, Range

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
VMLINUX = (FIX / "elf/tiny-vmlinux.elf").read_bytes()
BANNER = (FIX / "elf/tiny-banner.elf").read_bytes()
PLAIN = (FIX / "elf/tiny-plain.elf").read_bytes()
DYN = (FIX / "elf/tiny-dyn.elf").read_bytes()
INTERP = (FIX / "elf/tiny-interp.elf").read_bytes()
I386 = (FIX / "elf/tiny-i386.elf").read_bytes()
TINY_BZ = (FIX / "bzimage/tiny.bzImage").read_bytes()
MB12 = (FIX / "multiboot/tiny-mb12.elf").read_bytes()
SNAP = str(FIX / "snapshots/devhost.json")
DEVHOST = system.load_snapshot(Path(SNAP))


def plan_for(kernel=VMLINUX, facts=DEVHOST, **kw):
    return api.make_plan(LoadRequest(kernel=kernel, kernel_name="vmlinux", **kw), facts)


def by_role(plan):
    out = {}
    for s in plan.segments:
        out.setdefault(s.role, []).append(s)
    return out


# --- probe order and --type ---------------------------------------------------------------------------

def test_probe_order_is_kexec_tools():
    assert images.NAMES == ["multiboot2-x86", "elf-x86_64", "multiboot-x86", "elf-x86", "bzImage64", "bzImage", "uki"]  # uki: kexec-tools 2.0.31+


@pytest.mark.parametrize("data, kind", [
    (VMLINUX, "elf-x86_64"), (PLAIN, "elf-x86_64"), (DYN, "elf-x86_64"), (MB12, "multiboot2-x86"),
    (TINY_BZ, "bzImage64"),
])
def test_detect(data, kind):
    assert images.detect(data, "f").name == kind


def test_i386_elf_is_recognised_but_not_built():
    assert vmlinux.probe_x86(I386) and not vmlinux.probe_x86_64(I386)
    with pytest.raises(NotSupportedYet, match="elf-x86 images are not supported yet"):
        images.detect(I386, "f")


def test_a_program_with_pt_interp_is_not_a_kernel():
    assert not vmlinux.probe_x86_64(INTERP)
    with pytest.raises(UnknownFormatError, match="cannot determine the file type") as e:
        images.detect(INTERP, "f")
    assert e.value.exit_code == 255


def run_cli(argv, capsys, backend=None):
    backend = backend or RecordingBackend()
    code = cli.main(argv, backend_factory=lambda: backend)
    out, err = capsys.readouterr()
    return code, out, err, backend


@pytest.mark.parametrize("image, forced, code, words", [
    (FIX / "elf/tiny-vmlinux.elf", "bzImage64", 255, "Wrong file type bzImage64, file matches type elf-x86_64"),
    (FIX / "bzimage/tiny.bzImage", "elf-x86_64", 255, "Wrong file type elf-x86_64, file matches type bzImage64"),
    (FIX / "multiboot/tiny-mb12.elf", "elf-x86_64", 255,
     "Wrong file type elf-x86_64, file matches type multiboot2-x86"),
    (FIX / "bzimage/tiny.bzImage", "nonsense", 255, "Unsupported kernel type nonsense"),
    (FIX / "elf/tiny-interp.elf", "elf-x86_64", 255, "cannot determine the file type"),
    (FIX / "elf/tiny-interp.elf", None, 255, "cannot determine the file type"),
])
def test_type_mismatch_messages_and_exit_codes(image, forced, code, words, capsys):
    argv = ["--dry-run", "--facts", SNAP, "-l", str(image)] + (["-t", forced] if forced else [])
    got, out, err, backend = run_cli(argv, capsys)
    assert got == code and words in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("forced", ["elf-x86_64", "multiboot-x86"])
def test_type_that_matches_is_used_even_when_an_earlier_kind_matches_too(forced):
    # tiny-mb12 is an ELF32 with multiboot 1 and 2 headers: multiboot2-x86 wins by order, but -t picks
    assert images.detect(MB12, "f", forced="multiboot-x86").name == "multiboot-x86"
    if forced == "elf-x86_64":
        assert images.detect(VMLINUX, "f", forced=forced).name == "elf-x86_64"


# --- --args-linux ---------------------------------------------------------------------------------

def test_linux_vmlinux_defaults_to_linux_arguments_and_says_so():
    plan = plan_for(cmdline="console=ttyS0 x=1", initrd=b"I" * 5000, initrd_name="initrd")
    segs = by_role(plan)
    kernel = sorted(segs["kernel"], key=lambda s: s.mem)
    assert [(s.mem, s.memsz) for s in kernel] == [(0x1000000, 0x3000), (0x1200000, 0x1000)]  # p_paddr, memsz
    assert bytes(kernel[0].data) == VMLINUX[0xE8:0xE8 + 0x200]
    assert plan.linux.kernel_entry == 0x1000000  # e_entry, not +0x200
    assert any('recognised by its "Linux" ELF notes' in n and "--args-linux" in n for n in plan.notes)
    assert plan.flags == 62 << 16


def test_synthetic_zero_page():
    plan = plan_for(cmdline="console=ttyS0 x=1", initrd=b"I" * 5000, initrd_name="initrd")
    segs = {r: s[0] for r, s in by_role(plan).items()}
    raw = bytes(segs["boot-params"].data)
    assert raw[0x1FE:0x200] == b"\x55\xaa" and raw[0x202:0x206] == b"HdrS"
    page = bp.BootParams.parse(raw)
    assert page.hdr.version == 0x0206 and page.hdr.initrd_addr_max == 0x37FFFFFF and page.hdr.cmdline_size == 2047
    assert page.hdr.type_of_loader == 0xD0
    assert page.hdr.cmd_line_ptr + (page.ext_cmd_line_ptr << 32) == segs["cmdline"].mem
    assert bytes(segs["cmdline"].data) == b"console=ttyS0 x=1\0"
    assert page.hdr.ramdisk_image + (page.ext_ramdisk_image << 32) == segs["initrd"].mem
    assert page.hdr.ramdisk_size == 5000
    assert segs["initrd"].range.end <= 0x38000000  # initrd_addr_max
    assert page.e820_entries == len(DEVHOST.memmap)
    assert raw[0x23C:0x290] == bytes(0x54)  # nothing past the 2.06 header
    assert plan.linux.boot_params == segs["boot-params"].mem


@pytest.mark.parametrize("data, why", [(VMLINUX, '"Linux" ELF notes'), (BANNER, "linux_banner")])
def test_how_a_linux_vmlinux_is_recognised(data, why):
    plan = plan_for(kernel=data)
    assert plan.linux is not None and any(why in n for n in plan.notes)


def test_elf_that_is_not_linux_defaults_to_elf_boot_notes():
    from kexloader.formats import elfboot
    plan = plan_for(kernel=PLAIN, cmdline="console=ttyS0 x=1")
    segs = {s.role: s for s in plan.segments}
    assert plan.linux is None and set(segs) >= {"boot-notes", "purgatory"}
    block = bytes(segs["boot-notes"].data)
    hdr = elfboot.ElfBhdr.parse(block[:12])
    assert (hdr.b_signature, hdr.b_size, hdr.b_records) == (0x0E1FB007, len(block), 3)
    assert elfboot.ip_checksum(block) == 0  # a block with its checksum in place sums to zero
    assert b"console=ttyS0 x=1\0" in block and b"kexloader\0" in block
    assert any("rdi = ELF boot notes" in n for n in plan.notes)
    with pytest.raises(UsageError, match="--args-elf has no way to pass an initrd"):
        plan_for(kernel=PLAIN, initrd=b"x", initrd_name="i")


def test_args_linux_on_an_unmarked_elf_translates_a_virtual_entry():
    plan = plan_for(kernel=PLAIN, args_style="linux")
    assert plan.linux.kernel_entry == 0x1000000
    assert any("e_entry 0xffffffff81000000 is virtual" in n for n in plan.notes)


def test_command_line_is_checked_against_the_synthetic_cmdline_size():
    plan_for(cmdline="x" * 2047)
    with pytest.raises(UsageError, match="2048 bytes; this kernel .* at most 2047"):
        plan_for(cmdline="x" * 2048)


def test_initrd_above_initrd_addr_max_when_nothing_lower_fits():
    facts = system.facts_from_json({"version": 1, "memmap": [[0, 0x9FC00, 1], [0x100000, 0x3F00000, 1],
                                                             [0x40000000, 0x10000000, 1]]}, "split")
    plan = plan_for(facts=facts, initrd=bytes(0x3000000), initrd_name="big")
    initrd = by_role(plan)["initrd"][0]
    assert initrd.mem >= 0x40000000 and any("above initrd_addr_max" in n for n in plan.notes)


# --- --args-none --------------------------------------------------------------------------------------

def test_args_none_jumps_straight_to_the_entry():
    plan = plan_for(args_style="none", cmdline="ignored")
    assert plan.entry == 0x1000000 and plan.linux is None
    assert set(by_role(plan)) == {"kernel"}
    assert any("command line is not passed" in n for n in plan.notes)


def test_args_none_refuses_an_initrd():
    with pytest.raises(UsageError, match="--args-none has no way to pass an initrd"):
        plan_for(args_style="none", initrd=b"I", initrd_name="i")


# --- placement --------------------------------------------------------------------------------------

def test_et_dyn_is_moved_by_the_allocator():
    plan = plan_for(kernel=DYN, args_style="none")
    (kernel,) = by_role(plan)["kernel"]
    assert kernel.mem >= MiB and kernel.memsz == 0x2000
    assert plan.entry == kernel.mem + 0x10
    assert any("ET_DYN image; moved by" in n for n in plan.notes)


def test_linux_vmlinux_moves_into_a_small_region():
    region = Range(0x30000000, 64 * MiB)  # as a crash region would be
    req = LoadRequest(kernel=VMLINUX, kernel_name="vmlinux", cmdline="console=ttyS0",
                      initrd=b"I" * 5000, initrd_name="initrd")
    plan = vmlinux.plan(req, DEVHOST, [region])
    assert all(region.contains(s.range) for s in plan.segments)
    kernel = sorted(by_role(plan)["kernel"], key=lambda s: s.mem)
    delta = kernel[0].mem - 0x1000000
    assert delta % (2 * MiB) == 0 and kernel[1].mem == 0x1200000 + delta  # moved as a whole, 2 MiB aligned
    assert plan.linux.kernel_entry == 0x1000000 + delta
    assert any("CONFIG_RELOCATABLE" in n for n in plan.notes)


def test_crash_kernel_from_a_vmlinux(capsys):
    pytest.importorskip("kexloader.crash")
    snap = FIX / "snapshots/qemu-debian12-kdump-384m.json"
    if not snap.exists():
        pytest.skip("no kdump snapshot")
    code, out, err, _ = run_cli(["--dry-run", "-p", "--facts", str(snap), "-l", str(FIX / "elf/tiny-vmlinux.elf"),
                                 "--append=console=ttyS0"], capsys)
    assert code == 0, err
    assert "elfcorehdr" in out and "(crash kernel)" in out and "moved by" in out


def test_fixed_elf_that_does_not_fit_is_refused():
    with pytest.raises(PlacementError, match=r"p_paddr\) are not all inside"):
        vmlinux.plan(LoadRequest(kernel=PLAIN, kernel_name="plain", args_style="linux"), DEVHOST,
                     [Range(0x30000000, 64 * MiB)])
    with pytest.raises(PlacementError, match=r"p_paddr\) are not all inside"):
        vmlinux.plan(LoadRequest(kernel=VMLINUX, kernel_name="v", args_style="none"), DEVHOST,
                     [Range(0x30000000, 64 * MiB)])


def test_mem_min_moves_a_linux_vmlinux(capsys):
    code, out, err, _ = run_cli(["--dry-run", "--facts", SNAP, "-l", str(FIX / "elf/tiny-vmlinux.elf"),
                                 "--mem-min=0x20000000"], capsys)
    assert code == 0, err
    assert "moved by +0x1f000000" in out and "64-bit entry 0x20000000" in out


# --- CLI ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, style", [([], None), (["--args-linux"], "linux"), (["--args-elf"], "elf"),
                                          (["--args-none"], "none"), (["--args-none", "--args-linux"], "linux")])
def test_args_options(flags, style):
    assert cli.parse_args(["-l", "K"] + flags).args_style == style


def test_dry_run_prints_the_default_under_d(capsys):
    code, out, err, backend = run_cli(["-d", "-l", str(FIX / "elf/tiny-vmlinux.elf"), "--append=a"], capsys)
    assert code == 0, err
    assert "a Linux vmlinux (recognised by" in err  # -d prints the plan with its notes on stderr
    assert backend.plans[False].linux.kernel_entry == 0x1000000


def test_args_elf_plans_through_the_cli(capsys):
    code, out, err, backend = run_cli(["--dry-run", "--facts", SNAP, "-l", str(FIX / "elf/tiny-plain.elf")],
                                      capsys)
    assert code == 0 and "boot-notes" in out and "Traceback" not in err


def test_args_are_ignored_for_a_bzimage(capsys):
    code, out, err, _ = run_cli(["--dry-run", "--facts", SNAP, "-l", str(FIX / "bzimage/tiny.bzImage"),
                                 "--args-none"], capsys)
    assert code == 0, err


# --- hostile ELF files ------------------------------------------------------------------------------

def _phdr_field(data: bytes, index: int, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, 64 + 56 * index + offset, value)
    return bytes(out)


def _header_field(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<H", out, offset, value)
    return bytes(out)


@pytest.mark.parametrize("mutate, error, words", [
    (lambda d: d[:0x100], MalformedImageError, "passes the end"),
    (lambda d: _phdr_field(d, 0, 8, "<Q", 1 << 62), MalformedImageError, "passes the end|not a usable ELF"),
    (lambda d: _phdr_field(d, 0, 32, "<Q", 1 << 40), MalformedImageError, "passes the end"),  # p_filesz
    (lambda d: _phdr_field(d, 0, 24, "<Q", (1 << 64) - 0x1000), UnsupportedImageError, "above"),  # p_paddr
    (lambda d: d[:24] + struct.pack("<Q", 0x5000000) + d[32:], MalformedImageError, "in no loadable segment"),
    (lambda d: d[:18] + b"\x3e\x01" + d[20:], UnknownFormatError, "cannot determine"),  # e_machine
    (lambda d: _header_field(d, 0x38, 0xFFFF), MalformedImageError, "PN_XNUM program headers"),  # e_phnum
    (lambda d: _header_field(d, 0x38, 1025), MalformedImageError, "1025 program headers"),
    (lambda d: _header_field(d, 0x36, 0), MalformedImageError, "entries of 0 bytes in an ELF64"),  # e_phentsize
    (lambda d: _header_field(d, 0x38, len(d) // 56 + 1), MalformedImageError, "table .* passes the end"),
])
def test_bad_elf(mutate, error, words):
    with pytest.raises(error, match=words):
        plan_for(kernel=mutate(VMLINUX))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutants_raise_only_kexloader_errors(data):
    base = data.draw(st.sampled_from([VMLINUX, PLAIN, DYN, BANNER]))
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    style = data.draw(st.sampled_from([None, "linux", "none"]))
    try:
        plan_for(kernel=bytes(blob[:cut]), args_style=style, purgatory=PurgatoryOptions(checks=False))
    except KexloaderError:
        pass


# --- compressed kernels through the CLI -------------------------------------------------------------

def _lz4_legacy(raw: bytes) -> bytes:
    out = b"\x02\x21\x4c\x18"
    for i in range(0, len(raw), 8 << 20):
        block = lz4.block.compress(raw[i:i + (8 << 20)], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return out


COMPRESSORS = {
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "xz": lambda b: lzma.compress(b, preset=1),
    "lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE, preset=1),
    "bzip2": bz2.compress,
    "zstd": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
    "lz4": lambda b: lz4.frame.compress(b, content_checksum=True),
    "lz4-legacy": _lz4_legacy,
}


def _kernel_segments(argv, capsys, tmp_path, name):
    out_dir = tmp_path / name
    code, out, err, _ = run_cli(["--dry-run", "-i", "--facts", SNAP, "--append=x", "--plan-out", str(out_dir)]
                                + argv, capsys)
    assert code == 0, err
    import json
    doc = json.loads((out_dir / "plan.json").read_text())
    return [(s["mem"], s["memsz"], s["sha256"]) for s in doc["segments"] if s["role"] == "kernel"]


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
@pytest.mark.parametrize("fixture", ["bzimage/tiny.bzImage", "elf/tiny-vmlinux.elf"])
def test_compressed_kernel_plans_like_the_plain_one(fmt, fixture, tmp_path, capsys):
    plain = FIX / fixture
    packed = tmp_path / f"k.{fmt}"
    packed.write_bytes(COMPRESSORS[fmt](plain.read_bytes()))
    assert _kernel_segments(["-l", str(packed)], capsys, tmp_path, "packed") == \
        _kernel_segments(["-l", str(plain)], capsys, tmp_path, "plain")


def _flip_middle(b: bytes) -> bytes:
    out = bytearray(b)
    for i in range(len(out) // 2, len(out) // 2 + 8):
        out[i] ^= 0x55
    return bytes(out)


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_compressed_kernel_is_one_line_and_an_exit_code(fmt, damage, tmp_path, capsys):
    packed = COMPRESSORS[fmt](TINY_BZ + random.Random(4).randbytes(64 << 10))  # the middle is real data
    bad = packed[: len(packed) // 2] if damage == "truncated" else _flip_middle(packed)
    path = tmp_path / f"bad.{fmt}"
    path.write_bytes(bad)
    code, out, err, backend = run_cli(["--dry-run", "--facts", SNAP, "-l", str(path)], capsys)
    assert "Traceback" not in err
    if damage == "corrupt" and fmt in ("lz4-legacy", "lzma"):
        # no checksum in these formats: flipped literals may inflate to a (wrong) image that still plans
        assert code == 0 or (code in (1, 255) and err.count("\n") == 1), err
        return
    # an image that cannot be used exits 255, as kexec-tools' "Cannot determine the file type" (docs/exit-codes.md)
    assert code == 255 and ("truncated" in err or "corrupt" in err) and err.count("\n") == 1, err
    assert not backend.plans


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_decompression_bomb_is_stopped(fmt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(files, "DECOMPRESSED_LIMIT", 1 << 20)
    path = tmp_path / f"bomb.{fmt}"
    path.write_bytes(COMPRESSORS[fmt](bytes(8 << 20)))
    code, out, err, backend = run_cli(["--dry-run", "--facts", SNAP, "-l", str(path)], capsys)
    assert code == 255 and "limit" in err and err.count("\n") == 1 and "Traceback" not in err, err


# --- Debian's kernel, when tools/install-deps.sh has put it in the cache -----------------------------

def _cache() -> Path:
    env = os.environ.get("KEXLOADER_CACHE")
    return Path(env) if env else Path.home() / ".cache/kexloader"


def _debian_kernel() -> Path:
    found = sorted((_cache() / "linux/boot").glob("vmlinuz-*"))
    if not found:
        pytest.skip("Debian's kernel is not in the cache (tools/install-deps.sh)")
    return found[-1]


@pytest.fixture(scope="module")
def debian_vmlinux(tmp_path_factory):
    import sys
    sys.path.insert(0, str(ROOT))
    from tools.extract_vmlinux import extract
    out = tmp_path_factory.mktemp("debian") / "vmlinux"
    out.write_bytes(extract(_debian_kernel().read_bytes()).vmlinux)
    return out


def test_debian_vmlinux_plan(debian_vmlinux, capsys):
    code, out, err, _ = run_cli(["--dry-run", "--facts", SNAP, "-l", str(debian_vmlinux), "--append=x"], capsys)
    assert code == 0, err
    assert "64-bit entry 0x1000000" in out  # readelf -h: e_entry 0x1000000, physical (startup_64)
    assert '"Linux" ELF notes' in out
    assert "[0x0000000001000000," in out


@pytest.mark.parametrize("fmt", ["gzip", "xz", "zstd"])
def test_debian_kernel_compressed_plans_the_same_kernel_segment(fmt, tmp_path, capsys):
    plain = _debian_kernel()
    packed = tmp_path / f"vmlinuz.{fmt}"
    packed.write_bytes({"gzip": lambda b: gzip.compress(b, compresslevel=1, mtime=0),
                        "xz": lambda b: lzma.compress(b, preset=0),
                        "zstd": lambda b: zstandard.ZstdCompressor(level=1).compress(b)}[fmt](plain.read_bytes()))
    assert _kernel_segments(["-l", str(packed)], capsys, tmp_path, "packed") == \
        _kernel_segments(["-l", str(plain)], capsys, tmp_path, "plain")
