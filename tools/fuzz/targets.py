"""Fuzz targets: each takes one input (bytes) and drives one parser the way kexloader's own entry points
do, in-process (the pure planning functions, not the CLI). A target may raise only KexloaderError.

Seeds come from fixtures/ and, when present, Debian's real kernels and Xen in the cache
(~/.cache/kexloader or $KEXLOADER_CACHE, unpacked by tools/apt-platforms.sh).
"""

from __future__ import annotations

import atexit
import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from kexloader import api, snapshot, vmcore
from kexloader.errors import PlacementError, UsageError
from kexloader.files import inflate
from kexloader.formats import compression, elfcore
from kexloader.model import LoadRequest, Module, SystemFacts

from .mutate import Hot

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
SMALL_LIMIT = 64 << 20  # the decompression target's output limit: a bomb is found at 64 MiB as at 1 GiB
CMDLINE = "console=ttyS0 root=/dev/vda"


@dataclass(frozen=True)
class Target:
    name: str
    doc: str
    run: Callable[[bytes], object]
    seeds: Callable[[], list[bytes]]
    hot: Hot | None = None  # where the headers are: the mutator edits there more often
    json_input: bool = False
    extra: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ machines
@cache
def facts(name: str) -> SystemFacts:
    return snapshot.load_snapshot(FIXTURES / "snapshots" / f"{name}.json")


def plain() -> SystemFacts:
    return facts("qemu-2g")


# the machines an input is planned for, picked by the input's CRC (the same input, the same machine): BIOS
# and UEFI (the EFI hand-off), 2 and 6 GiB, an e820 of more than 128 entries (SETUP_E820_EXT), a Xen dom0
MACHINES = ("qemu-2g", "ovmf-6g-kdump", "synthetic-uefi-e820-fragmented-kdump", "xen-dom0-2g")
KDUMP_MACHINES = ("ovmf-2g-kdump", "qemu-debian12-kdump-384m", "synthetic-kaslr-64cpu-kdump",
                  "qemu-debian13bpo-7.3-cma-kdump-384m")


def machine_for(data: bytes, names: tuple[str, ...]) -> SystemFacts:
    # the CRC of the headers' first 64 KiB and the length: a real kernel's 15 MiB would cost ~10 ms an input
    return facts(names[(zlib.crc32(data[:1 << 16]) + len(data)) % len(names)])


# ------------------------------------------------------------------------------------------ scratch files
@cache
def scratch() -> Path:
    """A private directory on tmpfs when there is one (the file targets write an input per run)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="kexloader-fuzz-", dir=base))
    atexit.register(shutil.rmtree, d, True)
    return d


def scratch_file(data: bytes, name: str = "input") -> Path:
    p = scratch() / name
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------------------------------ seeds
def fixture(*names: str) -> list[bytes]:
    return [(FIXTURES / n).read_bytes() for n in names if (FIXTURES / n).is_file()]


def cache_dir() -> Path:
    return Path(os.environ.get("KEXLOADER_CACHE") or Path.home() / ".cache/kexloader")


def cached(*patterns: str, limit: int = 64 << 20) -> list[bytes]:
    """Real images from the cache's unpacked packages (none when the cache has not been filled)."""
    pkgs = cache_dir() / "pkgs"
    found: list[bytes] = []
    if pkgs.is_dir():
        for pattern in patterns:
            for p in sorted(pkgs.glob(pattern))[:3]:
                if p.is_file() and p.stat().st_size <= limit:
                    found.append(p.read_bytes())
    return found


BZIMAGES = ("bzimage/tiny.bzImage", "bzimage/tiny-protocol-2.10.bzImage", "bzimage/tiny-32bit-only.bzImage",
            "probes/bzprobe.bzImage", "compression/bzimage-v206-gzip.bin", "compression/bzimage-xz.bin")
ELFS = ("elf/tiny-vmlinux.elf", "elf/tiny-plain.elf", "elf/tiny-banner.elf", "elf/tiny-dyn.elf",
        "elf/tiny-interp.elf", "elf/tiny-i386.elf")
MULTIBOOTS = ("multiboot/tiny-mb1.elf", "multiboot/tiny-mb12.elf", "probes/mbprobe.elf")


def bzimage_seeds() -> list[bytes]:
    return fixture(*BZIMAGES) + cached("linux-image-*/boot/vmlinuz-*")


