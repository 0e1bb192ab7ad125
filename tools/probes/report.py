"""Decode a probe kernel's report line (see tools/probes/__init__.py) into plain dicts.

    text = transcript.text                  # anything that contains the line
    r = decode(text)                        # decode_bz / decode_mb by the line's kind
    r["cmdline"], r["initrd"]["sha256"], r["e820"] ...           (kind "bz")
    r["info"]["cmdline"], r["info"]["modules"][0]["sha256"] ...  (kind "mb")

The probe dumps raw memory; everything here is interpretation by the documented layouts
(interfaces.md §2.2 for boot_params, §3.2 and §3.4 for multiboot 1 and 2, via kexloader.formats).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field

from kexloader.formats import multiboot as mb

from . import REPORT_END, REPORT_START

LINE_RE = re.compile(re.escape(REPORT_START) + r" (.*?) " + re.escape(REPORT_END))
TOKEN_RE = re.compile(r"^(?:m\.(?P<dname>[\w.]+)@(?P<addr>[0-9a-f]+)=(?P<data>[0-9a-f]*)|(?P<key>[\w.]+)=(?P<value>\S*))$")


class ReportError(AssertionError):
    """No report line, or one that does not decode."""


@dataclass(frozen=True)
class Dump:
    name: str
    addr: int
    data: bytes


@dataclass
class Report:
    kind: str
    values: dict[str, int | str] = field(default_factory=dict)
    dumps: list[Dump] = field(default_factory=list)

    def dump(self, name: str) -> Dump | None:
        return next((d for d in self.dumps if d.name == name), None)

    def all(self, name: str) -> list[Dump]:
        return [d for d in self.dumps if d.name == name]


def find_line(text: str) -> str:
    """The last complete report line in a console transcript."""
    lines = LINE_RE.findall(text.replace("\r", ""))
    if not lines:
        raise ReportError(f"no '{REPORT_START} ... {REPORT_END}' report line in the console output "
                          f"({len(text)} characters)")
    return lines[-1]


def parse(text: str) -> Report:
    """Tokens of the last report line: `key=hex` values (`path`/`kind` stay strings) and memory dumps."""
    body = find_line(text)
    values: dict[str, int | str] = {}
    dumps: list[Dump] = []
    for tok in body.split():
        m = TOKEN_RE.match(tok)
        if not m:
            raise ReportError(f"bad token in the report: {tok[:80]!r}")
        if m["dname"]:
            if len(m["data"]) % 2:
                raise ReportError(f"odd number of hex digits in dump {m['dname']}")
            dumps.append(Dump(m["dname"], int(m["addr"], 16), bytes.fromhex(m["data"])))
        elif m["key"] in ("kind", "path") or m["key"].startswith("h."):
            values[m["key"]] = m["value"]
        else:
            values[m["key"]] = int(m["value"], 16)
    kind = values.pop("kind", None)
    if kind not in ("bz", "mb"):
        raise ReportError(f"unknown report kind {kind!r}")
    return Report(str(kind), values, dumps)


def decode(text: str) -> dict:
    r = parse(text)
    return decode_bz(r) if r.kind == "bz" else decode_mb(r)


def _group(values: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------------------------------------ bzImage

# boot_params offsets (interfaces.md §2.1, §2.2)
BP = {"acpi_rsdp_addr": (0x070, "Q"), "ext_ramdisk_image": (0x0C0, "I"), "ext_ramdisk_size": (0x0C4, "I"),
      "ext_cmd_line_ptr": (0x0C8, "I"), "alt_mem_k": (0x1E0, "I"), "scratch": (0x1E4, "I"),
      "e820_entries": (0x1E8, "B"), "sentinel": (0x1EF, "B"), "setup_sects": (0x1F1, "B"),
      "vid_mode": (0x1FA, "H"), "boot_flag": (0x1FE, "H"), "header": (0x202, "I"), "version": (0x206, "H"),
      "type_of_loader": (0x210, "B"), "loadflags": (0x211, "B"), "code32_start": (0x214, "I"),
      "ramdisk_image": (0x218, "I"), "ramdisk_size": (0x21C, "I"), "heap_end_ptr": (0x224, "H"),
      "ext_loader_ver": (0x226, "B"), "ext_loader_type": (0x227, "B"), "cmd_line_ptr": (0x228, "I"),
      "initrd_addr_max": (0x22C, "I"), "kernel_alignment": (0x230, "I"), "xloadflags": (0x236, "H"),
      "cmdline_size": (0x238, "I"), "hardware_subarch": (0x23C, "I"), "setup_data": (0x250, "Q"),
      "pref_address": (0x258, "Q"), "init_size": (0x260, "I"), "kernel_info_offset": (0x268, "I")}
E820_TABLE = 0x2D0


def decode_zero_page(zp: bytes) -> dict:
    if len(zp) != 4096:
        raise ReportError(f"zero page dump is {len(zp)} bytes, not 4096")
    out = {name: struct.unpack_from("<" + fmt, zp, off)[0] for name, (off, fmt) in BP.items()}
    n = min(out["e820_entries"], 128)
    out["e820"] = [struct.unpack_from("<QQI", zp, E820_TABLE + 20 * i) for i in range(n)]
    out["screen_info"] = zp[:0x40]
    out["efi_info"] = zp[0x1C0:0x1E0]
    return out


def decode_bz(r: Report) -> dict:
    zp_dump = r.dump("zp")
    if zp_dump is None:
        raise ReportError("bzImage report without a zero page dump")
    zp = decode_zero_page(zp_dump.data)
    out: dict = {
        "kind": "bz",
        "path": r.values.get("path"),
        "regs": _group(r.values, "r."),
        "control": _group(r.values, "c."),
        "segments": _group(r.values, "s."),
        "entry32": _group(r.values, "e.") or None,
        "zero_page_addr": zp_dump.addr,
        "zero_page": zp,
        "e820": zp["e820"],
        "type_of_loader": zp["type_of_loader"],
        "acpi_rsdp_addr": zp["acpi_rsdp_addr"],
        "cmd_line_ptr": zp["cmd_line_ptr"] | zp["ext_cmd_line_ptr"] << 32,
    }
    rm = r.dump("rm")
    if rm is not None:
        ds, ss, sp, cs, flags, es = struct.unpack_from("<6H", rm.data, 0)
        out["real_mode"] = {"ds": ds, "ss": ss, "sp": sp, "cs": cs, "flags": flags, "es": es,
                            "linear": struct.unpack_from("<I", rm.data, 16)[0]}
    cmd = r.dump("cmdline")
    out["cmdline"] = None if cmd is None else _text(cmd.data)
    if cmd is not None and cmd.addr != out["cmd_line_ptr"]:
        raise ReportError(f"command line dumped from {cmd.addr:#x}, not cmd_line_ptr {out['cmd_line_ptr']:#x}")
    addr = zp["ramdisk_image"] | zp["ext_ramdisk_image"] << 32
    size = zp["ramdisk_size"] | zp["ext_ramdisk_size"] << 32
    ini = r.dump("initrd")
    if size and ini is None:
        raise ReportError("boot_params has a ramdisk but the report has no initrd dump")
    # sha256: the probe's own digest of all `size` bytes in place (the purgatory's integer routine);
    # dump_sha256: the host's digest of the bytes dumped (all of them up to MAX_DUMP)
    out["initrd"] = None if not size else {
        "addr": addr, "size": size, "dumped": len(ini.data), "complete": len(ini.data) == size,
        "sha256": r.values.get("h.initrd"), "dump_sha256": sha256(ini.data), "data": ini.data}
    out["setup_data"] = []
    for d in r.all("sd"):
        nxt, typ, ln = struct.unpack_from("<QII", d.data, 0)
        out["setup_data"].append({"addr": d.addr, "next": nxt, "type": typ, "len": ln, "data": d.data[16:]})
    return out


# ------------------------------------------------------------------------------------------------ multiboot


def decode_mb(r: Report) -> dict:
    regs = _group(r.values, "r.")
    out: dict = {"kind": "mb", "regs": regs, "control": _group(r.values, "c."),
                 "segments": _group(r.values, "s."), "magic": regs.get("eax"), "format": None, "info": None}
    if regs.get("eax") == mb.MB1_BOOTLOADER_MAGIC:
        out["format"] = "mb1"
        out["info"] = _decode_mb1(r)
    elif regs.get("eax") == mb.MB2_BOOTLOADER_MAGIC:
        out["format"] = "mb2"
        out["info"] = _decode_mb2(r)
    return out


def _module_bytes(r: Report, start: int, end: int) -> dict:
    d = next((d for d in r.all("mod") if d.addr == start), None)
    if d is None:
        raise ReportError(f"no dump of the module at {start:#x}")
    size = max(end - start, 0)
    return {"start": start, "end": end, "size": size, "sha256": sha256(d.data), "complete": len(d.data) == size,
            "data": d.data}


def _decode_mb1(r: Report) -> dict:
    raw = r.dump("mbi")
    info = mb.MB1Info.parse(raw.data)
    flags = info.flags
    out: dict = {"addr": raw.addr, "flags": flags, "mem_lower": None, "mem_upper": None, "boot_device": None,
                 "cmdline": None, "modules": [], "mmap": None, "loader_name": None}
    if flags & mb.MBI_MEMLIMITS:
        out["mem_lower"], out["mem_upper"] = info.mem_lower, info.mem_upper
    if flags & mb.MBI_BOOTDEV:
        out["boot_device"] = info.boot_device
    if flags & mb.MBI_CMDLINE:
        out["cmdline"] = _text(r.dump("cmdline").data)
    if flags & mb.MBI_MODULES:
        mods = r.dump("mods").data
        strings = r.all("modstr")
        for i in range(len(mods) // 16):
            m = mb.MB1Module.parse(mods[16 * i:16 * i + 16])
            s = next((d for d in strings if d.addr == m.string), None)
            entry = _module_bytes(r, m.mod_start, m.mod_end)
            entry["cmdline"] = None if s is None else _text(s.data)
            out["modules"].append(entry)
    if flags & mb.MBI_MEMMAP:
        raw_map, mmap, off = r.dump("mmap").data, [], 0
        while off + 4 <= len(raw_map):
            size = struct.unpack_from("<I", raw_map, off)[0]
            if size < 20 or off + 4 + size > len(raw_map):
                break
            _, base, length, typ = struct.unpack_from("<IQQI", raw_map, off)
            mmap.append((base, length, typ))
            off += 4 + size
        out["mmap"] = mmap
        out["mmap_addr"] = info.mmap_addr
    if flags & mb.MBI_LOADERNAME:
        out["loader_name"] = _text(r.dump("name").data)
    return out


def _decode_mb2(r: Report) -> dict:
    raw = r.dump("mbi")
    data = raw.data
    total, reserved = struct.unpack_from("<II", data, 0)
    out: dict = {"addr": raw.addr, "total_size": total, "reserved": reserved, "tags": [], "cmdline": None,
                 "loader_name": None, "modules": [], "mmap": None, "mem_lower": None, "mem_upper": None,
                 "load_base": None, "complete": len(data) == total}
    off = 8
    while off + 8 <= len(data):
        typ, size = struct.unpack_from("<II", data, off)
        if typ == mb.MB2_TAG_END or size < 8 or off + size > len(data):
            out["tags"].append(typ)
            break
        body = data[off + 8:off + size]
        out["tags"].append(typ)
        if typ == mb.MB2_TAG_CMDLINE:
            out["cmdline"] = _text(body.split(b"\0", 1)[0])
        elif typ == mb.MB2_TAG_LOADER_NAME:
            out["loader_name"] = _text(body.split(b"\0", 1)[0])
        elif typ == mb.MB2_TAG_MODULE:
            start, end = struct.unpack_from("<II", body, 0)
            entry = _module_bytes(r, start, end)
            entry["cmdline"] = _text(body[8:].split(b"\0", 1)[0])
            out["modules"].append(entry)
        elif typ == mb.MB2_TAG_BASIC_MEMINFO:
            out["mem_lower"], out["mem_upper"] = struct.unpack_from("<II", body, 0)
        elif typ == mb.MB2_TAG_MMAP:
            esize, version = struct.unpack_from("<II", body, 0)
            out["mmap_entry_size"], out["mmap_entry_version"] = esize, version
            out["mmap"] = [struct.unpack_from("<QQI", body, 8 + i) for i in range(0, len(body) - 8 - 19, esize)] \
                if esize >= 20 else []
        elif typ == mb.MB2_TAG_LOAD_BASE:
            out["load_base"] = struct.unpack_from("<I", body, 0)[0]
        off += (size + 7) & ~7
    return out
