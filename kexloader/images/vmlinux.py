"""ELF kernels (kexec-tools' elf-x86_64 type): a vmlinux, or any x86-64 ELF executable.

Each PT_LOAD goes at its physical address (p_paddr); an ET_DYN image is moved as a whole to
where the allocator finds room. The argument style says what the image gets at its entry:

  linux  (--args-linux)  a fresh zero page built around a synthetic setup header (there is none
                         in an ELF file), rsi = zero page, through the purgatory, at e_entry: the
                         64-bit boot protocol (boot.rst), which a vmlinux's startup_64 follows.
  elf    (--args-elf)    ELF boot notes in rdi, through the purgatory: kexec-tools' default for ELF
                         images (the boot-notes segment: loader name and version, command line).
  none   (--args-none)   no purgatory, no arguments: the old kernel jumps straight to e_entry.

kexec-tools defaults every ELF image to --args-elf, which a Linux vmlinux cannot use (it ignores
rdi and reads garbage through rsi), so distros add --args-linux. kexloader recognises a Linux
vmlinux (its "Linux" ELF notes, its Xen GUEST_OS note "linux", or linux_banner) and defaults it
to Linux arguments, saying so in the plan's notes (shown by --dry-run and -d).

An x86-64 vmlinux built with CONFIG_RELOCATABLE (every distro kernel) runs at any 2 MiB-aligned
physical address: startup_64 measures where it runs and fixes its page tables, and its virtual
addresses do not change. So when the p_paddr placement does not fit the usable memory (a kdump
crash region, --mem-min/--mem-max), a Linux vmlinux with Linux arguments is moved as a whole by a
2 MiB-aligned offset, and the plan's notes say so.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..cmdline import Cmdline
from ..errors import MalformedImageError, PlacementError, UnsupportedImageError, UsageError
from ..formats import bzimage as bz
from ..memory import ADDRESS_LIMIT, Layout, SegmentData, allocate, validate
from ..kexec_abi import KEXEC_ARCH_X86_64, KEXEC_ON_CRASH
from ..model import PAGE_SIZE, ArgsStyle, LoadRequest, MiB, Plan, Range, Role, SystemFacts, align_down, align_up
from .. import __version__
from ..formats import elfboot
from ..handoff import attach_purgatory
from ..purgatory.program import Linux64Handoff
from . import linuxboot
from .elfload import EM_386, EM_X86_64, ElfImage, read_elf

NAME = "elf-x86_64"

EM_486 = 6
ET_EXEC, ET_DYN, ET_CORE = 2, 3, 4
PT_INTERP = 3
KERNEL_ALIGN = 2 * MiB  # x86-64 startup_64 needs a 2 MiB-aligned physical load address (PMD_SIZE)

# The setup header kexec-tools fakes for an ELF kernel (init_linux_parameters): protocol 2.06, the
# first one with cmdline_size; initrd_addr_max is 2.03's default (boot.rst: "If this field is not
# present, the max address is 0x37FFFFFF").
SYNTHETIC_PROTOCOL = 0x0206
SYNTHETIC_INITRD_ADDR_MAX = 0x37FFFFFF
SYNTHETIC_CMDLINE_SIZE = 2047  # COMMAND_LINE_SIZE 2048 with its NUL

# Xen's ELF note XEN_ELFNOTE_GUEST_OS (xen/include/public/elfnote.h): "linux" in a Linux kernel.
XEN_ELFNOTE_GUEST_OS = 6
# The kernel's own "Linux" notes (include/linux/elfnote.h users): 0x100 carries UTS_RELEASE.
LINUX_ELFNOTE_BUILD_SALT = 0x100
BANNER = re.compile(rb"Linux version (\d+\.\d+[^\0\n]{0,400})")


# --- probes (kexec-tools' elf-x86_64 and elf-x86) ---------------------------------------------------

@dataclass(frozen=True)
class ElfHeader:
    elfclass: int  # 32 or 64
    elf_type: int
    machine: int
    entry: int
    phoff: int
    phentsize: int
    phnum: int


def elf_header(data: SegmentData) -> ElfHeader | None:
    """The fields of a little-endian ELF header that a probe needs, or None."""
    head = bytes(data[:64])
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[5] != 1:
        return None
    if head[4] == 2 and len(head) >= 64:
        e_type, machine, _, entry, phoff = struct.unpack_from("<HHIQQ", head, 16)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        return ElfHeader(64, e_type, machine, entry, phoff, phentsize, phnum)
    if head[4] == 1:
        e_type, machine, _, entry, phoff = struct.unpack_from("<HHIII", head, 16)
        phentsize, phnum = struct.unpack_from("<HH", head, 42)
        return ElfHeader(32, e_type, machine, entry, phoff, phentsize, phnum)
    return None


def _has_interp(data: SegmentData, h: ElfHeader) -> bool:
    """A PT_INTERP among the program headers that lie inside the file (a program, not a kernel)."""
    if h.phentsize < 4:
        return False
    for i in range(min(h.phnum, 4096)):
        at = h.phoff + i * h.phentsize
        if at + 4 > len(data):
            break
        if struct.unpack_from("<I", bytes(data[at:at + 4]))[0] == PT_INTERP:
            return True
    return False


def probe_x86_64(data: SegmentData) -> bool:
    """elf-x86_64: an ET_EXEC, ET_DYN or ET_CORE image for EM_X86_64 without PT_INTERP."""
    h = elf_header(data)
    return (h is not None and h.machine == EM_X86_64 and h.elf_type in (ET_EXEC, ET_DYN, ET_CORE)
            and not _has_interp(data, h))


def probe_x86(data: SegmentData) -> bool:
    """elf-x86: an ELF image for EM_386 or EM_486."""
    h = elf_header(data)
    return h is not None and h.machine in (EM_386, EM_486) and h.elf_type in (ET_EXEC, ET_DYN)


# --- what the image is ------------------------------------------------------------------------------

def _text(desc: bytes) -> str:
    return desc.split(b"\0", 1)[0].decode("ascii", "replace")


def linux_banner(data: SegmentData) -> str | None:
    """The kernel's linux_banner ("Linux version 6.1.0-... (...) #1 SMP ..."), if the image holds one."""
    blob = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    found = [m.group(0) for m in BANNER.finditer(blob)]
    # the kernel may hold a draft of the banner without the build number ("# SMP"): prefer "#1 SMP"
    best = next((b for b in found if re.search(rb"#\d", b)), found[0] if found else None)
    return best.decode("ascii", "replace").strip() if best else None