def compressed(data: bytes) -> list[bytes]:
    """`data` in every format the standard library writes (gzip, bzip2, xz, lzma alone)."""
    return [gzip.compress(data, 9, mtime=0), bz2.compress(data), lzma.compress(data),
            lzma.compress(data, format=lzma.FORMAT_ALONE)]


def compressed_bzimage_seeds() -> list[bytes]:
    return compressed(fixture("bzimage/tiny.bzImage")[0]) + compressed(fixture("probes/bzprobe.bzImage")[0])


def multiboot_seeds() -> list[bytes]:
    mb = fixture(*MULTIBOOTS)
    return mb + [gzip.compress(mb[1], 9, mtime=0)] + cached("xen-hypervisor-*/boot/xen-*.gz",
                                                            "xen-hypervisor-*/xen.elf")


def compression_seeds() -> list[bytes]:
    names = sorted(p.name for p in (FIXTURES / "compression").iterdir() if p.name.startswith("sample."))
    return fixture(*(f"compression/{n}" for n in names))


def uki_seeds() -> list[bytes]:
    kernel = fixture("bzimage/tiny.bzImage")[0]
    base = [(".osrel", b"ID=debian\nVERSION_ID=13\n"), (".cmdline", CMDLINE.encode() + b"\n"),
            (".uname", b"6.12.0-fuzz\n"), (".ucode", b"\x30\x37" * 64), (".initrd", b"07070100" * 64),
            (".linux", kernel)]
    profile = [(".profile", b"ID=rescue\n"), (".cmdline", b"console=ttyS0 rescue")]
    return [build_pe(base), build_pe(base + profile), build_pe([(".linux", kernel)])]


