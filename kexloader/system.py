"""Facts about a machine, read live from /sys and /proc (the JSON snapshot form is kexloader.snapshot; its
load_snapshot and save_snapshot are re-exported here).

Every reader takes `root` so tests (and offline builds) can point it at a copy of another machine's files.
Readers report; they decide nothing.

    python3 -m kexloader.system save OUT.json     # snapshot this machine (written beside OUT, renamed over it)
    python3 -m kexloader.system show [IN.json]    # print a snapshot (or the live facts)
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import kexec_sysfs
from .errors import KexloaderError, SystemFactsError
from .model import (E820_ACPI, E820_NVS, E820_PMEM, E820_PRAM, E820_RAM, E820_RESERVED, E820_UNUSABLE,
                    EfiFacts, IomemEntry, KernelText, KexecSysfs, MemRegion, Range,
                    SystemFacts, XenFacts)

if TYPE_CHECKING:
    from .formats import elfcore

# efi, hypercall, snapshot and the construct formats are imported where they are used: `xen_role` (every -S, -u
# and -e asks it) then costs no more than this module.
# re-exported, on first use: `system.load_snapshot` is what callers of the library have used
_FROM_SNAPSHOT = frozenset({"SNAPSHOT_VERSION", "facts_from_json", "facts_to_json", "load_snapshot", "save_snapshot"})


def __getattr__(name: str) -> Any:
    if name in _FROM_SNAPSHOT:
        from . import snapshot
        return getattr(snapshot, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Type names of /sys/firmware/memmap/N/type and /proc/iomem (arch/x86/kernel/e820.c e820_type_to_string).
TYPE_BY_NAME = {
    "System RAM": E820_RAM,
    "ACPI Tables": E820_ACPI,
    "ACPI Non-volatile Storage": E820_NVS,
    "reserved": E820_RESERVED,
    "Reserved": E820_RESERVED,
    "Unusable memory": E820_UNUSABLE,
    "Persistent Memory (legacy)": E820_PRAM,
    "Persistent Memory": E820_PMEM,
    "Soft Reserved": E820_RESERVED,
    "Unknown E820 type": E820_RESERVED,
}

ACPI_RSDP_OFFSET = 0x70  # boot_params.acpi_rsdp_addr


def read_memmap(root: Path = Path("/")) -> tuple[MemRegion, ...]:
    """The firmware memory map (/sys/firmware/memmap: what the firmware gave, before mem=/memmap= edits)."""
    base = root / "sys/firmware/memmap"
    try:
        entries = []
        for d in sorted(base.iterdir(), key=lambda p: int(p.name)):
            start = int((d / "start").read_text(), 16)
            last = int((d / "end").read_text(), 16)  # inclusive
            name = (d / "type").read_text().strip()
            entries.append(MemRegion(Range(start, last - start + 1), TYPE_BY_NAME.get(name, E820_RESERVED)))
    except (OSError, ValueError) as e:
        raise SystemFactsError(f"cannot read the firmware memory map in {base}: {e}") from e
    return tuple(sorted(entries))


IOMEM_LINE = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


def parse_iomem(text: str) -> tuple[IomemEntry, ...]:
    entries = []
    for line in text.splitlines():
        m = IOMEM_LINE.match(line)
        if not m:
            continue
        start, last = int(m[2], 16), int(m[3], 16)
        if last < start:
            continue
        entries.append(IomemEntry(Range(start, last - start + 1), m[4].strip(), len(m[1]) // 2))
    return tuple(entries)


def read_iomem(root: Path = Path("/")) -> tuple[IomemEntry, ...]:
    path = root / "proc/iomem"
    try:
        entries = parse_iomem(path.read_text())
    except OSError as e:
        raise SystemFactsError(f"cannot read {path}: {e.strerror}") from e
    if entries and all(e.range.start == 0 for e in entries):
        raise SystemFactsError(f"{path} shows only zero addresses", hint="run as root")
    return entries


def memmap_from_iomem(entries: tuple[IomemEntry, ...]) -> tuple[MemRegion, ...]:
    """Top-level /proc/iomem entries with a known type, for kernels without /sys/firmware/memmap."""
    return tuple(sorted(MemRegion(e.range, TYPE_BY_NAME[e.name]) for e in entries
                        if e.depth == 0 and e.name in TYPE_BY_NAME))


def read_boot_params(root: Path = Path("/")) -> bytes | None:
    path = root / "sys/kernel/boot_params/data"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) == 4096 else None


def read_efi_rsdp(root: Path = Path("/")) -> int | None:
    """ACPI20= (else ACPI=) from /sys/firmware/efi/systab."""
    try:
        text = (root / "sys/firmware/efi/systab").read_text()
    except OSError:
        return None
    found = dict(line.split("=", 1) for line in text.split() if "=" in line)
    for key in ("ACPI20", "ACPI"):
        if key in found:
            return int(found[key], 16)
    return None


# ---- kdump sources (Linux Documentation/ABI/testing/sysfs-devices-system-cpu 'crash_notes',
# sysfs-kernel-vmcoreinfo, Documentation/filesystems/proc.rst for /proc/kcore). Each returns nothing rather than
# fail: they only matter for -p, and kdump planning says which one is missing.

KERNEL_TEXT_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map: the kernel image mapping starts here
KCORE_READ = 64 * 1024  # /proc/kcore is as big as the address space: read its headers only
NO_PADDR = (1 << 64) - 1  # /proc/kcore's p_paddr for ranges that are not RAM (vmalloc, modules, vmemmap)


def read_crash_notes(root: Path = Path("/")) -> tuple[tuple[int, Range], ...]:
    """(cpu, note buffer) for every CPU directory with crash_notes: one per possible CPU, in CPU order.

    crash_notes is the physical address in bare hex; crash_notes_size is decimal (absent before Linux 3.16:
    then 1024 bytes, which only makes the kdump kernel read further until the empty note header)."""
    out = []
    for d in (root / "sys/devices/system/cpu").glob("cpu[0-9]*"):
        if not d.name[3:].isdigit():
            continue
        try:
            addr = int((d / "crash_notes").read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        try:
            size = int((d / "crash_notes_size").read_text().strip())
        except (OSError, ValueError):
            size = 1024
        out.append((int(d.name[3:]), Range(addr, size)))
    return tuple(sorted(out))


def read_vmcoreinfo(root: Path = Path("/")) -> Range | None:
    """/sys/kernel/vmcoreinfo: "ADDR SIZE", both hex; ADDR is "0x..." on new kernels, bare hex on old ones."""
    try:
        words = (root / "sys/kernel/vmcoreinfo").read_text().split()
        addr, size = int(words[0], 16), int(words[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return Range(addr, size) if size else None


KALLSYMS_WANTED = ("_text", "_stext", "_end")


def read_kallsyms(root: Path = Path("/"), names: tuple[str, ...] = KALLSYMS_WANTED) -> dict[str, int]:
    """Addresses of a few symbols from /proc/kallsyms (zeros when kptr_restrict hides them are left out)."""
    found: dict[str, int] = {}
    try:
        with open(root / "proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in names and parts[2] not in found:
                    value = int(parts[0], 16)
                    if value:
                        found[parts[2]] = value
                    if len(found) == len(names):
                        break
    except (OSError, ValueError):
        pass
    return found


def read_kcore_loads(root: Path = Path("/")) -> tuple[elfcore.Phdr, ...]:
    """/proc/kcore's PT_LOAD headers (the file's first 64 KiB only), or () when it cannot be read."""
    from .formats import elfcore
    try:
        with open(root / "proc/kcore", "rb") as f:
            head = f.read(KCORE_READ)
        return tuple(p for p in elfcore.parse_headers(head).phdrs if p.p_type == elfcore.PT_LOAD)
    except (OSError, elfcore.ElfCoreError):
        return ()


def kernel_text_from(kcore: tuple[elfcore.Phdr, ...], syms: dict[str, int],
                     iomem: tuple[IomemEntry, ...]) -> KernelText | None:
    """The kernel-text mapping: the /proc/kcore PT_LOAD at or above __START_KERNEL_map that holds _stext (the
    lowest one there when _stext is unknown: modules and the vsyscall page lie above the image). Its physical
    address is /proc/iomem's "Kernel code" start (= __pa_symbol(_text)), else kcore's p_paddr. Without kcore:
    _text.._end from kallsyms."""
    code = next((e.range.start for e in iomem if e.name == "Kernel code"), None)
    stext = syms.get("_stext") or syms.get("_text")
    maps = sorted((p for p in kcore if p.p_vaddr >= KERNEL_TEXT_MAP and p.p_memsz), key=lambda p: p.p_vaddr)
    if stext is not None:
        maps = [p for p in maps if p.p_vaddr <= stext < p.p_vaddr + p.p_memsz] or maps
    if maps:
        text = maps[0]
        paddr = code if code is not None else text.p_paddr
        if paddr != NO_PADDR:
            return KernelText(text.p_vaddr, paddr, text.p_memsz)
    if code is not None and "_text" in syms and syms.get("_end", 0) > syms["_text"]:
        return KernelText(syms["_text"], code, syms["_end"] - syms["_text"])
    return None


def page_offset_from(kcore: tuple[elfcore.Phdr, ...]) -> int | None:
    """The direct-map base: p_vaddr - p_paddr of the lowest direct-mapped PT_LOAD of /proc/kcore (RAM; the
    entries without a physical address and the kernel-text mapping are not direct-mapped)."""
    ram = [p for p in kcore if p.p_paddr != NO_PADDR and p.p_vaddr < KERNEL_TEXT_MAP and p.p_vaddr >= p.p_paddr]
    if not ram:
        return None
    low = min(ram, key=lambda p: p.p_vaddr)
    return low.p_vaddr - low.p_paddr


# ---- the kexec sysfs files (Documentation/ABI/testing/sysfs-kernel-kexec-kdump). Linux 6.19+ moved them into
# /sys/kernel/kexec/ and left the old names in /sys/kernel as symlinks (marked obsolete): read the new name, then
# the old one. Measured on Debian's 7.3.4: /sys/kernel/kexec/{loaded, crash_loaded, crash_size,
# crash_elfcorehdr_size, crash_cma_ranges}; Debian 12's 6.1 has only the old kexec_loaded, kexec_crash_loaded and
# kexec_crash_size.


def kexec_file(root: Path, attribute: str) -> Path | None:
    """The file that holds `attribute` (kexloader/kexec_sysfs.py: the 6.19+ name, else the old one); None if neither."""
    found = kexec_sysfs.find(root, attribute)
    return Path(found) if found is not None else None


def _read_int(path: Path | None, base: int = 10) -> int | None:
    if path is None:
        return None
    try:
        return int(path.read_text().strip(), base)
    except (OSError, ValueError):
        return None


def parse_cma_ranges(text: str) -> tuple[Range, ...]:
    """crash_cma_ranges: one "start-end" per line, bare hex, end inclusive (as /proc/iomem)."""
    out = []
    for line in text.split():
        start, sep, last = line.partition("-")
        try:
            a, b = int(start, 16), int(last, 16)
        except ValueError:
            continue
        if sep and b >= a:
            out.append(Range(a, b - a + 1))
    return tuple(sorted(out))


def read_kexec_sysfs(root: Path = Path("/")) -> KexecSysfs:
    """Every kexec sysfs fact, each from the new directory when it has it, else from the old name."""
    loaded = kexec_file(root, "loaded")
    cma = kexec_file(root, "crash_cma_ranges")
    try:
        ranges = parse_cma_ranges(cma.read_text()) if cma else ()
    except OSError:
        ranges = ()
    crash_loaded = _read_int(kexec_file(root, "crash_loaded"))
    loaded_value = _read_int(loaded)
    return KexecSysfs(
        directory="/" + str(loaded.parent.relative_to(root)) if loaded else "",
        loaded=None if loaded_value is None else loaded_value == 1,
        crash_loaded=None if crash_loaded is None else crash_loaded == 1,
        crash_size=_read_int(kexec_file(root, "crash_size")),
        crash_elfcorehdr_size=_read_int(kexec_file(root, "crash_elfcorehdr_size")),
        crash_cma_ranges=ranges,
        cpu_crash_hotplug=_read_int(root / "sys/devices/system/cpu/crash_hotplug"),
        memory_crash_hotplug=_read_int(root / "sys/devices/system/memory/crash_hotplug"))


def read_os_release(root: Path = Path("/")) -> str:
    try:
        return (root / "proc/sys/kernel/osrelease").read_text().strip()
    except OSError:
        return ""


def xen_role(root: Path = Path("/")) -> str | None:
    """"dom0" in a Xen PV control domain, "domU" in another PV guest, None on bare metal or in HVM
    (where Linux's own kexec works, as kexec-tools assumes)."""
    try:
        if (root / "sys/hypervisor/type").read_text().strip() != "xen":
            return None
    except OSError:
        return None
    try:
        if (root / "sys/hypervisor/guest_type").read_text().strip() not in ("PV", "PVH"):
            return None
    except OSError:
        pass  # kernels before 4.12 have no guest_type: decide by /proc/xen below
    try:
        caps = (root / "proc/xen/capabilities").read_text()
    except OSError as e:
        raise SystemFactsError("running under Xen, but /proc/xen/capabilities cannot be read",
                               hint="mount xenfs: mount -t xenfs xenfs /proc/xen") from e
    return "dom0" if "control_d" in caps else "domU"


def _xen_guest_type(root: Path) -> str:
    """"PV", "PVH" or "HVM" (/sys/hypervisor/guest_type, Linux 4.12+); "PV" before (only PV could be dom0)."""
    try:
        return (root / "sys/hypervisor/guest_type").read_text().strip() or "PV"
    except OSError:
        return "PV"


def read_xen_facts() -> tuple[tuple[MemRegion, ...], XenFacts]:
    """The machine memory map and Xen's kexec ranges, through hypercalls (dom0 only)."""
    from . import hypercall
    from .formats import xen as xf
    crash_area = hypercall.get_range(xf.KEXEC_RANGE_MA_CRASH)
    notes: tuple[tuple[int, Range], ...] = ()
    vmcoreinfo = None
    if crash_area is not None:  # Xen keeps note buffers and VMCOREINFO only when it has a crash area
        notes = tuple(hypercall.cpu_note_ranges())
        vmcoreinfo = hypercall.get_range(xf.KEXEC_RANGE_MA_VMCOREINFO)
    return hypercall.machine_memory_map(), XenFacts(crash_area=crash_area, cpu_notes=notes, vmcoreinfo=vmcoreinfo)


def read_xen_efi(base: EfiFacts | None, memmap: tuple[MemRegion, ...]) -> EfiFacts | None:
    """dom0's EFI facts completed, when Xen was booted by EFI, with the firmware's system table and runtime
    regions (kexloader/xenefi.py); `base` as it is when they cannot be learnt."""
    if base is None:
        return None
    from . import hypercall, xenefi
    config = hypercall.efi_config_table()
    if config is None:
        return base
    try:
        descriptors = xenefi.walk_memory_map(memmap, hypercall.efi_mem_info)
    except xenefi.XenEfiError:
        return base
    found = xenefi.find_system_table(xenefi.runtime_regions(descriptors), read_physical, config)
    return xenefi.efi_facts(base, descriptors, found)[0]


def read_physical(addr: int, size: int, path: str = "/dev/mem") -> bytes | None:
    """`size` bytes of physical memory at `addr` (in a PV dom0: the machine's, for memory that is not dom0's
    RAM), or None when /dev/mem refuses (lockdown, CONFIG_STRICT_DEVMEM for RAM, a driver's region)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, size, addr)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == size else None


def read_cmdline(root: Path = Path("/")) -> str:
    """The running kernel's command line (/proc/cmdline), "" when it cannot be read."""
    try:
        # bytes that are not UTF-8 kept as surrogate escapes: the line is passed on byte for byte
        return (root / "proc/cmdline").read_text(errors="surrogateescape").strip()
    except OSError:
        return ""


def read_facts(root: Path = Path("/"), *, kdump: bool = True) -> SystemFacts:
    """Everything a plan needs, from the running system under `root`. With kdump=False the facts only a crash
    kernel's plan uses are left out (CPU crash notes, VMCOREINFO, the kernel text and direct-map base from
    /proc/kcore and /proc/kallsyms): a plain -l does not read them (a kernel without /proc/kcore makes
    kexloader read all of /proc/kallsyms for _end, ~0.1 s on a 120,000-symbol kernel)."""
    from . import efi
    role = xen_role(root)
    if role == "domU":
        raise SystemFactsError("kexec does not work from a Xen domU (only from dom0)")
    if role == "dom0":
        # dom0's /proc/iomem, firmware map and boot_params describe its pseudo-physical PV world, not the
        # machine: the next system gets Xen's machine map and no boot_params of ours (hardware_subarch=Xen PV
        # would be wrong for a kernel on bare metal).
        memmap, xen_facts = read_xen_facts()
        cmdline = read_cmdline(root)
        # /sys/kernel/vmcoreinfo of a PV dom0 is a machine address (paddr_vmcoreinfo_note, arch/x86/xen/mmu_pv.c):
        # the crash header carries it so that the dump holds dom0's VMCOREINFO next to Xen's. A PVH dom0 reports
        # a guest-physical address, which means nothing in the machine's dump: left out.
        # A dom0 of an EFI-booted Xen has /sys/firmware/efi (no efi_info, no runtime map): the machine is UEFI, which a
        # multiboot target needs to know (kexloader/legacybios.py)
        return SystemFacts(memmap=memmap, cmdline=cmdline, acpi_rsdp=read_efi_rsdp(root), source="live Xen dom0",
                           xen=xen_facts, vmcoreinfo=None if _xen_guest_type(root) == "PVH" else read_vmcoreinfo(root),
                           efi=read_xen_efi(efi.read_efi(root), memmap))
    try:
        iomem = read_iomem(root)
    except SystemFactsError:
        iomem = ()
    if (root / "sys/firmware/memmap").is_dir():
        memmap = read_memmap(root)
    else:
        memmap = memmap_from_iomem(iomem)
    if not any(r.is_ram for r in memmap):
        raise SystemFactsError("found no System RAM in /sys/firmware/memmap or /proc/iomem",
                               hint="run as root on a Linux system, or give a snapshot")
    boot_params = read_boot_params(root)
    rsdp = struct.unpack_from("<Q", boot_params, ACPI_RSDP_OFFSET)[0] if boot_params else 0
    cmdline = read_cmdline(root)
    facts = SystemFacts(memmap=memmap, boot_params=boot_params, cmdline=cmdline, iomem=iomem,
                        acpi_rsdp=rsdp or read_efi_rsdp(root), source=f"live {root}",
                        efi=efi.read_efi(root, boot_params), os_release=read_os_release(root),
                        kexec=read_kexec_sysfs(root))
    if not kdump:
        return facts
    kcore = read_kcore_loads(root)
    return dataclasses.replace(
        facts, crash_notes=read_crash_notes(root), vmcoreinfo=read_vmcoreinfo(root),
        # _end (far down /proc/kallsyms) only matters when there is no kcore
        kernel_text=kernel_text_from(kcore, read_kallsyms(root, KALLSYMS_WANTED[:2 if kcore else 3]), iomem),
        page_offset=page_offset_from(kcore))


def describe(facts: SystemFacts) -> str:
    from . import efi
    lines = [f"# {facts.source}"]
    lines += [f"{r.range.start:#018x}-{r.range.last:#018x} {r.type_name}" for r in facts.memmap]
    lines += [f"crash kernel region {r}" for r in facts.crash_regions()]
    lines += [f"crash CMA range {r}" for r in facts.crash_cma_ranges()]
    if facts.kexec is not None and facts.kexec.directory:
        k = facts.kexec
        lines.append(f"kexec sysfs {k.directory}: loaded {k.loaded}, crash_loaded {k.crash_loaded}, crash_size "
                     f"{k.crash_size}, crash_elfcorehdr_size {k.crash_elfcorehdr_size}, crash_hotplug cpu "
                     f"{k.cpu_crash_hotplug} memory {k.memory_crash_hotplug}")
    lines.append(f"acpi_rsdp {facts.acpi_rsdp:#x}" if facts.acpi_rsdp else "acpi_rsdp unknown")
    lines += efi.describe(facts.efi)
    lines.append(f"boot_params {'present' if facts.boot_params else 'absent'}; cmdline {facts.cmdline!r}")
    if facts.crash_notes or facts.vmcoreinfo or facts.kernel_text:
        kt = facts.kernel_text
        lines.append(f"kdump: {len(facts.crash_notes)} CPU crash notes, vmcoreinfo {facts.vmcoreinfo or 'unknown'}, "
                     + (f"kernel text {kt.vaddr:#x} at {kt.paddr:#x} ({kt.size:#x} bytes)" if kt else "kernel text unknown")
                     + (f", page_offset {facts.page_offset:#x}" if facts.page_offset is not None else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from .snapshot import load_snapshot, save_snapshot
    try:
        if len(argv) == 2 and argv[0] == "save":
            save_snapshot(read_facts(), Path(argv[1]))
        elif argv[:1] == ["show"] and len(argv) <= 2:
            print(describe(load_snapshot(Path(argv[1])) if len(argv) == 2 else read_facts()))
        else:
            print("usage: python3 -m kexloader.system save OUT.json | show [IN.json]", file=sys.stderr)
            return 1
    except KexloaderError as e:
        print(f"kexloader: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # what a reader let through: one line all the same
        print(f"kexloader: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # save writes beside OUT and renames: nothing is left half-written
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