def linux_evidence(elf: ElfImage, data: SegmentData | None = None) -> str | None:
    """Why this ELF file is a Linux kernel, in a few words; None if nothing says so.

    The notes are cheap; the banner search reads the whole image, so `data` is looked at last."""
    for name, kind, desc in elf.notes:
        if name == "Linux":
            return 'its "Linux" ELF notes'
    for name, kind, desc in elf.notes:
        if name == "Xen" and kind == XEN_ELFNOTE_GUEST_OS and _text(desc).lower() == "linux":
            return 'its Xen GUEST_OS note "linux"'
    if data is not None and linux_banner(data):
        return "its linux_banner"
    return None


def kernel_release(elf: ElfImage) -> str | None:
    """UTS_RELEASE from the "Linux" note 0x100, if present."""
    for name, kind, desc in elf.notes:
        if name == "Linux" and kind == LINUX_ELFNOTE_BUILD_SALT and desc:
            return _text(desc) or None
    return None


def _release_for_crash(elf: ElfImage, data: SegmentData) -> str | None:
    """The kernel release ("6.1.0-56-amd64 ...") kdump's low-memory scheme depends on."""
    release = kernel_release(elf)
    if release:
        return release
    banner = linux_banner(data)  # reads the whole image: only when the notes do not say
    return banner.removeprefix("Linux version ") if banner else None


