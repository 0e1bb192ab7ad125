"""Plain values shared by every stage: ranges, memory regions, segments, requests, plans, system facts.

No I/O and no policy here. Ranges are half-open: `end` is exclusive, `last` inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .kexec_abi import KEXEC_ON_CRASH

PAGE_SIZE = 4096
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# e820 types (arch/x86/include/asm/e820/types.h); multiboot uses 1..5 with the same meaning.
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4
E820_UNUSABLE = 5
E820_PMEM = 7
E820_PRAM = 12

E820_NAMES = {
    E820_RAM: "System RAM",
    E820_RESERVED: "reserved",
    E820_ACPI: "ACPI Tables",
    E820_NVS: "ACPI Non-volatile Storage",
    E820_UNUSABLE: "Unusable memory",
    E820_PMEM: "Persistent Memory",
    E820_PRAM: "Persistent Memory (legacy)",
}


class Role(StrEnum):
    """What a segment holds. The value is the name in plan.json, segment file names and --dry-run."""

    KERNEL = "kernel"
    INITRD = "initrd"
    CMDLINE = "cmdline"
    BOOT_PARAMS = "boot-params"  # the zero page
    SETUP_DATA = "setup-data"  # the setup_data chain
    EFI_MEMMAP = "efi-memmap"
    BOOT_NOTES = "boot-notes"  # ELF boot notes (--args-elf)
    MBI = "mbi"  # multiboot information
    MODULE = "module"  # a multiboot module
    ACPI = "acpi"  # XSDT and table copies for a multiboot target on a UEFI machine
    BIOS_DATA = "bios-data"
    EBDA = "ebda"
    ELFCOREHDR = "elfcorehdr"
    BACKUP = "backup"  # kdump: where the purgatory copies low memory
    PURGATORY = "purgatory"
    MAP_ONLY = "map-only"  # Xen maps the range for the new image, copies and zeroes nothing


MAP_ONLY = Role.MAP_ONLY


class ArgsStyle(StrEnum):
    """What an ELF kernel is handed (--args-linux: a zero page, --args-elf: ELF boot notes, --args-none)."""

    LINUX = "linux"
    ELF = "elf"
    NONE = "none"


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def align_down(value: int, align: int) -> int:
    return value // align * align


@dataclass(frozen=True, slots=True, order=True)
class Range:
    """Physical address range [start, start + size)."""

    start: int
    size: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.size < 0:
            raise ValueError(f"negative range {self.start:#x}+{self.size:#x}")

    @classmethod
    def between(cls, start: int, end: int) -> Range:
        return cls(start, max(0, end - start))

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def last(self) -> int:
        return self.start + self.size - 1

    def overlaps(self, other: Range) -> bool:
        return self.start < other.end and other.start < self.end

    def contains(self, other: Range) -> bool:
        return self.start <= other.start and other.end <= self.end

    def intersect(self, other: Range) -> Range | None:
        start, end = max(self.start, other.start), min(self.end, other.end)
        return Range(start, end - start) if start < end else None

    def minus(self, other: Range) -> list[Range]:
        """What is left of self once other is taken out (0, 1 or 2 pieces)."""
        if not self.overlaps(other):
            return [self]
        pieces = []
        if self.start < other.start:
            pieces.append(Range.between(self.start, other.start))
        if other.end < self.end:
            pieces.append(Range.between(other.end, self.end))
        return pieces

    def __str__(self) -> str:
        return f"[{self.start:#x}, {self.end:#x})"


@dataclass(frozen=True, slots=True, order=True)
class MemRegion:
    """One entry of a memory map: a range and its e820 type."""

    range: Range
    type: int

    @property
    def is_ram(self) -> bool:
        return self.type == E820_RAM

    @property
    def type_name(self) -> str:
        return E820_NAMES.get(self.type, f"type {self.type}")


@dataclass(frozen=True, slots=True)
class Segment:
    """What one kexec segment holds: `data` copied to `mem`, zero-filled up to `memsz`."""

    role: Role
    mem: int
    memsz: int
    data: Any = field(repr=False, compare=False)  # bytes-like (bytes, memoryview of an mmap)
    what: str = ""  # a few words for --dry-run: the file name, "zero page", ...

    @property
    def bufsz(self) -> int:
        return len(self.data)

    @property
    def range(self) -> Range:
        return Range(self.mem, self.memsz)


@dataclass(frozen=True, slots=True)
class LinuxEntry:
    """Where a Linux target gets control: the 64-bit entry and the zero page handed in rsi."""

    boot_params: int
    kernel_entry: int


@dataclass(frozen=True, slots=True)
class MultibootEntry:
    """Where a multiboot target gets control: eax = magic, ebx = info."""

    magic: int
    info: int
    entry: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a backend needs to load an image; printed by --dry-run, saved by --plan-out."""

    entry: int
    flags: int
    segments: tuple[Segment, ...]
    linux: LinuxEntry | None = None
    multiboot: MultibootEntry | None = None
    notes: tuple[str, ...] = ()

    @property
    def crash(self) -> bool:
        return bool(self.flags & KEXEC_ON_CRASH)