def build_pe(sections: Sequence[tuple[str, bytes]]) -> bytes:
    """A minimal PE32+ image (MS PE format: DOS header, signature, COFF header, optional header, section table),
    each section's bytes at a 512-byte file alignment: the shape systemd's ukify writes."""
    lfanew, opt_size, align = 0x40, 0xF0, 0x200
    table_at = lfanew + 24 + opt_size
    headers = -(-(table_at + 40 * len(sections)) // align) * align
    body, rows, at = bytearray(), bytearray(), headers
    for name, data in sections:
        rows += struct.pack("<8sIIIIIIHHI", name.encode(), len(data), 0x10000 + at, len(data), at, 0, 0, 0, 0,
                            0x40000040)
        padded = data + bytes(-len(data) % align)
        body += padded
        at += len(padded)
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", lfanew)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, len(sections), 0, 0, 0, opt_size, 0x22)
    opt = struct.pack("<HBBIIIIIQIIHHHHHHIIIIHH", 0x20B, 0, 0, 0, 0, 0, 0, 0, 0, 0x1000, align, 0, 0, 0, 0, 0, 0, 0,
                      0x10000 + at, headers, 0, 10, 0)
    head = dos + coff + opt + bytes(opt_size - len(opt)) + rows
    return bytes(head + bytes(headers - len(head)) + body)


# ------------------------------------------------------------------------------------------ hot ranges
def bzimage_hot(data: bytes) -> list[tuple[int, int]]:
    return [(0x1F0, 0x270)]  # the setup header (boot.rst)


def elf_hot(data: bytes) -> list[tuple[int, int]]:
    phoff = int.from_bytes(data[0x20:0x28], "little") if len(data) >= 0x28 else 0x40
    return [(0, 0x40), (phoff, phoff + 56 * 8)] if phoff < len(data) else [(0, 0x40)]


def multiboot_hot(data: bytes) -> list[tuple[int, int]]:
    out = elf_hot(data)
    for magic, size in ((b"\x02\xb0\xad\x1b", 48), (b"\xd6\x50\x52\xe8", 256)):
        at = data.find(magic, 0, 32768)
        if at >= 0:
            out.append((at, at + size))
    return out


def vmcore_hot(data: bytes) -> list[tuple[int, int]]:
    """The ELF header and program headers, the notes (VMCOREINFO's text) and the log's words."""
    return elf_hot(data) + [(0xB0, 0x400), (0x1000 + 0x1000, 0x1000 + 0x1020)]


def pe_hot(data: bytes) -> list[tuple[int, int]]:
    lfanew = int.from_bytes(data[0x3C:0x40], "little") if len(data) >= 0x40 else 0x40
    return [(0, 0x40), (lfanew, lfanew + 24 + 0xF0 + 40 * 8)]


# ------------------------------------------------------------------------------------------ runs
def plan(data: bytes, *, modules: tuple[Module, ...] = (), initrd: bytes | None = b"initrd" * 100,
         machine: SystemFacts | None = None) -> None:
    """make_plan on `machine` or one of MACHINES and, when that works and the kind can, as a kdump kernel
    (the crash memory map, elfcorehdr and backup code) on one of KDUMP_MACHINES."""
    req = LoadRequest(kernel=data, kernel_name="fuzz", cmdline=CMDLINE, initrd=initrd, initrd_name="initrd",
                      modules=modules, rng_seed=bytes(32))
    api.make_plan(req, machine or machine_for(data, MACHINES))
    if not modules:
        api.make_plan(LoadRequest(kernel=data, kernel_name="fuzz", cmdline=CMDLINE, crash=True),
                      machine_for(data, KDUMP_MACHINES))


def run_bzimage(data: bytes) -> None:
    plan(data)


def run_vmlinux(data: bytes) -> None:
    """With an initrd when the ELF's boot protocol has a way to pass one (Linux), else without."""
    try:
        plan(data)
    except UsageError:
        plan(data, initrd=None)


def run_compressed(data: bytes) -> None:
    plan(bytes(inflate(data, "kernel", "fuzz")))


def run_multiboot(data: bytes) -> None:
    kernel = bytes(inflate(data, "hypervisor", "fuzz"))
    dom0 = fixture("bzimage/tiny.bzImage")[0]
    plan(kernel, modules=(Module("vmlinuz", dom0, "vmlinuz console=hvc0"), Module("initrd", b"x" * 3000, "initrd")),
         initrd=None)


def run_module(data: bytes) -> None:
    path = scratch_file(data, "module")
    module = api.read_module(f"{path} console=hvc0 root=/dev/xvda")
    # one machine: the kernel is always the same, and the module is what varies
    plan(fixture("multiboot/tiny-mb12.elf")[0], modules=(module,), initrd=None, machine=plain())


def run_decompress(data: bytes) -> None:
    """The format layer's own error (CompressionError) is what it may raise: files.inflate turns it into a
    DecompressionError for the callers above (the module and compressed-kernel targets go through that)."""
    with contextlib.suppress(compression.CompressionError):
        compression.maybe_decompress(data, limit=SMALL_LIMIT)
    compression.find_payloads(data)


def run_inspect(data: bytes) -> None:
    path = str(scratch_file(data, "image"))
    api.inspect_file(path, out=io.StringIO())
    api.inspect_file(path, as_json=True, out=io.StringIO())


def run_plan_in(data: bytes) -> None:
    d = plan_dir()
    (d / "plan.json").write_bytes(data)
    p = api.read_plan(d)
    api.describe_plan(p)


@cache
def plan_dir() -> Path:
    """A directory with the segment files of a real plan; each input is its plan.json."""
    d = scratch() / "plan"
    api.write_plan(_seed_plan(), d)
    return d


@cache
def _seed_plan() -> api.Plan:
    req = LoadRequest(kernel=fixture("bzimage/tiny.bzImage")[0], kernel_name="tiny", cmdline=CMDLINE,
                      initrd=b"initrd" * 100)
    return api.make_plan(req, plain())


def plan_in_seeds() -> list[bytes]:
    docs = [(plan_dir() / "plan.json").read_bytes()]
    mb = api.make_plan(LoadRequest(kernel=fixture("multiboot/tiny-mb12.elf")[0], kernel_name="xen",
                                   modules=(Module("m", b"m" * 100, "m"),)), plain())
    doc = json.loads(docs[0])
    doc["multiboot"] = json.loads(json.dumps({"magic": mb.multiboot.magic, "info": mb.multiboot.info,
                                              "entry": mb.multiboot.entry})) if mb.multiboot else None
    return docs + [json.dumps(doc).encode()]


def run_snapshot(data: bytes) -> None:
    path = scratch_file(data, "facts.json")
    machine = api.load_facts(path)
    kernel = fixture("bzimage/tiny.bzImage")[0]
    with contextlib.suppress(PlacementError):  # not every machine has room: that is an answer, not a crash
        api.make_plan(LoadRequest(kernel=kernel, kernel_name="tiny", cmdline=CMDLINE, initrd=b"i" * 100,
                                  rng_seed=bytes(32)), machine)
    api.make_plan(LoadRequest(kernel=kernel, kernel_name="tiny", cmdline=CMDLINE, crash=True), machine)


def run_vmcore(data: bytes) -> None:
    """vmcore-dmesg on a saved core: main() prints one line and returns an exit code for what it expects
    (VmcoreError, OSError); anything else escapes to here."""
    vmcore.main([str(scratch_file(data, "vmcore"))], out=io.BytesIO())


def vmcore_seeds() -> list[bytes]:
    """Small ELF cores of a pretend crashed kernel (Documentation/admin-guide/kdump/vmcoreinfo.rst): 64 KiB of
    RAM, a VMCOREINFO note, the log as the character ring of Linux before 3.5 (log_buf, log_end, ...) and as
    the same with a Xen crash-info note."""
    start_kernel_map, page_offset = 0xFFFFFFFF80000000, 0xFFFF888000000000
    ram = bytearray(0x10000)
    text = b"<6>Linux version 2.6.32-fuzz\n<4>a second line\n<0>Kernel panic - not syncing: fuzz\n"
    ram[0x2000:0x2000 + len(text)] = text
    struct.pack_into("<QIII", ram, 0x1000, start_kernel_map + 0x2000, len(text), 0x1000, len(text))
    info = ["OSRELEASE=2.6.32-fuzz", "PAGESIZE=4096", "NUMBER(phys_base)=0",
            f"SYMBOL(log_buf)={start_kernel_map + 0x1000:x}", f"SYMBOL(log_end)={start_kernel_map + 0x1008:x}",
            f"SYMBOL(log_buf_len)={start_kernel_map + 0x100c:x}", f"SYMBOL(logged_chars)={start_kernel_map + 0x1010:x}",
            "CRASHTIME=1796203990"]
    note = elfcore.build_note(b"VMCOREINFO", 0, "\n".join(info).encode())
    xen = elfcore.build_note(b"Xen", vmcore.XEN_ELFNOTE_CRASH_INFO, struct.pack("<10Q", *range(1, 11)))
    return [_core(note, bytes(ram), page_offset), _core(note + xen, bytes(ram), page_offset)]


def _core(notes: bytes, ram: bytes, vaddr: int) -> bytes:
    data_at = elfcore.EHDR_SIZE + 2 * elfcore.PHDR_SIZE
    load_at = -(-(data_at + len(notes)) // 4096) * 4096
    head = elfcore.build_core([elfcore.Phdr(elfcore.PT_NOTE, 0, data_at, 0, 0, len(notes), len(notes), 0),
                               elfcore.Phdr(elfcore.PT_LOAD, 7, load_at, vaddr, 0, len(ram), len(ram), 0)]) + notes
    return head + bytes(load_at - len(head)) + ram


def snapshot_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted((FIXTURES / "snapshots").glob("*.json"))]


TARGETS = {t.name: t for t in (
    Target("bzimage", "bzImage -> plan (plain and kdump)", run_bzimage, bzimage_seeds, bzimage_hot),
    Target("bzimage-compressed", "a compressed bzImage (gzip, bzip2, xz, lzma) -> inflate -> plan", run_compressed,
           compressed_bzimage_seeds),
    Target("vmlinux", "vmlinux ELF -> plan (plain and kdump)", run_vmlinux, lambda: fixture(*ELFS), elf_hot),
    Target("multiboot", "multiboot 1 and 2 ELF (Xen, xen.gz) -> plan with a dom0 and an initrd module",
           run_multiboot, multiboot_seeds, multiboot_hot),
    Target("uki", "PE unified kernel image -> plan (plain and kdump)", run_bzimage, uki_seeds, pe_hot),
    Target("module", "--module FILE (read_module: inflated when a kernel) -> multiboot plan", run_module,
           lambda: fixture(*MULTIBOOTS[:1], *BZIMAGES[:1]) + compressed_bzimage_seeds()[:2] + compression_seeds()[:2]),
    Target("decompress", "compression.maybe_decompress and find_payloads", run_decompress, compression_seeds),
    Target("inspect", "--inspect (api.inspect_file, text and JSON)", run_inspect,
           lambda: fixture(BZIMAGES[0], BZIMAGES[4], ELFS[0], MULTIBOOTS[1]) + uki_seeds()[:1]),
    Target("plan-in", "--plan-in (api.read_plan on a directory) -> describe_plan", run_plan_in, plan_in_seeds,
           json_input=True),
    Target("snapshot", "--facts (api.load_facts) -> bzImage plan, plain and kdump", run_snapshot, snapshot_seeds,
           json_input=True),
    Target("vmcore", "vmcore-dmesg on a saved ELF core (notes, PT_LOADs, VMCOREINFO, the log)", run_vmcore,
           vmcore_seeds, vmcore_hot),
)}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Targets print nothing; inspect writes to a StringIO, warnings go nowhere."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield
