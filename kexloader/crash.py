"""kdump: what a crash kernel needs besides its image (Linux Documentation/admin-guide/kdump/kdump.rst; the
segments are those kexec-tools loads for -p: behaviour, not code).

* The crash region: the last "Crash kernel" range of /proc/iomem (kexec-tools' choice; with
  `crashkernel=X,high` + `,low` the last one is the high, main reservation the kernel checks segments
  against). Every segment and the entry must lie in it; its lowest MiBs stay free for the control pages
  the kernel allocates in the holes at load time.
* The ELF core header (`elfcorehdr=`): ET_CORE, one PT_NOTE per CPU crash-note buffer, one for VMCOREINFO,
  a PT_LOAD for the kernel text mapping and one per System RAM range with the crash regions carved out.
  The builder (`core_header`) takes plain ranges, so the Xen dom0 path can feed it Xen's CPU notes,
  VMCOREINFO_XEN and the machine memory map (Xen docs/misc/kexec_and_kdump.txt) through `ram_loads` and `CoreSources`.
* The crash kernel's memory map: the crash regions as RAM minus the elfcorehdr and backup segments, low
  memory (see `low_memory_scheme`), and the ACPI/NVS/reserved/persistent ranges kept with their types.
* Command-line additions, appended as kexec-tools does: `acpi_rsdp=0x...` (always: kexec-tools adds it only
  when it hands over no EFI state, see docs/kexec-tools-differences.md) and `elfcorehdr=<KiB>K`.
* crashkernel=SIZE,cma (Linux 6.17+): the CMA ranges (/sys/kernel/kexec/crash_cma_ranges; they are not in
  /proc/iomem) are treated as the kernel's kexec_file_load treats them (arch/x86/kernel/crash.c): left out of
  the dump's PT_LOADs (elf_header_exclude_ranges) and given to the crash kernel as RAM
  (crash_setup_memmap_entries). The running kernel lends them to movable pages only, so the dump loses user
  pages, never kernel data; the kernel waits for DMA into them to stop before it starts the crash kernel.
* --hotplug (`KEXEC_UPDATE_ELFCOREHDR`, Linux 6.5+ with CONFIG_CRASH_HOTPLUG): when CPUs or memory come or
  go the kernel writes its own core header over ours, so the elfcorehdr segment is sized for the most the
  kernel may write (`crash_elfcorehdr_size` program headers + the ELF header, the size its own kexec_file
  path reserves) and is left out of the purgatory's digest. The kernel finds the segment by the ELF magic at
  its start (crash_handle_hotplug_event), which ours has.

Pure functions over SystemFacts and Layout; nothing here reads the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import NoCrashRegionError, PlacementError, SystemFactsError, UsageError
from .formats import bzimage as bz
from .formats import elfcore
from .memory import Layout, SegmentData, merge, subtract
from .model import (E820_ACPI, E820_NVS, E820_PMEM, E820_PRAM, E820_RAM, E820_RESERVED, Backup, GiB, KiB, MemRegion,
                    MiB, PAGE_SIZE, Plan, Range, Role, SystemFacts, align_up)

# Direct-map base of x86-64 with 4-level paging since Linux 4.20, used when /proc/kcore could not tell the
# randomized one. A wrong p_vaddr does not matter to makedumpfile or /proc/vmcore (they use VMCOREINFO and
# physical addresses), only to tools that read the core's virtual addresses directly (gdb).
DEFAULT_PAGE_OFFSET = 0xFFFF888000000000
LOW_MEMORY = Range(0, 1 * MiB)
BACKUP_SOURCE_LIMIT = 0xA0000  # conventional memory ends at 640 KiB; above it are VGA and ROMs
KEPT_TYPES = (E820_ACPI, E820_NVS, E820_RESERVED, E820_PMEM, E820_PRAM)
CONTROL_RESERVE_MIN = 2 * MiB

SCHEME_REUSE = "reuse"  # exclude [0, 1 MiB) from the dump and give it to the crash kernel (kexec_file's way)
SCHEME_BACKUP = "backup"  # purgatory copies low RAM into a backup segment; the dump reads it there
FIRST_MIB_RESERVED_SINCE = (5, 13)  # "x86/setup: Always reserve the first 1M of RAM"


# ---------------------------------------------------------------------------------------- the ELF header

@dataclass(frozen=True, slots=True)
class CoreLoad:
    """One PT_LOAD: `size` bytes of the crashed system's memory at physical `paddr`, seen at virtual `vaddr`;
    the dump reads them from physical `offset` (= paddr, or where the backup copy put them)."""

    paddr: int
    size: int
    vaddr: int
    offset: int


@dataclass(frozen=True, slots=True)
class CoreSources:
    """What an ELF core header describes, in program-header order."""

    notes: tuple[Range, ...]  # PT_NOTE buffers: one per CPU, then VMCOREINFO (Linux or Xen)
    loads: tuple[CoreLoad, ...]  # kernel text (Linux host only), then RAM
    machine: int = elfcore.EM_X86_64


def core_header(src: CoreSources) -> bytes:
    """The ELF64 ET_CORE header the kdump kernel reads at elfcorehdr= (Linux fs/proc/vmcore.c)."""
    phdrs = [elfcore.Phdr(elfcore.PT_NOTE, 0, r.start, 0, r.start, r.size, r.size, 0) for r in src.notes]
    phdrs += [elfcore.Phdr(elfcore.PT_LOAD, elfcore.PF_R | elfcore.PF_W | elfcore.PF_X, ld.offset, ld.vaddr,
                           ld.paddr, ld.size, ld.size, 0) for ld in src.loads]
    try:
        return elfcore.build_core(phdrs, machine=src.machine)
    except elfcore.ElfCoreError as e:  # e.g. more CPU notes and RAM ranges than an ELF header can count
        raise SystemFactsError(f"cannot describe this machine in a kdump ELF core header: {e}") from None


def ram_loads(ram: Sequence[Range], exclude: Sequence[Range], page_offset: int,
              moved: tuple[Range, int] | None = None) -> tuple[CoreLoad, ...]:
    """One PT_LOAD per piece of `ram` left once `exclude` is carved out, p_vaddr = page_offset + paddr.

    moved = (source, destination): memory of `source` is read from the copy at `destination` (the backup)."""
    loads = []
    for piece in subtract(ram, exclude):
        offset = piece.start
        if moved is not None and moved[0].contains(piece):
            offset = moved[1] + (piece.start - moved[0].start)
        loads.append(CoreLoad(piece.start, piece.size, (page_offset + piece.start) % (1 << 64), offset))
    return tuple(loads)


# ------------------------------------------------------------------------------------ the crash region

def crash_region(facts: SystemFacts) -> Range:
    """The region segments go in: the last "Crash kernel" range, as kexec-tools chooses."""
    regions = facts.crash_regions()
    if not regions:
        raise NoCrashRegionError(
            "no crash kernel region is reserved (no \"Crash kernel\" in /proc/iomem)",
            hint="boot the kernel (or Xen) with crashkernel=256M, or crashkernel=SIZE@BASE at a fixed address, "
                 "then load the crash kernel again")
    return regions[-1]


def control_reserve(facts: SystemFacts) -> int:
    """Bytes of the crash region left free for the kernel's control pages: the relocation code page, the
    identity map it builds of all RAM (one page-directory page per GiB without 1 GiB pages, plus upper
    levels) and the VMCOREINFO safe copy (Linux kernel/kexec_core.c, kimage_alloc_crash_control_pages).
    At least 2 MiB."""
    top = max((r.end for r in facts.ram()), default=4 * GiB)
    pages = -(-top // GiB) + 64
    return max(CONTROL_RESERVE_MIN, align_up(pages * PAGE_SIZE, MiB))


def usable(facts: SystemFacts, window: Range) -> list[Range]:
    """Where a crash plan may put segments: the crash region inside `window` (--mem-min/--mem-max), without
    its lowest `control_reserve` bytes."""
    region = crash_region(facts)
    room = region.intersect(window)
    if room is None:
        raise PlacementError(f"the crash kernel region {region} is outside --mem-min/--mem-max {window}")
    reserve = Range(region.start, min(control_reserve(facts), region.size))
    return subtract([room], [reserve])


def shortfall(facts: SystemFacts, window: Range, replan: Callable[[list[Range]], Plan],
              error: PlacementError) -> PlacementError:
    """A 'does not fit' error that says by how much: plan again in a pretend region that reaches down to
    16 MiB and measure how far below the real region's top the segments went."""
    region = crash_region(facts)
    top = min(region.end, window.end)
    pretend = [Range.between(16 * MiB, top)]
    try:
        trial = replan(pretend)
    except Exception:  # noqa: BLE001 - the pretend plan is only a measurement; keep the real error
        return error
    lowest = min(s.mem for s in trial.segments)
    need = top - lowest + control_reserve(facts)
    have = region.size
    if need <= have:
        return error
    short = need - have
    return PlacementError(
        f"the crash kernel does not fit in the crash kernel region {region} ({have // MiB} MiB): it needs about "
        f"{-(-need // MiB)} MiB with {control_reserve(facts) // MiB} MiB for the kernel's control pages, "
        f"{-(-short // MiB)} MiB more",
        hint=f"reserve more with crashkernel={-(-(have + short) // (64 * MiB)) * 64}M, or use a smaller "
             "crash kernel or initrd")


