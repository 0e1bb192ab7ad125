#!/usr/bin/env python3
"""Differential check: what kexec-tools would load versus what kexloader plans, for the same inputs.

    python3 tools/compare_kexec_tools.py KERNEL [--initrd I] [--append A] [--keep DIR] [--json FILE]
    python3 tools/compare_kexec_tools.py --debian-kernel --initrd I --append A      (fetches Debian's kernel)
    python3 tools/compare_kexec_tools.py KERNEL --kexec-tools-only                  (just kexec-tools' segments)

kexec-tools (Debian 12's 2.0.25) runs under the capture shim (tools/kexec_tools_capture: nothing is loaded,
seccomp stops kexec_load/kexec_file_load/reboot in the kernel); kexloader runs as
``python3 -m kexloader --dry-run --plan-out DIR -l KERNEL ...``. Both read this host's live memory map
(/sys/firmware/memmap) and /sys/kernel/boot_params/data, so they see the same machine.

Reported: both segment tables with the role of every segment; whether the kernel segments are byte-identical
(the bar set by issue 2); the initrd's bytes and placement; the command lines; and every zero-page field that
differs, decoded (tools/kexec_tools_capture/zeropage.py), each with the reason where one is known
(docs/kexec-tools-differences.md has the long form). Exit 0 when kernel, initrd and command line agree, 1 when
they do not, 2 when either side could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from kexec_tools_capture import capture as kt  # noqa: E402
from kexec_tools_capture import zeropage as zp  # noqa: E402


# Why a zero-page field differs, for the differences that are understood (docs/kexec-tools-differences.md has the
# long form). Keys are field names from zeropage.FIELDS. A value is a text, or a function (left page, right page)
# returning a text when the difference is the understood one and None otherwise. Anything else is UNEXPLAINED.
def _ivt_trim(a: bytes, b: bytes) -> str | None:
    """kexec-tools moves the start of the first RAM range below 0x400 up to 0x400; nothing else differs."""
    ea, eb = zp.e820(a), zp.e820(b)
    diffs = [i for i in range(max(len(ea), len(eb))) if i >= len(ea) or i >= len(eb) or ea[i] != eb[i]]
    if len(diffs) != 1:
        return None
    x, y = ea[diffs[0]], eb[diffs[0]]
    if x[2] == y[2] == 1 and x[0] == 0x400 and y[0] < 0x400 and x[0] + x[1] == y[0] + y[1]:
        return ("kexec-tools trims the real-mode IVT [0, 0x400) off the first RAM range (get_memory_ranges: "
                "\"don't report the interrupt table as ram\"); kexloader passes the firmware map unchanged. The new "
                "kernel never allocates its first page (arch/x86/kernel/setup.c reserves low memory, 4 KiB at "
                "least), so this changes nothing")
    return None


VIDEO_TYPE_EFI = 0x70
VIDEO_CAPABILITY_SKIP_QUIRKS = 1


def _efi_screen(a: bytes, b: bytes) -> bool:
    """Both pages describe the same EFI (GOP) framebuffer: kexec-tools read it from /dev/fb0, kexloader copied the
    running kernel's boot screen_info."""
    same = ("orig_video_isVGA", "lfb_base", "lfb_width", "lfb_height", "lfb_depth", "lfb_linelength")
    return zp.get(a, "orig_video_isVGA") == VIDEO_TYPE_EFI and all(zp.get(a, f) == zp.get(b, f) for f in same)


def _text_defaults(field: str, value: int):
    def why(a: bytes, b: bytes) -> str | None:
        if _efi_screen(a, b) and zp.get(a, field) == value and zp.get(b, field) == 0:
            return ("kexec-tools writes the 80x25 VGA text-mode defaults (cols 80, lines 25, points 16) before it "
                    "describes /dev/fb0; kexloader copies the running kernel's screen_info, where OVMF's EFI stub "
                    "left them 0. With orig_video_isVGA = VIDEO_TYPE_EFI no text console reads them")
        return None
    return why


def _lfb_size_units(a: bytes, b: bytes) -> str | None:
    """kexec-tools gives the framebuffer size in 64 KiB units (the VESA convention) though it labels it EFI."""
    size = zp.get(b, "lfb_size")
    if _efi_screen(a, b) and zp.get(a, "lfb_size") == (size + 0xFFFF) >> 16 and \
            size >= zp.get(b, "lfb_height") * zp.get(b, "lfb_linelength"):
        return ("kexec-tools writes /dev/fb0's smem_len in 64 KiB units (VESA's VIDEO_TYPE_VLFB convention) under "
                "VIDEO_TYPE_EFI, where the field is bytes; kexloader keeps the EFI stub's byte count. efifb maps "
                "max(lfb_size, lfb_height x lfb_linelength), so both get the whole visible framebuffer")
    return None


def _fb_pages(a: bytes, b: bytes) -> str | None:
    if _efi_screen(a, b) and zp.get(b, "pages") == 1 and zp.get(a, "pages") == (zp.get(b, "lfb_size") + 4095) >> 12:
        return ("kexec-tools writes /dev/fb0's size in 4 KiB pages; the EFI stub sets 1 and kexloader keeps that. "
                "Only vesafb's real-mode set-up reads pages")
    return None


def _skip_quirks(a: bytes, b: bytes) -> str | None:
    if _efi_screen(a, b) and zp.get(a, "capabilities") == 0 and \
            zp.get(b, "capabilities") == VIDEO_CAPABILITY_SKIP_QUIRKS:
        return ("VIDEO_CAPABILITY_SKIP_QUIRKS: the EFI stub sets it (the GOP mode is exact, no DMI quirk may "
                "override it) and kexloader keeps it; kexec-tools does not write capabilities")
    return None


REASONS = {
    "hdr.cmd_line_ptr": "address: kexec-tools puts the command line inside its setup segment right after the real-mode "
                        "part (kern16_size_needed), top-down in all RAM; kexloader gives it its own page below 4 GiB "
                        "(linuxboot.SMALL_SEGMENTS). The command-line check compares the strings",
    "ext_cmd_line_ptr": "address: high half of cmd_line_ptr (kexec-tools' setup segment is above 4 GiB here, kexloader's "
                        "command line below)",
    "cl_magic": "kexec-tools writes the pre-2.02 cl_magic/cl_offset pair (only real-mode setup code at 0x90000 reads it); "
                "kexloader copies screen_info (0x00-0x3f) from the running kernel's boot_params, where it is 0 here",
    "cl_offset": "as cl_magic: kexec-tools' offset of the command line inside its setup segment; unused by the "
                 "64-bit entry, which reads cmd_line_ptr",
    "ext_mem_k": "kexec-tools recomputes this legacy BIOS-88 size (KiB above 1 MiB, capped at 0xfc00) from the memory "
                 "map; kexloader copies screen_info, which holds it, from the running kernel (0 here). The kernel "
                 "reads it only when the e820 table has fewer than 2 entries",
    "alt_mem_k": "both derive it from the RAM range that spans 1 MiB; kexec-tools computes (inclusive_end >> 10) - 1024, "
                 "one KiB short; kexloader's value is the exact size. Read only without an e820 table",
    "hdr.ramdisk_image": "address: the initrd is placed differently (the initrd check compares its bytes)",
    "ext_ramdisk_image": "address: high half of ramdisk_image",
    "hdr.setup_data": "both chain a SETUP_RNG_SEED (32 bytes from getrandom), each at its own address "
                      "(kexec-tools bottom-up from 1 MiB; kexloader in its own page below 4 GiB); "
                      "on UEFI hosts both add SETUP_E820_EXT (more than 128 entries) and SETUP_EFI in the same chain "
                      "order; kexloader keeps the chain in one segment",
    "hdr.root_flags": "kexec-tools overwrites it with 0xFFFF (mount_root_rdonly, setup_linux_system_parameters); "
                      "kexloader keeps the image's value (1). Both are non-zero: root is mounted read-only first",
    "hdr.root_dev": "kexec-tools writes 0x0300 (/dev/hda, a legacy default); kexloader keeps the image's 0. Only used "
                    "when there is no root= and no initramfs mounts root",
    "hdr.boot_flag": "kexec-tools writes aux_device_info = 0 at 0x1ff, the high byte of boot_flag (0xAA55 -> 0x0055); "
                     "kexloader keeps the image's 0xAA55. The kernel does not read it from boot_params",
    "e820_table[0]": _ivt_trim,
    # UEFI hosts (issue 11; docs/kexec-tools-differences.md "UEFI hosts"). The "EFI:" line compares the runtime
    # descriptors themselves and the SETUP_EFI payloads.
    "efi_memdesc_size": lambda a, b: (
        "kexec-tools writes 40-byte descriptors and says so (memdesc_size 40); kexloader keeps the firmware's "
        "stride (the running kernel's efi_info, as the kernel's own kexec_file_load), each descriptor zero-padded; "
        "the kernel walks the map by memdesc_size" if zp.get(a, "efi_memdesc_size") == 40 and
        zp.get(b, "efi_memdesc_size") > 40 else None),
    "efi_memmap_size": "number of runtime descriptors x memdesc_size: the descriptors are the same (EFI line), the "
                       "stride differs (efi_memdesc_size)",
    "efi_memmap": "address: each loader places the EFI memory map of the runtime regions in its own segment",
    "efi_memmap_hi": "address: high half of efi_memmap",
    # OVMF with a GOP (-vga std): kexec-tools rebuilds screen_info from /dev/fb0, kexloader copies the boot one
    "orig_video_cols": _text_defaults("orig_video_cols", 80),
    "orig_video_lines": _text_defaults("orig_video_lines", 25),
    "orig_video_points": _text_defaults("orig_video_points", 16),
    "lfb_size": _lfb_size_units,
    "pages": _fb_pages,
    "capabilities": _skip_quirks,
}


def _crash_map(a: bytes, b: bytes) -> str | None:
    """The crash kernel's e820 (kexec_load with KEXEC_ON_CRASH), as recorded under OVMF: the same RAM ranges
    (low memory, then the crash region) but the crash region's top, and kexec-tools' extra reserved entries."""
    ea, eb = zp.e820(a), zp.e820(b)
    ram_a, ram_b = [e[:2] for e in ea if e[2] == 1], [e[:2] for e in eb if e[2] == 1]
    other_a, other_b = {e for e in ea if e[2] != 1}, {e for e in eb if e[2] != 1}
    if not ram_a or [r[0] for r in ram_a] != [r[0] for r in ram_b] or ram_a[:-1] != ram_b[:-1]:
        return None
    if not other_b <= other_a or any(e[2] != 2 for e in other_a - other_b):
        return None
    return ("crash kernel's map: the same RAM (low memory from 0x1000, then the crash region), whose top each "
            "loader keeps for its own segments (kexec-tools: elfcorehdr and its backup copy of [0x1000, 0xa0000); "
            "kexloader: elfcorehdr; each passes elfcorehdr= for it). kexec-tools also lists as reserved the "
            "/proc/iomem \"Reserved\" ranges inside firmware RAM (page 0, EFI regions Linux kept with "
            "efi_mem_reserve); kexloader's map comes from /sys/firmware/memmap and leaves them out: neither makes "
            "them RAM, and the EFI memory map hands the EFI ones over")


# Crash loads (KEXEC_ON_CRASH on both sides): the memory map is the crash kernel's, built by each loader.
CRASH_REASONS = {"e820_entries": _crash_map} | {f"e820_table[{i}]": _crash_map for i in range(128)}


def reason_for(name: str, a: bytes = b"", b: bytes = b"", crash: bool = False) -> str | None:
    why = CRASH_REASONS.get(name) if crash else None
    if why is not None and a and b and why(a, b):
        return why(a, b)
    why = REASONS.get(name)
    if callable(why):
        return why(a, b) if a and b else None
    return why


@dataclasses.dataclass
class Seg:
    role: str
    mem: int
    memsz: int
    bufsz: int
    path: Path

    def data(self) -> bytes:
        return self.path.read_bytes()