def choose_style(asked: ArgsStyle | str | None, elf: ElfImage, data: SegmentData,
                 name: str) -> tuple[ArgsStyle, str | None]:
    """(argument style, a note explaining a default) for this image; `asked` may be the style's name."""
    if asked is not None:
        try:
            return ArgsStyle(asked), None
        except ValueError:
            raise UsageError(f"unknown argument style {asked!r} (linux, elf or none)") from None
    why = linux_evidence(elf, data)
    if why:
        return ArgsStyle.LINUX, (f"{name}: a Linux vmlinux (recognised by {why}): using Linux arguments "
                                 "(--args-linux); kexec-tools would default to --args-elf, which Linux cannot use")
    return ArgsStyle.ELF, None


# --- placement --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placed:
    entry: int  # physical entry after any move
    delta: int  # how far the image moved from its p_paddr (0: where it asked to be)
    base: int
    end: int


def _entry_paddr(elf: ElfImage, name: str) -> tuple[int, str | None]:
    """e_entry as a physical address: inside a PT_LOAD's p_paddr range, or translated from its p_vaddr."""
    e = elf.entry
    if any(ld.paddr <= e < ld.paddr + ld.memsz for ld in elf.loads):
        return e, None
    for ld in elf.loads:
        if ld.vaddr <= e < ld.vaddr + ld.memsz:
            phys = ld.paddr + (e - ld.vaddr)
            return phys, f"{name}: e_entry {e:#x} is virtual; entering at its physical address {phys:#x}"
    raise MalformedImageError(f"{name}: entry point {e:#x} is in no loadable segment")


def _segments(elf: ElfImage, delta: int) -> list[tuple[int, int, bytes | memoryview]]:
    """(page-aligned mem, memsz, data) per PT_LOAD, moved by delta; a load that starts inside a page is
    padded in front with zeros (kexec wants page-aligned segments)."""
    out: list[tuple[int, int, bytes | memoryview]] = []
    for ld in elf.loads:
        paddr = ld.paddr + delta
        mem = align_down(paddr, PAGE_SIZE)
        data = ld.data if mem == paddr else bytes(paddr - mem) + bytes(ld.data)
        out.append((mem, align_up(paddr + ld.memsz, PAGE_SIZE) - mem, data))
    return out


def load_span(elf: ElfImage) -> tuple[int, int]:
    """The page-aligned physical range [base, end) the PT_LOAD segments cover."""
    base = align_down(min(ld.paddr for ld in elf.loads), PAGE_SIZE)
    end = align_up(max(ld.paddr + ld.memsz for ld in elf.loads), PAGE_SIZE)
    return base, end


def _fits(layout: Layout, elf: ElfImage, delta: int) -> bool:
    free = layout.free()
    return all(any(f.contains(Range(mem, size)) for f in free) for mem, size, _ in _segments(elf, delta))