@dataclass(frozen=True, slots=True)
class PurgatoryOptions:
    """kexec-tools' purgatory switches (-i, --console-serial, --serial, --serial-baud, --console-vga, --reset-vga)."""

    checks: bool = True
    console_serial: bool = False
    serial_port: int = 0x3F8
    serial_baud: int = 115200
    console_vga: bool = False
    reset_vga: bool = False


@dataclass(frozen=True, slots=True)
class Backup:
    """kdump: the purgatory copies size bytes from src to dst after verification, before the hand-off (crash.py
    picks the range, the purgatory does the copy)."""

    src: int
    dst: int
    size: int


@dataclass(frozen=True, slots=True)
class Module:
    """A multiboot module: its bytes and its command line (which starts with its name)."""

    name: str
    data: Any = field(repr=False)
    cmdline: str = ""


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What the user asked to load, with every file already read (bytes or mmap views)."""

    kernel: Any = field(repr=False)  # bytes-like, decompressed
    kernel_name: str = "kernel"
    cmdline: str = ""
    initrd: Any = field(default=None, repr=False)
    initrd_name: str = ""
    modules: tuple[Module, ...] = ()
    image_type: str | None = None  # --type
    args_style: ArgsStyle | None = None  # None: the image kind's default
    crash: bool = False  # -p
    purgatory: PurgatoryOptions = PurgatoryOptions()
    rng_seed: bytes | None = field(default=None, repr=False)  # 32 random bytes for SETUP_RNG_SEED, or None
    noefi: bool = False  # --noefi: hand the next kernel no EFI state (efi_info, SETUP_EFI), as kexec-tools
    hotplug: bool = False  # --hotplug (-p): the kernel rewrites the elfcorehdr when CPUs or memory come and go
    dtb: bytes | None = field(default=None, repr=False)  # --dtb: a flattened device tree for SETUP_DTB
    pass_memmap: bool = False  # --pass-memmap-cmdline (-p): the crash kernel's map as memmap= on its command line
    # several initrds (--initrd more than once, a UKI's .ucode and .initrd): initramfs.InitrdPart values, joined
    # in order, each padded to 4 bytes; when set, `initrd` is None
    initrd_parts: tuple[Any, ...] = ()
    cmdline_given: bool = True  # False: no --append/--reuse-cmdline, so a UKI's .cmdline is used
    uki_profile: int | None = None  # --uki-profile=N: the UKI profile to boot (None: the first, as systemd-stub)
    uki_addons: tuple[str, ...] = ()  # command lines of the UKI's addons (*.addon.efi), appended in this order
    uki_sidecars: tuple[Any, ...] = ()  # initramfs.InitrdParts systemd-stub makes of *.cred / *.raw beside the UKI
    uki_addon_parts: tuple[tuple[str, Any], ...] = ()  # ("ucode" | "initrd", initramfs.InitrdPart) of the UKI's addons, in addon order


@dataclass(frozen=True, slots=True)
class IomemEntry:
    """One line of /proc/iomem: inclusive end as printed, nesting depth from the indentation."""

    range: Range
    name: str
    depth: int = 0


@dataclass(frozen=True, slots=True)
class XenFacts:
    """What Xen reports to its dom0 (kexec_get_range); machine addresses."""

    crash_area: Range | None = None
    cpu_notes: tuple[tuple[int, Range], ...] = ()  # (physical CPU, note buffer)
    vmcoreinfo: Range | None = None


@dataclass(frozen=True, slots=True)
class KernelText:
    """The running kernel's text mapping (kdump's kernel-text PT_LOAD): _text's virtual and physical address."""

    vaddr: int
    paddr: int
    size: int


@dataclass(frozen=True, slots=True)
class KexecSysfs:
    """The kernel's kexec files (Documentation/ABI/testing/sysfs-kernel-kexec-kdump). Linux 6.19+ has them in
    /sys/kernel/kexec/ (loaded, crash_loaded, crash_size, crash_elfcorehdr_size, crash_cma_ranges) and keeps
    the old names in /sys/kernel as symlinks; older kernels have only /sys/kernel/kexec_loaded,
    kexec_crash_loaded, kexec_crash_size and (6.5+, CONFIG_CRASH_HOTPLUG) crash_elfcorehdr_size.
    None: the file is not there."""

    directory: str = ""  # "/sys/kernel/kexec" (6.19+) or "/sys/kernel" (the old names): where `loaded` was read
    loaded: bool | None = None
    crash_loaded: bool | None = None
    crash_size: int | None = None  # bytes reserved for the crash kernel (crashk_res + crashk_low_res)
    crash_elfcorehdr_size: int | None = None  # program-header bytes the kernel needs for an updatable elfcorehdr
    crash_cma_ranges: tuple[Range, ...] = ()  # crashkernel=...,cma reservations (not in /proc/iomem)
    cpu_crash_hotplug: int | None = None  # /sys/devices/system/cpu/crash_hotplug (1: the loaded image is updated)
    memory_crash_hotplug: int | None = None  # /sys/devices/system/memory/crash_hotplug

    @property
    def hotplug_capable(self) -> bool:
        """The kernel can update a crash image's elfcorehdr (CONFIG_CRASH_HOTPLUG): the files are there."""
        return self.crash_elfcorehdr_size is not None and (self.cpu_crash_hotplug is not None
                                                           or self.memory_crash_hotplug is not None)


