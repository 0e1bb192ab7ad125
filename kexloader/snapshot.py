"""A machine's facts (`SystemFacts`) as a JSON snapshot: saved on a target (`python3 -m kexloader.system save FILE`),
loaded wherever a plan is made for it. Values only: every field of SystemFacts, addresses as integers, boot_params
in base64. `version` changes when a field changes meaning; fields added later are optional on load.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from . import efi, schema
from .errors import KexloaderError, SystemFactsError
from .files import read_small, write_atomically
from .model import IomemEntry, KernelText, KexecSysfs, MemRegion, Range, SystemFacts, XenFacts

SNAPSHOT_VERSION = 1
SNAPSHOT_LIMIT = 64 << 20  # bytes; a snapshot with a copy of the ACPI tables is a few MiB

_A, _N = schema.ADDRESS, schema.integer
_RANGE = schema.optional(schema.address_range)
_EFI = schema.obj({
    **{name: schema.optional(_A) for name in efi.SCALARS},
    "loader_signature": schema.optional(schema.string(16)),
    "runtime_map": schema.optional(schema.list_of(schema.row(*[_A] * len(efi.RUNTIME_MAP_FIELDS)), 1 << 16)),
    "acpi_tables": schema.optional(schema.list_of(schema.row(schema.string(64), schema.hex_bytes(16 << 20)), 4096)),
})
_KEXEC = schema.obj({
    "directory": schema.string(4096), "loaded": schema.optional(schema.boolean),
    "crash_loaded": schema.optional(schema.boolean), "crash_size": schema.optional(_A),
    "crash_elfcorehdr_size": schema.optional(_A),
    "crash_cma_ranges": schema.list_of(schema.address_range, 1 << 10),
    "cpu_crash_hotplug": schema.optional(_N(0, 1)), "memory_crash_hotplug": schema.optional(_N(0, 1)),
})
_XEN = schema.obj({
    "crash_area": _RANGE, "vmcoreinfo": _RANGE,
    "cpu_notes": schema.list_of(schema.row(_N(0, 1 << 20), _A, _A), 1 << 16),
})
# what facts_to_json writes; `version` and `memmap` are required, everything else was added later
SNAPSHOT_SCHEMA = schema.obj({
    "version": _N(0, 1 << 31),
    "memmap": schema.list_of(schema.row(_A, _A, _N(0, (1 << 32) - 1)), 1 << 16),
    "iomem": schema.list_of(schema.row(_A, _A, schema.string(256), _N(0, 64)), 1 << 16),
    "boot_params": schema.optional(schema.base64_bytes(4096)),
    "cmdline": schema.string(1 << 16),
    "acpi_rsdp": schema.optional(_A),
    "efi": schema.optional(_EFI),
    "xen": schema.optional(_XEN),
    "crash_notes": schema.list_of(schema.row(_N(0, 1 << 20), _A, _A), 1 << 16),
    "vmcoreinfo": _RANGE,
    "kernel_text": schema.optional(schema.row(_A, _A, _A)),
    "page_offset": schema.optional(_A),
    "os_release": schema.string(256),
    "kexec": schema.optional(_KEXEC),
}, required=("version", "memmap"))


def facts_to_json(facts: SystemFacts) -> dict[str, Any]:
    return {
        "version": SNAPSHOT_VERSION,
        "memmap": [[r.range.start, r.range.size, r.type] for r in facts.memmap],
        "iomem": [[e.range.start, e.range.last, e.name, e.depth] for e in facts.iomem],
        "boot_params": base64.b64encode(facts.boot_params).decode() if facts.boot_params else None,
        "cmdline": facts.cmdline,
        "acpi_rsdp": facts.acpi_rsdp,
        "efi": efi.to_json(facts.efi),
        "xen": _xen_to_json(facts.xen),
        "crash_notes": [[cpu, r.start, r.size] for cpu, r in facts.crash_notes],
        "vmcoreinfo": _range_json(facts.vmcoreinfo),
        "kernel_text": ([facts.kernel_text.vaddr, facts.kernel_text.paddr, facts.kernel_text.size]
                        if facts.kernel_text else None),
        "page_offset": facts.page_offset,
        "os_release": facts.os_release,
        "kexec": _kexec_to_json(facts.kexec),
    }


def _kexec_to_json(k: KexecSysfs | None) -> dict[str, Any] | None:
    if k is None:
        return None
    return {"directory": k.directory, "loaded": k.loaded, "crash_loaded": k.crash_loaded, "crash_size": k.crash_size,
            "crash_elfcorehdr_size": k.crash_elfcorehdr_size,
            "crash_cma_ranges": [[r.start, r.size] for r in k.crash_cma_ranges],
            "cpu_crash_hotplug": k.cpu_crash_hotplug, "memory_crash_hotplug": k.memory_crash_hotplug}


def _kexec_from_json(doc: Any) -> KexecSysfs | None:
    if doc is None:
        return None
    return KexecSysfs(directory=doc.get("directory", ""), loaded=doc.get("loaded"),
                      crash_loaded=doc.get("crash_loaded"), crash_size=doc.get("crash_size"),
                      crash_elfcorehdr_size=doc.get("crash_elfcorehdr_size"),
                      crash_cma_ranges=tuple(Range(s, n) for s, n in doc.get("crash_cma_ranges", [])),
                      cpu_crash_hotplug=doc.get("cpu_crash_hotplug"),
                      memory_crash_hotplug=doc.get("memory_crash_hotplug"))


def _range_json(r: Range | None) -> list[int] | None:
    return [r.start, r.size] if r else None


def _xen_to_json(x: XenFacts | None) -> dict[str, Any] | None:
    if x is None:
        return None
    return {"crash_area": _range_json(x.crash_area), "cpu_notes": [[c, r.start, r.size] for c, r in x.cpu_notes],
            "vmcoreinfo": _range_json(x.vmcoreinfo)}


def _xen_from_json(doc: Any) -> XenFacts | None:
    if doc is None:
        return None
    return XenFacts(crash_area=_range_from_json(doc.get("crash_area")),
                    cpu_notes=tuple((c, Range(s, n)) for c, s, n in doc.get("cpu_notes", [])),
                    vmcoreinfo=_range_from_json(doc.get("vmcoreinfo")))  # older snapshots' xen_image: unused


def _range_from_json(v: Any) -> Range | None:
    return Range(*v) if v else None


def facts_from_json(doc: Any, source: str = "snapshot") -> SystemFacts:
    """The facts a parsed snapshot describes, checked against SNAPSHOT_SCHEMA first (one error naming the field)."""
    try:
        schema.check(doc, SNAPSHOT_SCHEMA)
        if doc.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {doc.get('version')!r}, expected {SNAPSHOT_VERSION}")
        for i, (start, size, _) in enumerate(doc["memmap"]):
            schema.address_range([start, size], f"memmap[{i}]")
        for i, (start, last, _, _) in enumerate(doc.get("iomem", [])):
            if last < start:
                raise ValueError(f"iomem[{i}]: ends at {last:#x}, before its start {start:#x}")
        bp = base64.b64decode(doc["boot_params"]) if doc.get("boot_params") else None
        return SystemFacts(
            memmap=tuple(sorted(MemRegion(Range(s, n), t) for s, n, t in doc["memmap"])),
            iomem=tuple(IomemEntry(Range(s, last - s + 1), name, depth) for s, last, name, depth in doc.get("iomem", [])),
            boot_params=bp,
            cmdline=doc.get("cmdline", ""),
            acpi_rsdp=doc.get("acpi_rsdp"),
            efi=efi.from_json(doc.get("efi")),  # absent in older snapshots: no EFI
            source=source,
            xen=_xen_from_json(doc.get("xen")),
            crash_notes=tuple((int(cpu), Range(a, n)) for cpu, a, n in doc.get("crash_notes", [])),
            vmcoreinfo=Range(*doc["vmcoreinfo"]) if doc.get("vmcoreinfo") else None,
            kernel_text=KernelText(*doc["kernel_text"]) if doc.get("kernel_text") else None,
            page_offset=doc.get("page_offset"),
            os_release=doc.get("os_release", ""),
            kexec=_kexec_from_json(doc.get("kexec")),
        )
    except (KeyError, TypeError, ValueError) as e:  # SchemaError is a ValueError
        raise SystemFactsError(f"{source}: not a kexloader snapshot: {e}") from e


def save_snapshot(facts: SystemFacts, path: Path) -> None:
    """Written beside `path` and renamed over it: an interrupted or failed save leaves the old file (or none)."""
    text = json.dumps(facts_to_json(facts), indent=1) + "\n"
    try:
        write_atomically(Path(path), text.encode())
    except OSError as e:
        raise SystemFactsError(f"cannot write snapshot {path}: {e.strerror or e}") from e


def load_snapshot(path: Path) -> SystemFacts:
    """A snapshot file (a regular file of at most SNAPSHOT_LIMIT bytes), checked against SNAPSHOT_SCHEMA."""
    try:
        raw = read_small(path, "snapshot", SNAPSHOT_LIMIT)
    except KexloaderError as e:
        raise SystemFactsError(str(e)) from e
    try:
        doc = schema.parse(raw)
    except schema.SchemaError as e:
        raise SystemFactsError(f"snapshot {path}: {e}") from e
    return facts_from_json(doc, f"snapshot {path}")