def place_loads(layout: Layout, elf: ElfImage, name: str, *, movable: bool) -> tuple[Placed, list[str]]:
    """Put every PT_LOAD in `layout`: at p_paddr (ET_EXEC), or moved as a whole (ET_DYN; or ET_EXEC when
    `movable` and p_paddr does not fit). Returns where it went and notes."""
    notes: list[str] = []
    base, end = load_span(elf)
    if end > ADDRESS_LIMIT:
        raise UnsupportedImageError(f"{name}: loads up to {end:#x}, above the {ADDRESS_LIMIT:#x} kexec limit")
    entry, why = _entry_paddr(elf, name)
    if why:
        notes.append(why)
    delta = 0
    if elf.elf_type == "ET_DYN" or (movable and not _fits(layout, elf, 0)):
        align = max([KERNEL_ALIGN if movable else PAGE_SIZE] + [ld.align for ld in elf.loads
                                                               if ld.align and not ld.align & (ld.align - 1)])
        align = min(align, 1 << 30)
        # the move must keep each load's offset within its alignment, so move the aligned-down base
        start = align_down(base, align)
        try:
            spot = allocate(layout.free(), end - start, align=align, window=Range.between(1 * MiB, ADDRESS_LIMIT))
        except PlacementError as e:
            raise PlacementError(f"kernel ({name}): {e}", hint=e.hint) from None
        delta = spot.start - start
        if delta:
            notes.append(f"{name}: {'ET_DYN image' if elf.elf_type == 'ET_DYN' else 'p_paddr placement does not fit'}"
                         f"; moved by {delta:+#x} to [{base + delta:#x}, {end + delta:#x})"
                         + ("" if elf.elf_type == "ET_DYN" else " (needs a CONFIG_RELOCATABLE kernel)"))
    elif not _fits(layout, elf, 0):
        raise PlacementError(f"kernel ({name}): its segments at [{base:#x}, {end:#x}) (p_paddr) are not all inside "
                             "free usable memory", hint="usable: " + ", ".join(str(u) for u in layout.usable))
    for mem, size, data in _segments(elf, delta):
        layout.put(Role.KERNEL, data, mem, size, what=name)
    return Placed(entry + delta, delta, base + delta, end + delta), notes


# --- the synthetic setup header and the Linux hand-off ----------------------------------------------

def synthetic_setup() -> bytes:
    """The first 0x1000 bytes of a bzImage as kexec-tools fakes them for an ELF kernel: just the setup
    header (boot.rst), at protocol 2.06, its jump covering the header up to cmdline_size."""
    fields = {name: 0 for name in ("setup_sects", "root_flags", "syssize", "ram_size", "vid_mode", "root_dev",
                                   "realmode_swtch", "start_sys_seg", "kernel_version", "type_of_loader",
                                   "loadflags", "setup_move_size", "code32_start", "ramdisk_image",
                                   "ramdisk_size", "bootsect_kludge", "heap_end_ptr", "ext_loader_ver",
                                   "ext_loader_type", "cmd_line_ptr", "kernel_alignment",
                                   "relocatable_kernel", "min_alignment", "xloadflags", "hardware_subarch",
                                   "hardware_subarch_data", "payload_offset", "payload_length", "setup_data",
                                   "pref_address", "init_size", "handover_offset", "kernel_info_offset")}
    header_end = 0x23C  # end of cmdline_size, the last 2.06 field
    fields.update(jump=0xEB | (header_end - 0x202) << 8, version=SYNTHETIC_PROTOCOL,
                  initrd_addr_max=SYNTHETIC_INITRD_ADDR_MAX, cmdline_size=SYNTHETIC_CMDLINE_SIZE,
                  loadflags=bz.LOADED_HIGH)
    page = bytearray(0x1000)
    raw = bz.SetupHeader.build(fields)
    page[bz.SETUP_HEADER_OFFSET:bz.SETUP_HEADER_OFFSET + len(raw)] = raw
    return bytes(page)


