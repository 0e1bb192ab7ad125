"""`kexloader --inspect FILE [--json]`: what an image file is, without loading anything.

Kind (the probe that claims it, in kexec-tools' order), compression, kernel version string, boot
protocol, 64-bit/relocatable/above-4G flags, sizes, multiboot headers and their tags, ELF class,
machine, entry, PT_LOADs and notes. `inspect_image` is pure (bytes in, a JSON-able dict out);
`run` reads the file and prints text or JSON.

Exit status: 0 when some image kind claims the file, 1 when none does or it cannot be read or
inflated (the report still says what is known).
"""

from __future__ import annotations

import json
import re
import struct
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO, cast

from . import files, images
from .errors import KexloaderError
from .formats import bzimage as bz
from .formats import compression
from .formats import multiboot as mb
from .images import bzimage
from .images import multiboot as mbimg
from .images import vmlinux
from .images.elfload import EM_386, EM_X86_64, read_elf
from .memory import SegmentData


# boot.rst: the protocol version that introduced each field we show
FIELD_SINCE = {
    "kernel_version": 0x0200, "initrd_addr_max": 0x0203, "kernel_alignment": 0x0205,
    "relocatable_kernel": 0x0205, "cmdline_size": 0x0206, "hardware_subarch": 0x0207,
    "payload_offset": 0x0208, "payload_length": 0x0208, "min_alignment": 0x020A, "pref_address": 0x020A,
    "init_size": 0x020A, "handover_offset": 0x020B, "xloadflags": 0x020C, "kernel_info_offset": 0x020F,
}
LOADFLAGS = {bz.LOADED_HIGH: "LOADED_HIGH", bz.KASLR_FLAG: "KASLR_FLAG", bz.QUIET_FLAG: "QUIET_FLAG",
             bz.KEEP_SEGMENTS: "KEEP_SEGMENTS", bz.CAN_USE_HEAP: "CAN_USE_HEAP"}
XLOADFLAGS = {bz.XLF_KERNEL_64: "XLF_KERNEL_64", bz.XLF_CAN_BE_LOADED_ABOVE_4G: "XLF_CAN_BE_LOADED_ABOVE_4G",
              bz.XLF_EFI_HANDOVER_32: "XLF_EFI_HANDOVER_32", bz.XLF_EFI_HANDOVER_64: "XLF_EFI_HANDOVER_64",
              bz.XLF_EFI_KEXEC: "XLF_EFI_KEXEC", bz.XLF_5LEVEL: "XLF_5LEVEL",
              bz.XLF_5LEVEL_ENABLED: "XLF_5LEVEL_ENABLED"}
MB1_FLAGS = {mb.MB1_PAGE_ALIGN: "page_align", mb.MB1_MEMORY_INFO: "memory_info", mb.MB1_VIDEO_MODE: "video_mode",
             mb.MB1_AOUT_KLUDGE: "aout_kludge"}
MB2_HTAGS = {mb.MB2_HTAG_INFO_REQUEST: "information_request", mb.MB2_HTAG_ADDRESS: "address",
             mb.MB2_HTAG_ENTRY: "entry_address", mb.MB2_HTAG_CONSOLE: "console_flags",
             mb.MB2_HTAG_FRAMEBUFFER: "framebuffer", mb.MB2_HTAG_MODULE_ALIGN: "module_align",
             mb.MB2_HTAG_EFI_BS: "efi_boot_services", mb.MB2_HTAG_ENTRY_EFI32: "entry_address_efi32",
             mb.MB2_HTAG_ENTRY_EFI64: "entry_address_efi64", mb.MB2_HTAG_RELOCATABLE: "relocatable"}
MB2_INFO_TAGS = {1: "cmdline", 2: "boot_loader_name", 3: "module", 4: "basic_meminfo", 5: "bootdev", 6: "mmap",
                 7: "vbe", 8: "framebuffer", 9: "elf_sections", 10: "apm", 11: "efi32", 12: "efi64", 13: "smbios",
                 14: "acpi_old", 15: "acpi_new", 16: "network", 17: "efi_mmap", 18: "efi_bs", 19: "efi32_ih",
                 20: "efi64_ih", 21: "load_base_addr"}