# ----------------------------------------------------------------------------------------- low memory

def kernel_version(release: str | None) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", release or "")
    return (int(m[1]), int(m[2])) if m else None


def low_memory_scheme(running_release: str, target_release: str | None) -> tuple[str, str]:
    """(scheme, why) for the first MiB.

    The question is whether the *crashed* kernel keeps anything of its own in low memory. Since Linux 5.13
    ("x86/setup: Always reserve the first 1M of RAM") x86 kernels reserve all of [0, 1 MiB) and allocate
    nothing there but their real-mode trampoline, so the dump loses nothing if that memory is left out of
    the PT_LOADs and handed to the crash kernel, which needs low memory for its own trampoline: the kernel's
    own kexec_file loader does exactly that. An older kernel may have placed page tables or other data
    there; then the purgatory copies conventional memory into a backup segment before the crash kernel
    runs, and the PT_LOAD for it points at the copy (kexec-tools' scheme; it works for every kernel).

    So the running kernel's release decides. When it is unknown (a snapshot without it), the crash kernel's
    own version string (the bzImage header's kernel_version, an ELF's build note) stands in: kdump kernels
    are almost always the running kernel's build. When neither is known: the backup copy, which is always
    correct. The *target* kernel's age does not matter for booting: both schemes give it low RAM."""
    for what, release in (("running kernel", running_release), ("crash kernel", target_release)):
        version = kernel_version(release)
        if version is None or release is None:
            continue
        if version >= FIRST_MIB_RESERVED_SINCE:
            return SCHEME_REUSE, (f"{what} {release.split()[0]} reserves the first MiB (5.13+): it is left out "
                                  "of the dump and given to the crash kernel")
        return SCHEME_BACKUP, (f"{what} {release.split()[0]} predates 5.13 and may use the first MiB: the "
                               "purgatory copies it to a backup segment")
    return SCHEME_BACKUP, "kernel version unknown: the purgatory copies low memory to a backup segment"