def plan(req: LoadRequest, facts: SystemFacts, usable: list[Range]) -> Plan:
    """Lay out an x86-64 ELF kernel in `usable` memory (RAM, or the crash region for -p)."""
    name = req.kernel_name
    elf = read_elf(req.kernel, name, machines=(EM_X86_64,))
    if elf.interp:
        raise UnsupportedImageError(f"{name}: an ELF program (it has PT_INTERP), not a kernel")
    if elf.elf_type not in ("ET_EXEC", "ET_DYN"):
        raise UnsupportedImageError(f"{name}: an ELF {elf.elf_type} file, not an executable kernel")
    style, default_note = choose_style(req.args_style, elf, req.kernel, name)
    if req.crash and style != ArgsStyle.LINUX:  # only a zero page carries the crash memory map and elfcorehdr=
        raise UnsupportedImageError(f"{name}: elf-x86_64 images cannot be crash kernels",
                                    hint="load a Linux bzImage with -p")
    notes = [f"{name}: ELF{elf.elfclass} {elf.elf_type}, {len(elf.loads)} PT_LOAD, entry {elf.entry:#x}, "
             f"argument style {style}"]
    if default_note:
        notes.append(default_note)
    if style in (ArgsStyle.NONE, ArgsStyle.ELF) and req.initrd is not None:
        raise UsageError(f"{name}: --args-{style} has no way to pass an initrd",
                         hint="use --args-linux to pass an initrd to a Linux vmlinux")
    flags = KEXEC_ARCH_X86_64 | (KEXEC_ON_CRASH if req.crash else 0)
    movable = style == ArgsStyle.LINUX and linux_evidence(elf, req.kernel) is not None
    layout = Layout(usable)
    if style == ArgsStyle.LINUX:  # the command line is refused before anything is placed
        Cmdline(req.cmdline).check(SYNTHETIC_CMDLINE_SIZE, what=f"kernel ({name})")
    placed, more = place_loads(layout, elf, name, movable=movable)
    notes += more

    if style == ArgsStyle.NONE:
        if req.cmdline:
            notes.append(f"{name}: --args-none: the command line is not passed")
        notes.append(f"{name}: --args-none: no purgatory, the old kernel jumps to {placed.entry:#x}")
        result = Plan(entry=placed.entry, flags=flags, segments=tuple(layout.segments), notes=tuple(notes))
        validate(result, usable)
        return result

    if style == ArgsStyle.ELF:
        return _plan_boot_notes(layout, req, usable, placed.entry, flags, notes)

    initrd = None
    if req.initrd is not None:
        low = Range.between(1 * MiB, SYNTHETIC_INITRD_ADDR_MAX + 1)
        try:
            initrd = layout.place(Role.INITRD, req.initrd, window=low, what=req.initrd_name)
        except PlacementError:
            initrd = layout.place(Role.INITRD, req.initrd, window=Range.between(1 * MiB, ADDRESS_LIMIT),
                                  what=req.initrd_name)
            notes.append(f"initrd above initrd_addr_max {SYNTHETIC_INITRD_ADDR_MAX:#x}, at {initrd.mem:#x}: "
                         "a 64-bit kernel reads ext_ramdisk_image")
    return linuxboot.finish(layout, req, facts, usable, header_page=synthetic_setup(),
                            capacity=SYNTHETIC_CMDLINE_SIZE, what=f"kernel ({name})",
                            target_release=_release_for_crash(elf, req.kernel), initrd=initrd,
                            kernel_entry=placed.entry, notes=notes, zero_page_what="zero page (synthetic header 2.06)")


def _plan_boot_notes(layout: Layout, req: LoadRequest, usable: list[Range], entry: int, flags: int,
                     notes: list[str]) -> Plan:
    """--args-elf: an ELF boot-notes block (loader name and version, command line), rdi = its address."""
    block = elfboot.build_boot_notes([
        (elfboot.EBN_BOOTLOADER_NAME, b"kexloader\0"),
        (elfboot.EBN_BOOTLOADER_VERSION, __version__.encode() + b"\0"),
        (elfboot.EBN_COMMAND_LINE, Cmdline(req.cmdline).encode(None)),  # a note has no size limit of its own
    ])
    seg = layout.place(Role.BOOT_NOTES, block, window=linuxboot.SMALL_SEGMENTS, what="ELF boot notes (--args-elf)")
    handoff = Linux64Handoff(boot_params=0, kernel_entry=entry, rdi=seg.mem)
    start = attach_purgatory(layout, handoff, req.purgatory, window=linuxboot.SMALL_SEGMENTS)
    notes.append(f"{req.kernel_name}: --args-elf: rdi = ELF boot notes at {seg.mem:#x}")
    result = Plan(entry=start, flags=flags, segments=tuple(layout.segments), notes=tuple(notes))
    validate(result, usable)
    return result
