"""What every Linux planner does once the kernel and initrd are placed: kdump's additions, the command
line, setup_data, the zero page, the purgatory, and under Xen the map-only first MiB.

bzImage and vmlinux differ only in where their setup header comes from (the image's own, or a
synthetic one) and where the kernel's 64-bit entry is.
"""

from __future__ import annotations

import struct

from .. import bootparams, efiboot
from ..cmdline import Cmdline
from ..formats.bootparams import E820_MAX_ENTRIES_ZEROPAGE, SETUP_DTB, SETUP_E820_EXT, SETUP_EFI
from ..handoff import attach_purgatory
from ..memory import ADDRESS_LIMIT, Layout, validate
from ..kexec_abi import KEXEC_ARCH_X86_64, KEXEC_ON_CRASH, KEXEC_UPDATE_ELFCOREHDR
from ..model import GiB, LinuxEntry, LoadRequest, MiB, Plan, Range, Role, Segment, SystemFacts
from ..purgatory.program import Linux64Handoff

LOW_MEMORY = Range(0, 1 * MiB)
SMALL_SEGMENTS = Range(1 * MiB, 4 * GiB - 1 * MiB)  # zero page, command line, purgatory: low, above BIOS data
SETUP_RNG_SEED = 9  # struct setup_data type (arch/x86/include/uapi/asm/setup_data.h)
SETUP_DATA_SINCE = 0x0209  # boot protocol that introduced hdr.setup_data


def finish(layout: Layout, req: LoadRequest, facts: SystemFacts, usable: list[Range], *, header_page: bytes,
           capacity: int, what: str, target_release: str | None, initrd: Segment | None, kernel_entry: int,
           notes: list[str], zero_page_what: str = "zero page") -> Plan:
    """Place the rest of a Linux load in `layout` and return the validated plan.

    header_page: the first page of a bzImage (or a synthetic one) whose setup header the zero page copies."""
    user_line = Cmdline(req.cmdline)
    line = user_line.encode(capacity, what=what)
    kdump, small = None, SMALL_SEGMENTS
    if req.crash:
        from .. import crash  # the kdump code only for -p: a plain -l does not import it
        kdump = crash.prepare(layout, facts, target_release=target_release, hotplug=req.hotplug)
        additions = kdump.cmdline_additions + (crash.memmap_parameters(kdump.memmap) if req.pass_memmap else ())
        line = user_line.add(additions, "kdump").encode(capacity, what=what)
        notes += kdump.notes
        if not any(u.overlaps(SMALL_SEGMENTS) for u in usable):  # a crash region above 4 GiB (crashkernel=,high)
            small = Range.between(1 * MiB, ADDRESS_LIMIT)
    line_seg = layout.place(Role.CMDLINE, line, window=small, what=f"{len(line) - 1} bytes")

    # setup_data, chained in kexec-tools' order: RNG seed, then the e820 entries past 128, then EFI.
    memmap = kdump.memmap if kdump else facts.memmap
    records = []
    version = struct.unpack_from("<H", header_page, 0x206)[0]
    if req.rng_seed and version >= SETUP_DATA_SINCE:
        records.append((SETUP_RNG_SEED, req.rng_seed))  # as kexec-tools: seed the new kernel's RNG early
    e820_ext = bootparams.e820_extension(memmap)
    if e820_ext is not None:
        records.append((SETUP_E820_EXT, e820_ext))
        extra = len(e820_ext) // 20
        notes.append(f"e820: {E820_MAX_ENTRIES_ZEROPAGE + extra} entries, 128 in the zero page and "
                     f"{extra} in SETUP_E820_EXT")
    handover, efi_note = efiboot.decide(facts, kernel_flags=efiboot.xloadflags(header_page), noefi=req.noefi,
                                        what=what, memmap=memmap)
    if efi_note:
        notes.append(efi_note)
    screen_info = None
    if req.purgatory.reset_vga:  # the screen the purgatory leaves, not the one the running kernel booted with
        screen_info = bootparams.SCREEN_INFO_DEFAULT
        notes.append("--reset-vga: the purgatory sets VGA text mode 3 (80x25) before the hand-off, and the "
                     "next kernel's screen_info says so")
    elif screen := bootparams.describe_screen(facts.boot_params):
        notes.append(screen)
    efi_info = None
    if handover is not None:
        efi_info = efiboot.place(layout, handover, window=small)
        records.append((SETUP_EFI, handover.setup_data))
    if req.dtb is not None:  # --dtb: last, as kexec-tools' bzImage loader adds it after the others
        records.append((SETUP_DTB, req.dtb))
        notes.append(f"--dtb: a {len(req.dtb)}-byte device tree in SETUP_DTB")
    setup_data = bootparams.place_setup_data(layout, records, small)

    zero_page = bootparams.build_zero_page(
        header_page, cmdline=Range(line_seg.mem, len(line) - 1),
        initrd=Range(initrd.mem, initrd.bufsz) if initrd else None, memmap=memmap,
        running=facts.boot_params, acpi_rsdp=facts.acpi_rsdp, setup_data=setup_data, efi_info=efi_info,
        screen_info=screen_info)
    params = layout.place(Role.BOOT_PARAMS, zero_page, window=small, what=zero_page_what)

    handoff = Linux64Handoff(boot_params=params.mem, kernel_entry=kernel_entry)
    hotplug = req.crash and req.hotplug
    entry = attach_purgatory(layout, handoff, req.purgatory, window=small, backup=kdump.backup if kdump else None,
                             unhashed=(Role.ELFCOREHDR,) if hotplug else ())
    segments, checked = tuple(layout.segments), list(usable)
    if facts.xen is not None:
        # Xen maps only the segments for the new image, and startup_64 reads the BIOS data area and puts
        # its 5-level trampoline in low memory before it builds its own page tables: have Xen map the
        # first MiB as well, without copying or zeroing it.
        segments += (Segment(Role.MAP_ONLY, 0, LOW_MEMORY.size, b"", "first MiB, mapped for the kernel's early code"),)
        checked.append(LOW_MEMORY)
        notes.append("Xen target: the first MiB is mapped (not written) for the kernel's early code")
    # --hotplug: KEXEC_UPDATE_ELFCOREHDR, as kexec-tools on x86 (the newer KEXEC_CRASH_HOTPLUG_SUPPORT = 0x8 means
    # the same to x86 but 6.5-6.9 reject it)
    flags = KEXEC_ARCH_X86_64 | (KEXEC_ON_CRASH if req.crash else 0) | (KEXEC_UPDATE_ELFCOREHDR if hotplug else 0)
    result = Plan(entry=entry, flags=flags, segments=segments,
                  linux=LinuxEntry(boot_params=params.mem, kernel_entry=kernel_entry), notes=tuple(notes))
    validate(result, checked)
    return result