@dataclasses.dataclass
class Loaded:
    """One loader's result, reduced to what the comparison needs."""

    source: str
    entry: int
    flags: int
    segments: list[Seg]
    zero_page: bytes
    zero_page_addr: int
    directory: Path

    def at(self, addr: int) -> Seg | None:
        for s in self.segments:
            if s.mem <= addr < s.mem + s.memsz:
                return s
        return None

    def read(self, addr: int, size: int) -> bytes:
        s = self.at(addr)
        if s is None:
            return b""
        return s.data()[addr - s.mem:addr - s.mem + size]

    def cstring(self, addr: int, limit: int = 4096) -> bytes | None:
        s = self.at(addr)
        if s is None:
            return None
        data = s.data()[addr - s.mem:addr - s.mem + limit]
        return data.split(b"\0", 1)[0]

    def command_line(self) -> bytes | None:
        return self.cstring(zp.cmd_line_ptr(self.zero_page), 1 << 16)

    def setup_data(self) -> list[tuple[int, int, bytes]]:
        """(address, type, payload) along the zero page's setup_data chain."""
        out, addr, seen = [], zp.get(self.zero_page, "hdr.setup_data"), set()
        while addr and addr not in seen and len(out) < 64:
            seen.add(addr)
            head = self.read(addr, 16)
            if len(head) < 16:
                out.append((addr, -1, b""))
                break
            nxt, typ, length = struct.unpack("<QII", head)
            out.append((addr, typ, self.read(addr + 16, length)))
            addr = nxt
        return out

    def e820(self) -> list[tuple[int, int, int]]:
        """The whole e820 the kernel gets: the zero page's entries, then any SETUP_E820_EXT records."""
        table = zp.e820(self.zero_page)
        for _, typ, payload in self.setup_data():
            if typ == 1:
                table += [struct.unpack_from("<QQI", payload, i) for i in range(0, len(payload) - 19, 20)]
        return table

    def efi(self) -> dict:
        """efi_info, the runtime descriptors it points at (sorted by address; stride and order aside) and the
        SETUP_EFI payload."""
        sig, systab, dsize, dver, mm, mmsize, systab_hi, mm_hi = struct.unpack_from("<4sIIIIIII", self.zero_page,
                                                                                    0x1C0)
        out = {"signature": sig.hex() if any(sig) and not sig.isalnum() else sig.decode("latin-1").strip("\0"),
               "systab": systab | systab_hi << 32, "memdesc_size": dsize, "memdesc_version": dver,
               "memmap": mm | mm_hi << 32, "memmap_size": mmsize, "descriptors": [], "setup_efi": None}
        if mmsize and dsize >= 40:
            raw = self.read(out["memmap"], mmsize)
            out["descriptors"] = sorted(struct.unpack_from("<I4xQQQQ", raw, i) for i in range(0, len(raw) - 39, dsize))
        for _, typ, payload in self.setup_data():
            if typ == 4 and len(payload) >= 32:
                out["setup_efi"] = dict(zip(("fw_vendor", "runtime", "tables", "smbios"),
                                            struct.unpack_from("<4Q", payload)))
        return out

    def role_of(self, role: str) -> list[Seg]:
        return [s for s in self.segments if s.role == role]


def kern16_size(image: bytes) -> int:
    return ((image[0x1F1] or 4) + 1) * 512


# ---------------------------------------------------------------------------------------------- kexec-tools

def run_kexec_tools(kernel: Path, initrd: Path | None, append: str | None, extra: list[str], out: Path,
                    image: bytes, initrd_bytes: bytes | None) -> Loaded:
    cap = kt.capture(kernel, initrd, append, extra, out)
    if cap.returncode != 0:
        raise kt.CaptureError(f"kexec-tools exited {cap.returncode}: {cap.stderr.strip()}")
    return kexec_tools_side(cap, image, initrd_bytes)


def kexec_tools_side(cap: kt.Capture, image: bytes, initrd_bytes: bytes | None) -> Loaded:
    """A capture (made here, or in a guest and read with kt.load_capture) with the role of every segment."""
    out = cap.directory
    payload = image[kern16_size(image):]
    segs = []
    for s in cap.segments:
        data = s.data()
        if len(data) >= zp.SIZE and data[0x202:0x206] == b"HdrS":
            role = "setup"  # kexec-tools' "real_mode" segment: zero page, then the command line
        elif data == payload:
            role = "kernel"
        elif initrd_bytes is not None and data == initrd_bytes:
            role = "initrd"
        elif s.mem <= cap.entry < s.mem + s.memsz:
            role = "purgatory"
        else:
            role = "?"
        segs.append(Seg(role, s.mem, s.memsz, s.bufsz, s.path))
    setups = [s for s in segs if s.role == "setup"]
    if len(setups) != 1:
        raise kt.CaptureError(f"expected one setup segment (\"HdrS\" at 0x202) in kexec-tools' load, found {len(setups)}")
    loaded = Loaded("kexec-tools", cap.entry, cap.flags, segs, setups[0].data()[:zp.SIZE], setups[0].mem, out)
    for addr, typ, _ in loaded.setup_data():
        seg = loaded.at(addr)
        if seg is not None and seg.role == "?":
            seg.role = "setup_data:" + zp.SETUP_DATA_TYPES.get(typ, str(typ))
    memmap = zp.u64_split(loaded.zero_page, "efi_memmap", "efi_memmap_hi")
    if memmap and loaded.at(memmap) is not None and loaded.at(memmap).role == "?":
        loaded.at(memmap).role = "efi-runtime-map"
    return loaded


# ---------------------------------------------------------------------------------------------- kexloader

def kexloader_command() -> list[str]:
    return [sys.executable, "-m", "kexloader"]