MACHINES = {EM_386: "EM_386 (x86)", vmlinux.EM_486: "EM_486 (x86)", EM_X86_64: "EM_X86_64 (x86-64)"}
# Xen's build strings: its version, then the compiler ("4.17.7+13-g2445b30a44-0+deb12u1\0x86_64-linux-gnu-gcc (")
XEN_BUILD = re.compile(rb"\x00(\d+\.\d+[\w.+~-]{0,80})\x00+[\w.-]{0,40}gcc \(")
XEN_BANNER = b"Xen version %d.%d%s"


def _version(v: int) -> str:
    return f"{v >> 8}.{v & 0xFF:02}"


def _flag_names(value: int, names: dict[int, str]) -> list[str]:
    out = [n for bit, n in names.items() if value & bit]
    rest = value & ~sum(names)
    return out + ([f"{rest:#x}"] if rest else [])


# --- per kind ---------------------------------------------------------------------------------------

def _bzimage(data: SegmentData) -> dict[str, Any]:
    if len(data) < bz.SETUP_HEADER_OFFSET + bz.SETUP_HEADER_SIZE:
        return {"error": f"truncated setup header ({len(data)} bytes)"}
    try:
        hdr = bz.SetupHeader.parse(bytes(data[bz.SETUP_HEADER_OFFSET:bz.SETUP_HEADER_OFFSET + bz.SETUP_HEADER_SIZE]))
    except Exception as e:  # construct errors: not a valid header
        return {"error": f"corrupt setup header: {e}"}
    v = hdr.version

    def has(field: str) -> bool:
        return bool(v >= FIELD_SINCE[field])

    setup = bz.setup_size(hdr.setup_sects)
    out: dict[str, Any] = {
        "boot_protocol": _version(v),
        "setup_sects": hdr.setup_sects, "setup_size": setup,
        "protected_mode_size": max(len(data) - setup, 0), "syssize_bytes": hdr.syssize * 16,
        "loadflags": hdr.loadflags, "loadflags_names": _flag_names(hdr.loadflags, LOADFLAGS),
    }
    if has("kernel_version") and hdr.kernel_version:
        out["kernel_version"] = bz.kernel_version_string(data)
    xlf = hdr.xloadflags if has("xloadflags") else 0
    out.update({
        "kernel_64": bool(xlf & bz.XLF_KERNEL_64),
        "relocatable": bool(has("relocatable_kernel") and hdr.relocatable_kernel),
        "above_4g": bool(xlf & bz.XLF_CAN_BE_LOADED_ABOVE_4G),
        "efi_handover_64": bool(xlf & bz.XLF_EFI_HANDOVER_64), "efi_kexec": bool(xlf & bz.XLF_EFI_KEXEC),
    })
    if has("xloadflags"):
        out["xloadflags"] = xlf
        out["xloadflags_names"] = _flag_names(xlf, XLOADFLAGS)
    for field in ("initrd_addr_max", "kernel_alignment", "min_alignment", "cmdline_size", "pref_address",
                  "init_size", "handover_offset", "kernel_info_offset"):
        if has(field):
            out[field] = hdr[field]
    if has("payload_offset") and hdr.payload_length:
        start = setup + hdr.payload_offset
        payload = data[start:start + min(hdr.payload_length, 64)]
        out["payload"] = {"offset": hdr.payload_offset, "length": hdr.payload_length,
                          "compression": compression.sniff(payload) if len(payload) else None}
    return out


def _notes(notes: Iterable[tuple[str, int, bytes]]) -> list[dict[str, Any]]:
    out = []
    for name, kind, desc in notes:
        text = desc.rstrip(b"\0")
        printable = text and all(32 <= c < 127 for c in text)
        value = text.decode() if printable else desc[:32].hex() + ("..." if len(desc) > 32 else "")
        out.append({"name": name, "type": kind, "desc": value})
    return out