# ------------------------------------------------------------------------------------ Linux host sources

def system_ram(facts: SystemFacts) -> list[Range]:
    """RAM the running kernel uses: "System RAM" resources of /proc/iomem (also "System RAM (kmem)"), as the
    kernel's own elfcorehdr does; the firmware map when iomem is not known."""
    ram = [e.range for e in facts.iomem if e.name.startswith("System RAM")]
    return merge(ram) if ram else merge(facts.ram())


def linux_core_sources(facts: SystemFacts, scheme: str, backup: Range | None,
                       source: Range | None) -> tuple[CoreSources, list[str]]:
    """CoreSources of the running Linux kernel (what the kernel's own crash_prepare_elf64_headers uses), and
    notes for --dry-run."""
    notes = []
    if not facts.crash_notes:
        raise SystemFactsError("no CPU crash notes (/sys/devices/system/cpu/cpuN/crash_notes): the running kernel "
                               "has no kdump support, or these facts were read without root or from an old "
                               "snapshot", hint="run as root, or save the snapshot again")
    note_ranges = [r for _, r in facts.crash_notes]
    if facts.vmcoreinfo is not None:
        note_ranges.append(facts.vmcoreinfo)
    else:
        notes.append("kdump: no /sys/kernel/vmcoreinfo: makedumpfile will need the vmlinux (-x)")
    page_offset = facts.page_offset
    if page_offset is None:
        page_offset = DEFAULT_PAGE_OFFSET
        notes.append(f"kdump: direct-map base unknown (no /proc/kcore): PT_LOAD p_vaddr uses {page_offset:#x}")
    loads: list[CoreLoad] = []
    kt = facts.kernel_text
    if kt is not None:
        loads.append(CoreLoad(kt.paddr, kt.size, kt.vaddr, kt.paddr))
    else:
        notes.append("kdump: kernel text mapping unknown (no /proc/kcore or /proc/kallsyms): no PT_LOAD for it")
    exclude = list(facts.crash_regions()) + list(facts.crash_cma_ranges())
    moved = None
    if scheme == SCHEME_REUSE:
        exclude.append(LOW_MEMORY)
    elif source is not None and backup is not None:
        moved = (source, backup.start)
    loads += ram_loads(system_ram(facts), exclude, page_offset, moved)
    return CoreSources(tuple(note_ranges), tuple(loads)), notes