def run_kexloader(kernel: Path, initrd: Path | None, append: str | None, extra: list[str], out: Path,
                  command: list[str] | None = None) -> Loaded:
    if out.exists():
        shutil.rmtree(out)
    argv = (command or kexloader_command()) + ["--dry-run", "--plan-out", str(out), "-l", str(kernel)]
    if initrd is not None:
        argv.append(f"--initrd={initrd}")
    if append is not None:
        argv.append(f"--append={append}")
    argv += extra
    # kexloader runs under the capture shim too: --dry-run must never reach kexec_load, and if it did, the shim
    # would record it in `trap` (and seccomp would refuse it) instead of the kernel loading anything.
    # The trap sits beside `out`: --plan-out writes only into a new or empty directory.
    trap = out.with_name(out.name + "-syscall-trap")
    shutil.rmtree(trap, ignore_errors=True)
    trap.mkdir(parents=True)
    env = dict(os.environ, LD_PRELOAD=str(kt.build_shim()), KT_CAPTURE_DIR=str(trap))
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env=env)
    if (trap / "capture.json").exists():
        raise RuntimeError(f"kexloader --dry-run called kexec_load (the shim caught it, see {trap}): a kexloader bug")
    (out / "kexloader.stdout").write_text(proc.stdout)
    (out / "kexloader.stderr").write_text(proc.stderr)
    plan_file = out / "plan.json"
    if proc.returncode != 0 or not plan_file.exists():
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"`{' '.join(argv[2:] if argv[0] == sys.executable else argv)}` exited "
                           f"{proc.returncode}: {' | '.join(tail)}")
    return kexloader_side(out)


def kexloader_side(out: Path) -> Loaded:
    """A --plan-out directory (written here, or in a guest) as the comparison sees it."""
    doc = json.loads((out / "plan.json").read_text())
    segs = [Seg(s.get("role", "?"), int(s["mem"]), int(s["memsz"]), int(s.get("bufsz", (out / s["file"]).stat().st_size)),
                out / s["file"]) for s in doc["segments"]]
    linux = doc.get("linux") or {}
    bp_addr = linux.get("boot_params")
    if bp_addr is None:
        cands = [s for s in segs if s.role in ("boot-params", "zero-page", "bootparams")]
        if not cands:
            raise RuntimeError("kexloader's plan.json names no boot_params")
        bp_addr = cands[0].mem
    loaded = Loaded("kexloader", int(doc["entry"]), int(doc["flags"]), segs, b"", int(bp_addr), out)
    seg = loaded.at(loaded.zero_page_addr)
    if seg is None:
        raise RuntimeError(f"kexloader's boot_params {bp_addr:#x} is in no segment")
    loaded.zero_page = seg.data()[loaded.zero_page_addr - seg.mem:][:zp.SIZE].ljust(zp.SIZE, b"\0")
    return loaded


# ---------------------------------------------------------------------------------------------- comparison

KEXEC_ON_CRASH = 1
ELF_MAGIC = b"\x7fELF"


def crash_words(p: Loaded, cmdline: bytes) -> tuple[list[str], bool]:
    """The command line without the words a loader adds for kdump (elfcorehdr=, acpi_rsdp=), and whether its
    elfcorehdr=<N>K names the start of one of its segments that holds an ELF header."""
    words = cmdline.decode("latin-1").split()
    given = [w for w in words if not w.startswith(("elfcorehdr=", "acpi_rsdp="))]
    hdr = [w.split("=", 1)[1] for w in words if w.startswith("elfcorehdr=")]
    ok = False
    if len(hdr) == 1 and hdr[0].endswith("K") and hdr[0][:-1].isdigit():
        addr = int(hdr[0][:-1]) << 10
        seg = p.at(addr)
        ok = seg is not None and seg.mem == addr and seg.data()[:4] == ELF_MAGIC
    return given, ok


def segment_table(p: Loaded) -> list[str]:
    rows = [f"  {'role':<26} {'mem':>18} {'memsz':>10} {'bufsz':>10}"]
    for s in sorted(p.segments, key=lambda s: s.mem):
        rows.append(f"  {s.role:<26} {s.mem:#018x} {s.memsz:#10x} {s.bufsz:#10x}")
    rows.append(f"  entry {p.entry:#x}  flags {p.flags:#x}  zero page at {p.zero_page_addr:#x}")
    return rows