def _elf(data: SegmentData, name: str) -> dict[str, Any]:
    try:
        elf = read_elf(data, name, machines=(EM_386, vmlinux.EM_486, EM_X86_64))
    except KexloaderError as e:
        return {"error": str(e)}
    loads = [{"paddr": ld.paddr, "vaddr": ld.vaddr, "filesz": len(ld.data), "memsz": ld.memsz, "align": ld.align,
              "flags": "".join(c if ld.flags & bit else "-" for c, bit in (("R", 4), ("W", 2), ("X", 1)))}
             for ld in elf.loads]
    base, end = vmlinux.load_span(elf)
    out: dict[str, Any] = {
        "class": f"ELF{elf.elfclass}", "machine": MACHINES.get(elf.machine, str(elf.machine)),
        "type": elf.elf_type, "entry": elf.entry, "loads": loads, "load_span": [base, end],
        "memory_size": sum(ld.memsz for ld in elf.loads), "notes": _notes(elf.notes)}
    evidence = vmlinux.linux_evidence(elf, data)
    if evidence and elf.machine == EM_X86_64:
        out["linux"] = {"recognised_by": evidence, "release": vmlinux.kernel_release(elf),
                        "default_args": "linux (--args-linux)"}
    return out


def _mb1(data: SegmentData) -> dict[str, Any] | None:
    h = mbimg.find_mb1(data)
    if h is None:
        return None
    out: dict[str, Any] = {"offset": h.offset, "flags": h.flags, "flags_names": _flag_names(h.flags, MB1_FLAGS),
                           "unsupported_flags": h.flags & mb.MB1_UNSUPPORTED}
    if h.aout is not None:
        aout = cast("Mapping[str, int]", h.aout)  # a construct Container (a dict) of MB1AoutFields
        out["aout"] = {k: aout[k] for k in ("header_addr", "load_addr", "load_end_addr", "bss_end_addr",
                                            "entry_addr")}
    return out