def xen_core_sources(facts: SystemFacts, backup: Range | None,
                     source: Range | None) -> tuple[CoreSources, list[str]]:
    """CoreSources of a Xen host seen from dom0 (Xen docs/misc/kexec_and_kdump.txt; what kexec-tools builds
    there): Xen's per-pCPU notes and VMCOREINFO_XEN (then dom0's VMCOREINFO, which kexec-tools leaves out), no kernel-text PT_LOAD, the machine map's RAM minus the crash area,
    p_vaddr in Linux's default direct map (meaningless for Xen, kept for tools that expect one)."""
    xen = facts.xen
    if xen is None:
        raise SystemFactsError("not a Xen host: no Xen facts for the crash dump")
    if not xen.cpu_notes:
        raise SystemFactsError("Xen reports no CPU crash note buffers (KEXEC_RANGE_MA_CPU)",
                               hint="boot Xen with crashkernel=256M")
    notes = [r for _, r in xen.cpu_notes] + ([xen.vmcoreinfo] if xen.vmcoreinfo else [])
    said = ["kdump: Xen host: notes and RAM from the hypervisor (machine map)"]
    if facts.vmcoreinfo is not None:
        # dom0's own VMCOREINFO too (kexec-tools gives Xen's only): without it nothing in the dump says where
        # dom0's log is (makedumpfile: "Can't find some symbols for log_buf"). A PV dom0's /sys/kernel/vmcoreinfo
        # gives the note's machine address (arch/x86/xen/mmu_pv.c paddr_vmcoreinfo_note); vmcore-dmesg finds
        # dom0's pages through the p2m Xen's crash-info note points at.
        notes.append(facts.vmcoreinfo)
        said.append(f"kdump: dom0's VMCOREINFO at {facts.vmcoreinfo} goes into the dump too")
    moved = (source, backup.start) if source is not None and backup is not None else None
    loads = ram_loads(system_ram(facts), list(facts.crash_regions()), DEFAULT_PAGE_OFFSET, moved)
    return CoreSources(tuple(notes), loads), said


def backup_source(facts: SystemFacts) -> Range | None:
    """The conventional memory the purgatory copies: System RAM below 640 KiB, from its first to last byte."""
    low = [p for r in system_ram(facts) if (p := r.intersect(Range(0, BACKUP_SOURCE_LIMIT)))]
    return Range.between(low[0].start, low[-1].end) if low else None


def crash_memmap(facts: SystemFacts, low_ram: Sequence[Range], taken: Sequence[Range]) -> tuple[MemRegion, ...]:
    """The crash kernel's e820: low_ram and every crash region as RAM minus `taken` (elfcorehdr, backup), the
    crash CMA ranges as RAM, plus the firmware map's ACPI, NVS, reserved and persistent-memory ranges with
    their types."""
    ram = subtract(list(low_ram) + list(facts.crash_regions()), taken)
    ram = [r for r in ram if r.size >= PAGE_SIZE or r.start < LOW_MEMORY.end]
    ram = merge(ram + list(facts.crash_cma_ranges()))
    regions = [MemRegion(r, E820_RAM) for r in ram]
    ram_ranges = merge(ram)
    for m in facts.memmap:
        if m.type in KEPT_TYPES:
            for piece in subtract([m.range], ram_ranges):  # never let a kept range overlap the RAM we give
                regions.append(MemRegion(piece, m.type))
    return tuple(sorted(regions))


MEMMAP_SUFFIX = {E820_RAM: "@", E820_ACPI: "#", E820_NVS: "#", E820_PRAM: "!"}  # memmap= (kernel-parameters)
MEMMAP_SMALLEST_RAM_KIB = 100  # kexec-tools leaves out RAM pieces smaller than this: the command line is short