def compare(a: Loaded, b: Loaded, image: bytes, initrd_bytes: bytes | None) -> dict:
    """a = kexec-tools, b = kexloader."""
    res: dict = {"kexec_tools": {"entry": a.entry, "flags": a.flags,
                                 "segments": [dataclasses.asdict(s) | {"path": str(s.path)} for s in a.segments]},
                 "kexloader": {"entry": b.entry, "flags": b.flags,
                               "segments": [dataclasses.asdict(s) | {"path": str(s.path)} for s in b.segments]}}
    lines = ["kexec-tools 2.0.25 (captured):"] + segment_table(a) + ["kexloader (--dry-run --plan-out):"] + segment_table(b)

    # kernel
    ka, kb = a.role_of("kernel"), b.role_of("kernel")
    payload = image[kern16_size(image):]
    kernel = {"kexec_tools": [(s.mem, s.memsz) for s in ka], "kexloader": [(s.mem, s.memsz) for s in kb]}
    if len(ka) == 1 and len(kb) == 1:
        da, db = ka[0].data(), kb[0].data()
        kernel["identical_bytes"] = da == db
        kernel["same_address"] = ka[0].mem == kb[0].mem
        kernel["same_memsz"] = ka[0].memsz == kb[0].memsz
        kernel["sha256"] = {"kexec_tools": hashlib.sha256(da).hexdigest(), "kexloader": hashlib.sha256(db).hexdigest()}
        if da != db:
            first = next((i for i in range(min(len(da), len(db))) if da[i] != db[i]), min(len(da), len(db)))
            kernel["first_difference"] = first
        where = "" if da == db else f", first difference at {kernel['first_difference']:#x}"
        lines.append(f"kernel segment: bytes {'IDENTICAL' if da == db else 'DIFFER'} ({len(da)} vs {len(db)} bytes"
                     f"{where}); "
                     f"kexec-tools [{ka[0].mem:#x}+{ka[0].memsz:#x}] kexloader [{kb[0].mem:#x}+{kb[0].memsz:#x}]"
                     f"{'' if kernel['same_address'] else ' (address differs)'}"
                     f"{'' if kernel['same_memsz'] else ' (memsz differs)'}; "
                     f"equals the file from offset {kern16_size(image):#x}: "
                     f"{'yes' if da == payload else 'no'}/{'yes' if db == payload else 'no'}")
    else:
        kernel["identical_bytes"] = False
        lines.append(f"kernel segment: kexec-tools has {len(ka)}, kexloader has {len(kb)} -- cannot compare")
    res["kernel"] = kernel

    # initrd
    ra, rb = zp.ramdisk(a.zero_page), zp.ramdisk(b.zero_page)
    initrd = {"kexec_tools": ra, "kexloader": rb}
    if initrd_bytes is not None:
        got_a = a.read(ra[0], ra[1]) if ra[1] else b""
        got_b = b.read(rb[0], rb[1]) if rb[1] else b""
        initrd["kexec_tools_ok"] = got_a == initrd_bytes
        initrd["kexloader_ok"] = got_b == initrd_bytes
        initrd["same_address"] = ra[0] == rb[0]
        lines.append(f"initrd: kexec-tools [{ra[0]:#x}+{ra[1]:#x}] {'holds the file' if got_a == initrd_bytes else 'WRONG'}; "
                     f"kexloader [{rb[0]:#x}+{rb[1]:#x}] {'holds the file' if got_b == initrd_bytes else 'WRONG'}"
                     f"{'' if initrd['same_address'] else ' (placed differently)'}")
    else:
        initrd["kexec_tools_ok"] = ra == (0, 0)
        initrd["kexloader_ok"] = rb == (0, 0)
        lines.append(f"initrd: none asked; kexec-tools {ra}, kexloader {rb}")
    res["initrd"] = initrd

    # command line
    ca, cb = a.command_line(), b.command_line()
    res["cmdline"] = {"kexec_tools": ca.decode("latin-1") if ca is not None else None,
                      "kexloader": cb.decode("latin-1") if cb is not None else None,
                      "kexec_tools_addr": zp.cmd_line_ptr(a.zero_page), "kexloader_addr": zp.cmd_line_ptr(b.zero_page),
                      "identical": ca == cb}
    lines.append(f"command line: {'IDENTICAL' if ca == cb else 'DIFFER'}: kexec-tools {ca!r} at "
                 f"{zp.cmd_line_ptr(a.zero_page):#x}, kexloader {cb!r} at {zp.cmd_line_ptr(b.zero_page):#x}")
    if a.flags & b.flags & KEXEC_ON_CRASH:
        res["cmdline"]["crash"] = crash_words(a, ca or b""), crash_words(b, cb or b"")
        (ua, ea_ok), (ub, eb_ok) = res["cmdline"]["crash"]
        res["cmdline"]["same_user_words"] = ua == ub
        res["cmdline"]["elfcorehdr_ok"] = ea_ok and eb_ok
        lines.append(f"  crash kernel: the words given {'IDENTICAL' if ua == ub else 'DIFFER'} once elfcorehdr= and "
                     f"acpi_rsdp= are set aside; each elfcorehdr= names that loader's ELF core header segment: "
                     f"{'yes' if ea_ok else 'NO'}/{'yes' if eb_ok else 'NO'}")

    # e820
    ea, eb = a.e820(), b.e820()  # with SETUP_E820_EXT's entries past 128
    res["e820"] = {"kexec_tools": ea, "kexloader": eb, "identical": ea == eb}
    lines.append(f"e820: {'IDENTICAL' if ea == eb else 'DIFFER'} ({len(ea)} vs {len(eb)} entries, zero page and "
                 f"SETUP_E820_EXT)")
    if ea != eb:
        for i in range(max(len(ea), len(eb))):
            x = ea[i] if i < len(ea) else None
            y = eb[i] if i < len(eb) else None
            if x != y:
                fmt = lambda e: "-" if e is None else f"[{e[0]:#x}, {e[0] + e[1]:#x}) {zp.E820_TYPES.get(e[2], e[2])}"
                lines.append(f"  [{i}] kexec-tools {fmt(x)}  kexloader {fmt(y)}")

    # setup_data
    sa = [(zp.SETUP_DATA_TYPES.get(t, str(t)), len(p)) for _, t, p in a.setup_data()]
    sb = [(zp.SETUP_DATA_TYPES.get(t, str(t)), len(p)) for _, t, p in b.setup_data()]
    res["setup_data"] = {"kexec_tools": sa, "kexloader": sb}
    lines.append(f"setup_data chain: kexec-tools {sa or 'none'}; kexloader {sb or 'none'}")

    # EFI (UEFI hosts, XLF_EFI_KEXEC kernels): the runtime regions and SETUP_EFI must be the same
    fa, fb = a.efi(), b.efi()
    res["efi"] = {"kexec_tools": fa, "kexloader": fb, "same_runtime_map": fa["descriptors"] == fb["descriptors"],
                  "same_setup_efi": fa["setup_efi"] == fb["setup_efi"],
                  "same_systab": (fa["signature"], fa["systab"], fa["memdesc_version"]) ==
                                 (fb["signature"], fb["systab"], fb["memdesc_version"])}
    if fa["memmap_size"] or fb["memmap_size"] or fa["setup_efi"] or fb["setup_efi"]:
        def efi_text(f):
            if not f["memmap_size"]:
                return "no EFI state"
            return (f"efi_info {f['signature']} systab {f['systab']:#x}, {len(f['descriptors'])} runtime descriptors "
                    f"of {f['memdesc_size']} bytes at {f['memmap']:#x}, SETUP_EFI "
                    + (", ".join(f"{k} {v:#x}" for k, v in f["setup_efi"].items()) if f["setup_efi"] else "none"))
        e = res["efi"]
        lines.append(f"EFI: kexec-tools {efi_text(fa)}; kexloader {efi_text(fb)}; runtime descriptors "
                     f"{'IDENTICAL' if e['same_runtime_map'] else 'DIFFER'}, SETUP_EFI "
                     f"{'IDENTICAL' if e['same_setup_efi'] else 'DIFFER'}, systab "
                     f"{'IDENTICAL' if e['same_systab'] else 'DIFFER'}")

    # zero page, field by field
    crash = bool(a.flags & b.flags & KEXEC_ON_CRASH)
    diffs = zp.diff(a.zero_page, b.zero_page)
    res["zero_page_diff"] = []
    lines.append(f"zero page: {len(diffs)} field(s) differ (kexec-tools -> kexloader):")
    for d in diffs:
        why = reason_for(d.name, a.zero_page, b.zero_page, crash)
        res["zero_page_diff"].append(dataclasses.asdict(d) | {"reason": why})
        lines.append(f"  {d.offset:#05x} {d.name:<26} {d.left:>22} -> {d.right:<22} {why or 'UNEXPLAINED'}")
    res["unexplained"] = [d.name for d in diffs if reason_for(d.name, a.zero_page, b.zero_page, crash) is None]
    same_cmdline = res["cmdline"]["identical"] or (crash and res["cmdline"]["same_user_words"] and
                                                   res["cmdline"]["elfcorehdr_ok"])
    res["ok"] = bool(kernel.get("identical_bytes")) and same_cmdline and \
        initrd["kexec_tools_ok"] and initrd["kexloader_ok"] and \
        all(res["efi"][k] for k in ("same_runtime_map", "same_setup_efi", "same_systab"))
    res["text"] = "\n".join(lines)
    return res