def _mb2_tag(kind: int, flags: int, body: bytes) -> dict[str, Any]:
    tag: dict[str, Any] = {"type": kind, "name": MB2_HTAGS.get(kind, f"unknown {kind}"), "optional": bool(flags & 1)}
    words = struct.unpack(f"<{len(body) // 4}I", body[: len(body) // 4 * 4])
    if kind == mb.MB2_HTAG_INFO_REQUEST:
        tag["requests"] = [MB2_INFO_TAGS.get(w, str(w)) for w in words]
    elif kind == mb.MB2_HTAG_ADDRESS and len(words) >= 4:
        tag.update(zip(("header_addr", "load_addr", "load_end_addr", "bss_end_addr"), words))
    elif kind in (mb.MB2_HTAG_ENTRY, mb.MB2_HTAG_ENTRY_EFI32, mb.MB2_HTAG_ENTRY_EFI64) and words:
        tag["entry_addr"] = words[0]
    elif kind == mb.MB2_HTAG_CONSOLE and words:
        tag["console_flags"] = words[0]
    elif kind == mb.MB2_HTAG_FRAMEBUFFER and len(words) >= 3:
        tag.update(zip(("width", "height", "depth"), words))
    elif kind == mb.MB2_HTAG_RELOCATABLE and len(words) >= 4:
        tag.update(zip(("min_addr", "max_addr", "align"), words))
        tag["preference"] = {0: "none", 1: "lowest", 2: "highest"}.get(words[3], str(words[3]))
    return tag


def _mb2(data: SegmentData) -> dict[str, Any] | None:
    h = mbimg.find_mb2(data)
    if h is None:
        return None
    _, arch, length, _ = struct.unpack_from("<IIII", bytes(data[h.offset:h.offset + 16]))
    return {"offset": h.offset, "architecture": "i386" if arch == mb.MB2_ARCH_I386 else str(arch),
            "header_length": length, "tags": [_mb2_tag(*t) for t in h.tags]}


def _xen_version(data: SegmentData) -> str | None:
    blob = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    if XEN_BANNER not in blob:
        return None
    m = XEN_BUILD.search(blob)
    return m.group(1).decode("ascii", "replace") if m else "unknown"


# --- the whole report -------------------------------------------------------------------------------

def inspect_image(raw: SegmentData, name: str) -> dict[str, Any]:
    """What the bytes of one image file are (pure)."""
    info: dict[str, Any] = {"file": name, "size": len(raw), "compression": None, "decompressed_size": None,
                            "kind": None, "matches": [], "loadable": False, "version": None, "errors": []}
    data = raw
    fmt = compression.sniff(raw)
    if fmt is not None:
        info["compression"] = fmt
        try:
            data = compression.decompress(raw, limit=files.DECOMPRESSED_LIMIT)
        except compression.CompressionError as e:
            info["errors"].append(f"{fmt}: {e}")
            return info
        info["decompressed_size"] = len(data)
    matches = [k for k in images.KINDS if k.probe(data)]
    info["matches"] = [k.name for k in matches]
    if matches:
        info["kind"] = matches[0].name
        info["loadable"] = matches[0].plan is not None
    from .inspect_uki import report as uki_report
    u = uki_report(data, name)
    if u is not None:
        info["uki"] = u
        linux = u.pop("_linux_data", None)
        if linux is not None:
            info["bzimage"] = _bzimage(linux)
            info["version"] = info["bzimage"].get("kernel_version")
        if "error" in u:
            info["errors"].append(u["error"])
    if bz.HEADER_MAGIC == bytes(data[0x202:0x206]):
        info["bzimage"] = b = _bzimage(data)
        info["version"] = b.get("kernel_version")
        if info["kind"] in ("bzImage64", "bzImage") and "error" not in b:
            try:
                bzimage.parse_header(data, name)
            except KexloaderError as e:  # what -l would say about it
                info["errors"].append(str(e))
    if bytes(data[:4]) == b"\x7fELF":
        info["elf"] = elf = _elf(data, name)
        if "linux" in elf:
            info["version"] = vmlinux.linux_banner(data) or elf["linux"]["release"]
    for key, found in (("multiboot1", _mb1(data)), ("multiboot2", _mb2(data))):
        if found is not None:
            info[key] = found
    if "multiboot1" in info or "multiboot2" in info:
        xen = _xen_version(data)
        if xen:
            info["xen"] = {"version": xen}
            info["version"] = info["version"] or f"Xen {xen}"
    for part in ("bzimage", "elf"):
        if part in info and "error" in info[part]:
            info["errors"].append(info[part]["error"])
    if not matches:
        info["errors"].append("no image kind claims this file (not a bzImage, ELF or multiboot image)")
    return info


DECIMAL = {"width", "height", "depth", "console_flags"}


def _hex(v: object, key: str = "") -> str:
    if key in DECIMAL:
        return str(v)
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def to_text(info: dict[str, Any]) -> str:
    """The report for people."""
    rows: list[tuple[str, str]] = []

    def add(k: str, v: str) -> None:
        rows.append((k, v))

    add("file", f"{info['file']} ({info['size']} bytes)")
    if info["compression"]:
        size = info["decompressed_size"]
        add("compression", f"{info['compression']}" + (f", {size} bytes inflated" if size is not None else ""))
    else:
        add("compression", "none")
    kind = info["kind"] or "unknown"
    also = [m for m in info["matches"][1:]]
    add("kind", kind + ("" if info["loadable"] or not info["kind"] else " (recognised; kexloader cannot load it yet)")
        + (f"; also matches {', '.join(also)}" if also else ""))
    if info["version"]:
        add("version", info["version"])
    if "uki" in info:
        from .inspect_uki import text_rows
        u = info["uki"]
        add("UKI" if u.get("is_uki") else "PE", f"{len(u.get('sections', []))} sections, "
                                                f"{len(u.get('profiles', []))} profiles")
        rows.extend(text_rows(u) if "sections" in u else [])
    if "bzimage" in info and "error" not in info["bzimage"]:
        b = info["bzimage"]
        add("boot protocol", b["boot_protocol"])
        add("flags", ", ".join(f"{n} {'yes' if b[k] else 'no'}" for n, k in (
            ("64-bit", "kernel_64"), ("relocatable", "relocatable"), ("above 4G", "above_4g"),
            ("EFI handover 64", "efi_handover_64"), ("EFI kexec", "efi_kexec"))))
        add("loadflags", f"{b['loadflags']:#04x} {' '.join(b['loadflags_names'])}".rstrip())
        if "xloadflags" in b:
            add("xloadflags", f"{b['xloadflags']:#06x} {' '.join(b['xloadflags_names'])}".rstrip())
        add("setup", f"{b['setup_sects']} sectors, {b['setup_size']} bytes; protected-mode part "
                     f"{b['protected_mode_size']} bytes")
        for k in ("init_size", "pref_address", "kernel_alignment", "min_alignment", "initrd_addr_max",
                  "cmdline_size", "handover_offset", "kernel_info_offset"):
            if k in b:
                add(k, str(b[k]) if k in ("cmdline_size", "min_alignment") else _hex(b[k]))
        if "payload" in b:
            p = b["payload"]
            add("payload", f"{p['compression'] or 'unknown'}, {p['length']} bytes at offset {p['offset']:#x}")
    if "elf" in info and "error" not in info["elf"]:
        e = info["elf"]
        add("ELF", f"{e['class']} {e['type']} {e['machine']}, entry {e['entry']:#x}")
        add("memory", f"{e['memory_size']} bytes in [{e['load_span'][0]:#x}, {e['load_span'][1]:#x})")
        for i, ld in enumerate(e["loads"]):
            add(f"PT_LOAD {i}", f"paddr {ld['paddr']:#x} vaddr {ld['vaddr']:#x} filesz {ld['filesz']:#x} "
                                f"memsz {ld['memsz']:#x} {ld['flags']} align {ld['align']:#x}")
        for n in e["notes"]:
            add("note", f"{n['name']} {n['type']:#x}: {n['desc']}")
        if "linux" in e:
            lx = e["linux"]
            add("Linux", f"recognised by {lx['recognised_by']}; release {lx['release'] or 'unknown'}; "
                         f"default arguments {lx['default_args']}")
    if "multiboot1" in info:
        m = info["multiboot1"]
        add("multiboot 1", f"header at {m['offset']:#x}, flags {m['flags']:#x} {' '.join(m['flags_names'])}".rstrip())
        if "aout" in m:
            add("  a.out kludge", " ".join(f"{k} {v:#x}" for k, v in m["aout"].items()))
    if "multiboot2" in info:
        m = info["multiboot2"]
        add("multiboot 2", f"header at {m['offset']:#x}, {m['architecture']}, {m['header_length']} bytes, "
                           f"{len(m['tags'])} tags")
        for t in m["tags"]:
            extra = ", ".join(f"{k} {_hex(v, k) if k != 'requests' else ' '.join(v)}" for k, v in t.items()
                              if k not in ("type", "name", "optional"))
            add(f"  tag {t['type']}", f"{t['name']}{' (optional)' if t['optional'] else ''}"
                                      + (f": {extra}" if extra else ""))
    for err in info["errors"]:
        add("error", err)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows)


def run(path: str, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """The CLI's --inspect: read, report, exit status (0: a kind claims it)."""
    out = out or sys.stdout
    raw = files.read_file(Path(path), "image")  # the edge: the only file access here
    info = inspect_image(raw, str(path))
    out.write((json.dumps(info, indent=1) if as_json else to_text(info)) + "\n")
    return 0 if info["kind"] and not info["errors"] else 1
