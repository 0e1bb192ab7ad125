"""EFI facts of the running system (issue 11): read live from the zero page and /sys/firmware/efi, or saved
to and loaded from a snapshot. Readers take `root` like those of system.py; they report and decide nothing
(whether the next kernel gets EFI is kexloader/efiboot.py's business).

What is read, and from where:

| fact | source |
|---|---|
| loader signature, system table, descriptor size and version, memory map | `efi_info` at 0x1c0 of /sys/kernel/boot_params/data |
| fw_vendor, runtime, config_table | /sys/firmware/efi/{fw_vendor,runtime,config_table} ("0x..." each) |
| firmware word size | /sys/firmware/efi/fw_platform_size (64, or 32 for a 32-bit firmware) |
| SMBIOS entry points | SMBIOS= and SMBIOS3= lines of /sys/firmware/efi/systab |
| runtime map | /sys/firmware/efi/runtime-map/N/{type,phys_addr,virt_addr,num_pages,attribute} (CONFIG_EFI_RUNTIME_MAP) |
| ACPI tables (not DSDT, FACS) | /sys/firmware/acpi/tables/NAME (for a multiboot kernel: kexloader/legacybios.py) |
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .formats import efi as fe
from .model import EfiFacts, EfiRuntimeRegion

EFI_INFO_OFFSET = 0x1C0  # boot_params.efi_info
RUNTIME_MAP_FIELDS = ("type", "phys_addr", "virt_addr", "num_pages", "attribute")


def efi_info_fields(boot_params: bytes | None) -> dict[str, Any]:
    """EfiFacts' efi_info fields from a running kernel's zero page (all empty without one)."""
    if not boot_params or len(boot_params) < EFI_INFO_OFFSET + fe.EFI_INFO_SIZE:
        return {}
    ei = fe.EfiInfo.parse(boot_params[EFI_INFO_OFFSET:EFI_INFO_OFFSET + fe.EFI_INFO_SIZE])
    sig = ei.efi_loader_signature
    return dict(loader_signature=sig.decode("ascii") if sig.isascii() and sig.isalnum() else sig.hex(),
                systab=ei.efi_systab | ei.efi_systab_hi << 32, memdesc_size=ei.efi_memdesc_size,
                memdesc_version=ei.efi_memdesc_version, memmap=ei.efi_memmap | ei.efi_memmap_hi << 32,
                memmap_size=ei.efi_memmap_size)


def _hex(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def parse_systab(text: str) -> dict[str, int]:
    """/sys/firmware/efi/systab: "NAME=0x..." lines (ACPI20, ACPI, SMBIOS, SMBIOS3, ...)."""
    out = {}
    for line in text.split():
        name, sep, value = line.partition("=")
        if sep:
            try:
                out[name] = int(value, 16)
            except ValueError:
                pass
    return out


def read_runtime_map(root: Path = Path("/")) -> tuple[EfiRuntimeRegion, ...] | None:
    """The runtime map in the kernel's order (directory N, numerically); None without the directory or when
    one of its files cannot be read."""
    base = root / "sys/firmware/efi/runtime-map"
    if not base.is_dir():
        return None
    regions = []
    for d in sorted((d for d in base.iterdir() if d.name.isdigit()), key=lambda d: int(d.name)):
        values = [v for v in (_hex(d / name) for name in RUNTIME_MAP_FIELDS) if v is not None]
        if len(values) != len(RUNTIME_MAP_FIELDS):
            return None
        regions.append(EfiRuntimeRegion(*values))
    return tuple(regions)


ACPI_TABLES_KEPT = ("DSDT", "FACS")  # FACP holds their addresses: the originals stay in use


def read_acpi_tables(root: Path = Path("/")) -> tuple[tuple[str, bytes], ...] | None:
    """(name, bytes) of /sys/firmware/acpi/tables/* (files only: not data/ or dynamic/), DSDT and FACS left out,
    each checked to hold a table header whose length is the file's; None when the directory is unreadable."""
    base = root / "sys/firmware/acpi/tables"
    try:
        names = sorted(p.name for p in base.iterdir() if p.is_file())
        tables = [(n, (base / n).read_bytes()) for n in names if n not in ACPI_TABLES_KEPT]
    except OSError:
        return None
    good = tuple((n, t) for n, t in tables if len(t) >= 36 and int.from_bytes(t[4:8], "little") == len(t))
    return good or None


def read_efi(root: Path = Path("/"), boot_params: bytes | None = None) -> EfiFacts | None:
    """The EFI facts of a UEFI boot, or None when the running kernel has no /sys/firmware/efi."""
    base = root / "sys/firmware/efi"
    if not base.is_dir():
        return None
    try:
        tables = parse_systab((base / "systab").read_text())
    except OSError:
        tables = {}
    size = None
    try:
        size = int((base / "fw_platform_size").read_text().strip())
    except (OSError, ValueError):
        pass
    return EfiFacts(**efi_info_fields(boot_params), fw_vendor=_hex(base / "fw_vendor"), runtime=_hex(base / "runtime"),
                    config_table=_hex(base / "config_table"), platform_size=size, smbios=tables.get("SMBIOS"),
                    smbios3=tables.get("SMBIOS3"), runtime_map=read_runtime_map(root),
                    acpi_tables=read_acpi_tables(root))


# ---- snapshots: "efi": null (BIOS, or a snapshot older than EFI facts) or this object

SCALARS = ("loader_signature", "systab", "memdesc_size", "memdesc_version", "memmap", "memmap_size", "fw_vendor",
           "runtime", "config_table", "platform_size", "smbios", "smbios3")


def to_json(f: EfiFacts | None) -> dict[str, Any] | None:
    if f is None:
        return None
    doc = {name: getattr(f, name) for name in SCALARS}
    doc["runtime_map"] = (None if f.runtime_map is None else
                          [[r.type, r.phys_addr, r.virt_addr, r.num_pages, r.attribute] for r in f.runtime_map])
    if f.acpi_tables is not None:
        doc["acpi_tables"] = [[name, data.hex()] for name, data in f.acpi_tables]
    return doc


def from_json(doc: Any) -> EfiFacts | None:
    """Raises KeyError/TypeError/ValueError on a malformed object (the snapshot loader reports them)."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise TypeError(f"efi: expected an object, got {type(doc).__name__}")
    runtime: Any = doc.get("runtime_map")
    regions = None if runtime is None else tuple(EfiRuntimeRegion(*(int(v) for v in r)) for r in runtime)
    if regions is not None and (any(len(r) != len(RUNTIME_MAP_FIELDS) for r in runtime)
                                or any(v < 0 for r in regions for v in dataclasses.astuple(r))):
        raise ValueError("efi.runtime_map: each entry is [type, phys_addr, virt_addr, num_pages, attribute], "
                         "non-negative integers")
    values: dict[str, Any] = {name: doc[name] for name in SCALARS if name in doc}
    for name, value in values.items():
        wanted = str if name == "loader_signature" else int
        if value is not None and (type(value) is not wanted or isinstance(value, int) and value < 0):
            raise ValueError(f"efi.{name}: {value!r} is not a{'' if wanted is str else ' non-negative'} "
                             f"{wanted.__name__}")
    tables = doc.get("acpi_tables")
    if tables is not None:
        if not isinstance(tables, list) or any(not isinstance(t, list) or len(t) != 2 or not all(
                isinstance(v, str) for v in t) for t in tables):
            raise ValueError("efi.acpi_tables: a list of [name, hex bytes]")
        tables = tuple((name, bytes.fromhex(data)) for name, data in tables)
    return EfiFacts(**values, runtime_map=regions, acpi_tables=tables)


def describe(f: EfiFacts | None) -> list[str]:
    """Lines for `python3 -m kexloader.system show`."""
    if f is None:
        return []
    lines = [f"EFI: {f.loader_signature or 'no efi_info'} systab {f.systab:#x}, memory map {f.memmap_size} bytes "
             f"of {f.memdesc_size}-byte descriptors (version {f.memdesc_version}), firmware "
             f"{f.platform_size or '?'}-bit, fw_vendor {_opt(f.fw_vendor)}, runtime {_opt(f.runtime)}, "
             f"config_table {_opt(f.config_table)}, SMBIOS {_opt(f.smbios)}, SMBIOS3 {_opt(f.smbios3)}"]
    if f.runtime_map is None:
        lines.append("EFI runtime map: none (/sys/firmware/efi/runtime-map missing)")
    if f.acpi_tables:
        lines.append("ACPI tables copied for a multiboot kernel: " + ", ".join(
            f"{name} ({len(data)} bytes)" for name, data in f.acpi_tables))
    for r in f.runtime_map or ():
        lines.append(f"EFI runtime {r.range} {fe.MEMORY_TYPES.get(r.type, r.type)} virt {r.virt_addr:#x} "
                     f"attr {r.attribute:#x}")
    return lines


def _opt(v: int | None) -> str:
    return "?" if v is None else f"{v:#x}"