@dataclass(frozen=True, slots=True)
class EfiRuntimeRegion:
    """One /sys/firmware/efi/runtime-map/N: an EFI memory descriptor the running kernel keeps for runtime
    services, with the virtual address it mapped the region at (SetVirtualAddressMap)."""

    type: int  # EFI_MEMORY_TYPE (5 runtime code, 6 runtime data, 11 MMIO, ...)
    phys_addr: int
    virt_addr: int
    num_pages: int  # 4 KiB EFI pages
    attribute: int  # EFI_MEMORY_* bits; bit 63 EFI_MEMORY_RUNTIME

    @property
    def range(self) -> Range:
        return Range(self.phys_addr, self.num_pages * PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class EfiFacts:
    """A UEFI boot as the running kernel sees it (issue 11): its zero page's efi_info and /sys/firmware/efi.
    Absent (SystemFacts.efi None) on a BIOS boot, in a Xen dom0, and in snapshots saved before EFI facts."""

    loader_signature: str = ""  # efi_info: "EL64" (64-bit firmware), "EL32"; "" when boot_params had none
    systab: int = 0  # efi_info.efi_systab | efi_systab_hi << 32: the system table's physical address
    memdesc_size: int = 0  # efi_info: the firmware's descriptor stride
    memdesc_version: int = 0
    memmap: int = 0  # efi_info: where the running kernel's loader put its EFI memory map
    memmap_size: int = 0
    fw_vendor: int | None = None  # /sys/firmware/efi/fw_vendor (physical)
    runtime: int | None = None  # /sys/firmware/efi/runtime (physical on a firmware boot, virtual after kexec)
    config_table: int | None = None  # /sys/firmware/efi/config_table (physical)
    platform_size: int | None = None  # /sys/firmware/efi/fw_platform_size: 64, or 32 (mixed mode)
    smbios: int | None = None  # SMBIOS= of /sys/firmware/efi/systab (the 32-bit entry point)
    smbios3: int | None = None  # SMBIOS3= (the 64-bit entry point)
    runtime_map: tuple[EfiRuntimeRegion, ...] | None = None  # None: no /sys/firmware/efi/runtime-map
    # The static ACPI tables but DSDT and FACS (which FACP points at), as /sys/firmware/acpi/tables/NAME gives
    # them, in name order; None when unreadable. A multiboot kernel on a UEFI machine (Xen) finds ACPI only in
    # the BIOS areas, so kexloader hands it copies under an RSDP of its own (kexloader/legacybios.py).
    acpi_tables: tuple[tuple[str, bytes], ...] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SystemFacts:
    """What a plan needs to know about the machine it will run on. Read live or loaded from a snapshot."""

    memmap: tuple[MemRegion, ...]  # firmware map (/sys/firmware/memmap), else /proc/iomem
    boot_params: bytes | None = field(default=None, repr=False)  # running kernel's zero page, 4096 bytes
    cmdline: str = ""  # /proc/cmdline
    iomem: tuple[IomemEntry, ...] = ()
    acpi_rsdp: int | None = None  # from boot_params or /sys/firmware/efi/systab
    source: str = ""  # "live /", "snapshot fixtures/x.json"
    # kdump (-p) sources, Linux host (Linux Documentation/ABI/testing/sysfs-devices-system-cpu 'crash_notes',
    # sysfs-kernel-vmcoreinfo; the PT_LOADs the kernel's own crash_prepare_elf64_headers emits):
    crash_notes: tuple[tuple[int, Range], ...] = ()  # (cpu, note buffer) from /sys/devices/system/cpu/cpuN
    vmcoreinfo: Range | None = None  # /sys/kernel/vmcoreinfo: the VMCOREINFO note buffer
    kernel_text: KernelText | None = None  # from /proc/kcore, else /proc/kallsyms + /proc/iomem
    page_offset: int | None = None  # direct-map base (randomized by KASLR), from /proc/kcore
    os_release: str = ""  # /proc/sys/kernel/osrelease of the running kernel
    xen: XenFacts | None = None  # set in a Xen dom0: memmap is then the machine map and images go to Xen
    efi: EfiFacts | None = None  # a UEFI boot's EFI state (kexloader/efi.py); None: BIOS, or not known
    kexec: KexecSysfs | None = None  # the kexec sysfs files (status, crash size, hotplug, CMA crash ranges)

    def ram(self) -> tuple[Range, ...]:
        return tuple(r.range for r in self.memmap if r.is_ram)

    def crash_regions(self) -> tuple[Range, ...]:
        if self.xen is not None:
            return (self.xen.crash_area,) if self.xen.crash_area else ()
        return tuple(e.range for e in self.iomem if e.name == "Crash kernel")

    def crash_size(self) -> int:
        """--print-ckr-size: the crash kernel region's size. kexec-tools prints the last "Crash kernel" range
        of /proc/iomem (with crashkernel=X,high + Y,low, the high one), which is what the facts say first;
        without a readable /proc/iomem, the kernel's own crash_size (/sys/kernel/kexec/crash_size, else
        /sys/kernel/kexec_crash_size)."""
        regions = self.crash_regions()
        if regions:
            return regions[-1].size
        if self.xen is None and self.kexec is not None and self.kexec.crash_size is not None:
            return self.kexec.crash_size
        return 0

    def crash_cma_ranges(self) -> tuple[Range, ...]:
        """crashkernel=SIZE,cma reservations (Linux 6.17+): RAM the running kernel lends to movable pages only;
        the crash kernel gets it as RAM and the dump leaves it out, as the kernel's own kexec_file_load does."""
        return self.kexec.crash_cma_ranges if self.kexec is not None and self.xen is None else ()