# ---------------------------------------------------------------------------------------------- Debian kernel

def debian_kernel(fetch: bool = True) -> Path:
    """Debian 12's current kernel (linux-image-amd64's dependency), unpacked into the cache (boot/ only)."""
    cache = kt.cache_dir()
    proc = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    pkgs = [ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("Depends:")
            and "linux-image-" in ln]
    boot = cache / "debian-kernel" / "boot"
    if not pkgs:
        have = sorted(boot.glob("vmlinuz-*")) if boot.is_dir() else []
        if have:
            return have[-1]
        raise kt.Unavailable("cannot resolve linux-image-amd64 (run apt-get update)")
    version = pkgs[0].removeprefix("linux-image-")
    target = boot / f"vmlinuz-{version}"
    if target.exists():
        return target
    if not fetch:
        raise kt.Unavailable(f"{target} is not there")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", pkgs[0]], cwd=debs, check=True, capture_output=True)
    deb = sorted(debs.glob(f"{pkgs[0]}_*.deb"))[-1]
    (cache / "debian-kernel").mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as tar_in:
        subprocess.run(["tar", "-x", "-C", str(cache / "debian-kernel"), "./boot/"], stdin=tar_in.stdout, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Arguments after -- are passed to both loaders unchanged.")
    ap.add_argument("kernel", nargs="?")
    ap.add_argument("--initrd")
    ap.add_argument("--append")
    ap.add_argument("--debian-kernel", action="store_true", help="use (and fetch) Debian 12's current kernel")
    ap.add_argument("--kexec-tools-only", action="store_true", help="capture and show kexec-tools' side only")
    ap.add_argument("--keep", help="directory for both captures (default: a temporary one, kept and printed)")
    ap.add_argument("--json", help="also write the full result as JSON to this file")
    ap.add_argument("--kexloader", help="command that runs kexloader (default: python3 -m kexloader)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra

    try:
        kernel = Path(args.kernel) if args.kernel else (debian_kernel() if args.debian_kernel else None)
    except (kt.CaptureError, subprocess.CalledProcessError) as e:
        print(f"compare: cannot get the Debian kernel: {e}", file=sys.stderr)
        return 2
    if kernel is None:
        ap.error("give a KERNEL or --debian-kernel")
    image = kernel.read_bytes()
    initrd = Path(args.initrd) if args.initrd else None
    initrd_bytes = initrd.read_bytes() if initrd else None
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="compare-kexec-tools-"))
    work.mkdir(parents=True, exist_ok=True)

    print(f"kernel {kernel} ({len(image)} bytes, sha256 {hashlib.sha256(image).hexdigest()[:16]}), "
          f"initrd {initrd or '-'} ({len(initrd_bytes) if initrd_bytes is not None else 0} bytes), "
          f"append {args.append!r}")
    try:
        a = run_kexec_tools(kernel, initrd, args.append, args.extra, work / "kexec-tools", image, initrd_bytes)
    except kt.CaptureError as e:
        print(f"compare: kexec-tools capture failed: {e}", file=sys.stderr)
        return 2
    if args.kexec_tools_only:
        print("kexec-tools 2.0.25 (captured):")
        print("\n".join(segment_table(a)))
        print(f"command line {a.command_line()!r} at {zp.cmd_line_ptr(a.zero_page):#x}; "
              f"initrd {tuple(hex(x) for x in zp.ramdisk(a.zero_page))}; setup_data "
              f"{[(zp.SETUP_DATA_TYPES.get(t, t), len(p)) for _, t, p in a.setup_data()]}")
        print("zero page fields set (non-zero):")
        for name, value in zp.describe(a.zero_page):
            print(f"  {zp.BY_NAME[name].offset:#05x} {name:<26} {value}")
        print(f"captured in {work / 'kexec-tools'}")
        return 0
    try:
        b = run_kexloader(kernel, initrd, args.append, args.extra, work / "kexloader",
                          args.kexloader.split() if args.kexloader else None)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        print("kexec-tools 2.0.25 (captured):")
        print("\n".join(segment_table(a)))
        print(f"compare: kexloader could not plan: {e}", file=sys.stderr)
        return 2
    res = compare(a, b, image, initrd_bytes)
    print(res.pop("text"))
    print(f"unexplained zero-page differences: {', '.join(res['unexplained']) or 'none'}")
    print(f"result: {'AGREE' if res['ok'] else 'DISAGREE'} on kernel, initrd and command line; files in {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