def memmap_parameters(memmap: Sequence[MemRegion]) -> tuple[str, ...]:
    """--pass-memmap-cmdline: the crash kernel's map as kernel parameters, as kexec-tools writes them:
    memmap=exactmap, then memmap=SIZEK@STARTK for RAM, # for ACPI data and NVS, ! for legacy persistent
    memory, in KiB (RAM rounded inwards, ACPI outwards, so the kernel never takes a byte that is not RAM). The
    kernel then uses this map instead of the e820."""
    out = ["memmap=exactmap"]
    for m in memmap:
        suffix = MEMMAP_SUFFIX.get(m.type)
        if suffix is None:
            continue
        if m.type == E820_RAM:
            start, end = -(-m.range.start // KiB), m.range.end // KiB
        else:
            start, end = m.range.start // KiB, -(-m.range.end // KiB)
        if m.type == E820_RAM and end - start < MEMMAP_SMALLEST_RAM_KIB:
            continue
        out.append(f"memmap={end - start}K{suffix}{start}K")
    return tuple(out)


# --------------------------------------------------------------------------------------- the whole setup

@dataclass(frozen=True)
class CrashSetup:
    """What a Linux planner adds for -p, once `prepare` has placed the elfcorehdr (and backup) segments."""

    cmdline_additions: tuple[str, ...]  # acpi_rsdp=, elfcorehdr=: the caller adds them to its Cmdline
    memmap: tuple[MemRegion, ...]  # the crash kernel's e820
    backup: Backup | None  # for the purgatory
    notes: tuple[str, ...]


def hotplug_header_size(facts: SystemFacts) -> int:
    """Bytes the elfcorehdr segment needs when the kernel may rewrite it (--hotplug): the ELF header plus the
    kernel's crash_elfcorehdr_size, which counts program headers for every possible CPU (NR_CPUS), VMCOREINFO,
    the kernel text and CONFIG_CRASH_MAX_MEMORY_RANGES memory ranges (arch_crash_get_elfcorehdr_size)."""
    k = facts.kexec
    if facts.xen is not None or k is None or not k.hotplug_capable or k.crash_elfcorehdr_size is None:
        raise UsageError("--hotplug: this kernel cannot update a loaded crash kernel on CPU or memory hotplug "
                         "(no /sys/kernel/kexec/crash_elfcorehdr_size or /sys/devices/system/{cpu,memory}/"
                         "crash_hotplug; Linux 6.5+ with CONFIG_CRASH_HOTPLUG)",
                         hint="leave out --hotplug and load the crash kernel again after CPUs or memory change")
    return elfcore.EHDR_SIZE + k.crash_elfcorehdr_size


def prepare(layout: Layout, facts: SystemFacts, *, target_release: str | None = None,
            hotplug: bool = False) -> CrashSetup:
    """Place the backup and elfcorehdr segments in `layout` (the crash region) and say what else kdump needs.

    hotplug: size the elfcorehdr segment for the header the kernel writes on CPU/memory hotplug."""
    if facts.xen is not None:  # what Xen keeps in low memory is not known here: always the copy
        scheme, why = SCHEME_BACKUP, "Xen host: the purgatory copies low memory to a backup segment"
    else:
        scheme, why = low_memory_scheme(facts.os_release, target_release)
    notes = [f"kdump: {why}"]
    source = backup_source(facts) if scheme == SCHEME_BACKUP else None
    backup_seg = None
    if source is not None:
        backup_seg = layout.place(Role.BACKUP, b"", memsz=source.size, what=f"copy of {source} made by the purgatory")
        backup = Backup(src=source.start, dst=backup_seg.mem, size=source.size)
        low_ram = [source]
        notes.append(f"kdump: the purgatory copies {source} to {backup_seg.range} before the crash kernel starts")
    else:
        backup = None
        low_ram = [p for r in system_ram(facts) if (p := r.intersect(LOW_MEMORY))]
    if facts.xen is not None:
        sources, more = xen_core_sources(facts, backup_seg.range if backup_seg else None, source)
    else:
        sources, more = linux_core_sources(facts, scheme, backup_seg.range if backup_seg else None, source)
    notes += more
    header = core_header(sources)
    room = None
    if hotplug:
        room = max(len(header), hotplug_header_size(facts))
        notes.append(f"kdump: --hotplug: the elfcorehdr segment has room for {room} bytes (crash_elfcorehdr_size "
                     "+ ELF header), the kernel rewrites it on CPU/memory hotplug; the purgatory does not verify it")
    if facts.crash_cma_ranges():
        notes.append("kdump: crash CMA " + ", ".join(str(r) for r in facts.crash_cma_ranges())
                     + ": left out of the dump, RAM for the crash kernel")
    hdr_seg = layout.place(Role.ELFCOREHDR, header, memsz=room,
                           what=f"ELF core header, {len(sources.notes)} PT_NOTE, {len(sources.loads)} PT_LOAD"
                                + (", room for hotplug" if hotplug else ""))
    added = []
    if facts.acpi_rsdp:
        added.append(f"acpi_rsdp={facts.acpi_rsdp:#x}")
    added.append(f"elfcorehdr={hdr_seg.mem // KiB}K")
    taken = [hdr_seg.range] + ([backup_seg.range] if backup_seg else [])
    return CrashSetup(tuple(added), crash_memmap(facts, low_ram, taken), backup, tuple(notes))


def bzimage_release(data: SegmentData) -> str | None:
    """The version string a bzImage points at (setup header kernel_version), when it reads as a release."""
    text = bz.kernel_version_string(data)
    return text if text and kernel_version(text) else None
