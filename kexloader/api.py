"""The library surface: what the user asked for, the machine's facts, a plan, a backend.

    facts = api.load_facts()                         # the running system; load_facts("target.json"): a snapshot
    req = api.build_request(LoadIntent(kernel="vmlinuz", initrds=("initrd.img",), append="console=ttyS0"), facts)
    plan = api.make_plan(req, facts)                 # pure: bytes + facts -> Plan
    LinuxKexecBackend().load(plan)

`LoadIntent` says it in kexec-tools' terms (--append, --reuse-cmdline, --vmm, -p, --module, ...);
`build_request` turns it into a `LoadRequest` with every file read, applying kexec-tools' rules. The planners
(images, crash) are imported when a plan is made: -S, -u and -e start faster (it shows under QEMU's
emulation, and on small boards).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import system
from .cmdline import Cmdline
from .errors import (BackendError, EXIT_DIE, EXIT_FAILURE, EXIT_FALLBACK, FileOpenError, ImageFormatError,
                     PlacementError, UnsupportedImageError, UsageError)
# re-exported: the library reads files through these
from .files import DECOMPRESSED_LIMIT, inflate, open_for_file_load, open_regular, read_file, read_image  # noqa: F401
from .files import read_module as _read_module
from .memory import ADDRESS_LIMIT, EVERYWHERE
from .kexec_abi import KEXEC_ARCH_X86_64, KEXEC_ON_CRASH, KEXEC_UPDATE_ELFCOREHDR
from .model import ArgsStyle, LoadRequest, Module, Plan, PurgatoryOptions, Range, SystemFacts

if TYPE_CHECKING:
    from .fileload import FileLoad
    from .images import Kind, Planner
    from .initramfs import InitrdPart

__all__ = ["ADDRESS_LIMIT", "EVERYWHERE", "ArgsStyle", "FileLoadRefused", "LoadIntent", "Plan",
           "PurgatoryOptions", "Range", "SystemFacts", "build_request", "check_crash", "check_file_load", "check_plan",
           "command_line", "describe_plan", "inspect_file", "list_boot_entries", "load_facts", "make_plan", "no_kernel",
           "open_file_load", "plan_intent", "read_module", "read_plan", "read_request",
           "resolve_boot_entry", "rng_seed", "write_plan", "xen_dma_limit", "xen_role"]


@dataclass(frozen=True)
class LoadIntent:
    """What the user asked to load, in kexec-tools' terms; no file read yet.

    append: --append/--command-line (None: not given); reuse_cmdline: start from the running kernel's line.
    vmm: the seed's --vmm=XEN: `kernel` becomes dom0's, `append` is "XEN_ARGS -- DOM0_ARGS".
    boot_entry, esp, boot_dir: a Boot Loader Specification entry names the kernel, initrds and options."""

    kernel: str | None = None
    initrds: tuple[str, ...] = ()  # every --initrd, in order
    append: str | None = None
    reuse_cmdline: bool = False
    vmm: str | None = None
    modules: tuple[str, ...] = ()  # --module="FILE args", in order
    crash: bool = False  # -p
    hotplug: bool = False  # --hotplug
    image_type: str | None = None  # --type
    args_style: ArgsStyle | None = None
    purgatory: PurgatoryOptions = PurgatoryOptions()
    uki_profile: int | None = None
    noefi: bool = False
    window: Range = EVERYWHERE  # --mem-min/--mem-max
    dtb: str | None = None  # --dtb=FILE (kexec_load only: kexec_file_load ignores it, as kexec-tools)
    pass_memmap: bool = False  # --pass-memmap-cmdline (kexec_load, -p only, as kexec-tools)
    boot_entry: str | None = None
    esp: str | None = None
    boot_dir: str | None = None


def load_facts(snapshot: str | Path | None = None, *, kdump: bool = True) -> SystemFacts:
    """The machine to plan for: the running system, or the one a saved snapshot describes. kdump=False: a
    plan for -l only, which needs none of the running system's crash facts (a snapshot has them all anyway)."""
    if snapshot is None:
        return system.read_facts(kdump=kdump)
    from .snapshot import load_snapshot  # json, base64, the EFI formats: only when a snapshot is read
    return load_snapshot(Path(snapshot))


def xen_role() -> str | None:
    """"dom0", "domU" or None (bare metal, HVM): which backend can load here."""
    return system.xen_role()


def resolve_boot_entry(intent: LoadIntent) -> LoadIntent:
    """--boot-entry: the entry's kernel, initrds (before any --initrd) and, unless given, its options."""
    if intent.boot_entry is None:
        return intent
    from . import bootentries
    if intent.kernel:
        raise UsageError(f"--boot-entry names the kernel; an image was given too ({intent.kernel})")
    e = bootentries.find(intent.boot_entry, intent.esp, intent.boot_dir)
    given = intent.append is not None or intent.reuse_cmdline
    return dataclasses.replace(
        intent, kernel=str(e.kernel), initrds=tuple(str(p) for p in e.initrds) + intent.initrds, boot_entry=None,
        append=e.options if e.options is not None and not given else intent.append,
        uki_profile=e.profile if e.profile is not None and intent.uki_profile is None else intent.uki_profile)


def list_boot_entries(esp: str | None, boot_dir: str | None, out: TextIO | None = None) -> int:
    """--list-boot-entries: systemd-boot's order, the default marked."""
    from . import bootentries
    return bootentries.run_list(esp, boot_dir, out or sys.stdout)


def inspect_file(path: str, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """--inspect: what the file is; 0 when a kind claims it."""
    from . import inspect
    return inspect.run(path, as_json=as_json, out=out)


def check_crash(intent: LoadIntent, facts: SystemFacts) -> None:
    """-p and --hotplug: say what is missing before any image is read, as kexec-tools (one line, exit 1)."""
    if not (intent.crash or intent.hotplug):
        return  # a plain -l does not import the kdump code
    from . import crash
    if intent.crash:
        crash.crash_region(facts)
    if intent.hotplug:
        crash.hotplug_header_size(facts)


def command_line(intent: LoadIntent, running: str) -> str | None:
    """--reuse-cmdline (the running kernel's `running` line, minus what must not be passed on) then
    --append; None when neither was given (a UKI's .cmdline or a boot entry's options apply)."""
    if intent.append is None and not intent.reuse_cmdline:
        return None
    line = Cmdline.reused(running, crash=intent.crash) if intent.reuse_cmdline else Cmdline()
    return str(line.append(intent.append))


def build_request(intent: LoadIntent, facts: SystemFacts) -> LoadRequest:
    """Read what `intent` names for the machine `facts` describe: the crash region first (no region: nothing
    is read), the command line composed, the seed's --vmm syntax turned into multiboot modules."""
    intent = resolve_boot_entry(intent)
    if not intent.kernel:
        raise no_kernel("kexloader -l")
    check_crash(intent, facts)
    line = command_line(intent, facts.cmdline)
    kernel, initrds, modules = intent.kernel, intent.initrds, list(intent.modules)
    if intent.vmm:
        # kexec -l --append="XEN_ARGS -- DOM0_ARGS" --vmm=XEN DOM0 [--initrd=I] (Xen's docs/misc/kexec_and_kdump.txt)
        xen_args, _, dom0_args = f" {line or ''} ".partition(" -- ")
        modules = [str(Cmdline(kernel).append(dom0_args))] + list(initrds) + modules
        kernel, initrds, line = intent.vmm, (), xen_args.strip()
    req = read_request(kernel, initrds=initrds, cmdline=line, uki_profile=intent.uki_profile,
                       image_type=intent.image_type, crash=intent.crash, modules=modules,
                       purgatory=intent.purgatory, args_style=intent.args_style, hotplug=intent.hotplug)
    dtb = read_dtb(intent.dtb) if intent.dtb is not None else None
    return dataclasses.replace(req, noefi=intent.noefi, dtb=dtb, pass_memmap=intent.pass_memmap)


FDT_MAGIC = 0xD00DFEED  # the flattened device tree header's first word, big-endian (devicetree specification 5.2)


def read_dtb(path: str) -> bytes:
    """--dtb=FILE: a flattened device tree, checked for its magic and total size (the kernel reads that many
    bytes of the SETUP_DTB record)."""
    import struct
    data = bytes(read_file(path, "device tree"))
    magic, total = struct.unpack_from(">II", data) if len(data) >= 8 else (0, 0)
    if magic != FDT_MAGIC or not 40 <= total <= len(data):  # 40: the version 17 header
        raise ImageFormatError(f"{path}: not a flattened device tree (no 0xd00dfeed header, or a total size past "
                               "the end of the file)", hint="give --dtb a .dtb compiled by dtc")
    return data[:total]


def no_kernel(how: str) -> UsageError:
    """-l without an image: exit 255, as kexec-tools' "No kernel specified" (not its usage errors' 1)."""
    return UsageError("no kernel image given", hint=f"{how} KERNEL [--initrd=FILE] [--append=STRING]",
                      exit_code=EXIT_FAILURE)


def plan_intent(intent: LoadIntent, facts: SystemFacts) -> Plan:
    """build_request then make_plan, inside the intent's window."""
    return make_plan(build_request(intent, facts), facts, window=intent.window)


class FileLoadRefused(BackendError):
    """kexec_file_load cannot load this (a multiboot image): -a falls back to kexec_load, -s stops."""


def check_file_load(intent: LoadIntent, snapshot: str | Path | None = None) -> None:
    """kexec_file_load (-s) of `intent` (boot entry resolved), checked before anything is read. As kexec-tools,
    even here -p without a crash region (and --hotplug without kernel support) is one line and no load."""
    if not intent.kernel:
        raise no_kernel("kexloader -s -l")
    if intent.vmm or intent.modules:
        raise FileLoadRefused("kexec_file_load cannot load multiboot images", hint="use -c (kexec_load)",
                              exit_code=EXIT_FALLBACK)
    if intent.crash or intent.hotplug:
        check_crash(intent, load_facts(snapshot))  # the kernel updates file-loaded crash images by itself, if it can
    from . import images
    data = read_image(intent.kernel, "kernel")  # 2.0.32 reads it first: "Cannot open", 1 (2.0.25 said 255)
    try:
        for initrd in intent.initrds:
            os.close(open_regular(initrd, "initrd"))
    except FileOpenError as e:  # kexec-tools' bzImage64 file loader: "Could not open initrd file", 255 (-c: 1)
        raise FileOpenError(str(e), exit_code=EXIT_FAILURE) from e
    if not (images.bzimage.probe(data) or images.probe_uki(data)):
        # the kernel's x86-64 kexec_file_load parses a bzImage only; kexec-tools 2.0.25 `-s -l vmlinux` exits 1
        kind = images.detect(data, intent.kernel, intent.image_type)  # not an image at all: 255, as -c
        raise FileLoadRefused(f"{intent.kernel}: kexec_file_load loads only a bzImage; this is {kind.name}",
                              hint="use -c (kexec_load) or -a", exit_code=EXIT_DIE)


@contextlib.contextmanager
def open_file_load(intent: LoadIntent, snapshot: str | Path | None = None) -> Iterator[FileLoad]:
    """The file descriptors and command line for kexec_file_load (after check_file_load): the kernel parses
    the image itself. The running command line (--reuse-cmdline) is the snapshot's, or /proc/cmdline."""
    intent = resolve_boot_entry(intent)
    running = ""
    if intent.reuse_cmdline:
        running = load_facts(snapshot).cmdline if snapshot is not None else system.read_cmdline()
    from . import fileload  # a UKI's sections and several initrds go in memfds
    with fileload.open_files(intent.kernel or "", intent.initrds, command_line(intent, running),
                             uki_profile=intent.uki_profile) as f:
        Cmdline(f.cmdline)  # the kernel reads it up to the first NUL: refuse one inside, as kexec_load does
        yield f


def describe_plan(plan: Plan) -> str:
    from . import plan as plans
    return plans.describe(plan)


def write_plan(plan: Plan, directory: str | Path) -> None:
    """plan.json and one file per segment (--plan-out)."""
    from . import plan as plans
    plans.write_dir(plan, Path(directory))


def read_plan(directory: str | Path, facts: SystemFacts | None = None) -> Plan:
    """A plan written by write_plan, every segment checked against its size and SHA-256 (--plan-in); with the
    `facts` of the machine it is for, also checked as a freshly made plan is (check_plan)."""
    from . import plan as plans
    plan = plans.read_dir(Path(directory))
    if facts is not None:
        check_plan(plan, facts)
    return plan


def check_plan(plan: Plan, facts: SystemFacts) -> None:
    """What every planner checks before it returns (memory.validate: page alignment, overlaps, the segment
    count, the entry inside a segment), against where a plan for `facts` may put segments: the crash region
    for a crash plan, RAM otherwise, and under Xen also the first MiB (mapped, not written, for Linux)."""
    from .memory import validate
    known = KEXEC_ARCH_X86_64 | KEXEC_ON_CRASH | KEXEC_UPDATE_ELFCOREHDR  # what the planners set
    if plan.flags & ~known or not plan.flags & KEXEC_ARCH_X86_64:
        raise PlacementError(f"flags {plan.flags:#x}: a plan for x86-64 has KEXEC_ARCH_X86_64 ({KEXEC_ARCH_X86_64:#x}) "
                             f"and no flag but KEXEC_ON_CRASH and KEXEC_UPDATE_ELFCOREHDR")
    usable = list(facts.ram())
    if plan.crash or facts.xen is not None:  # the kdump code only where it is needed: a plain -l does not import it
        from . import crash
        usable = crash.usable(facts, EVERYWHERE) if plan.crash else usable
        if facts.xen is not None:
            usable.append(crash.LOW_MEMORY)
    validate(plan, usable)


def read_module(spec: str) -> Module:
    """--module="FILE args": the file, decompressed only when what comes out is a kernel (a gzip'ed dom0
    kernel; Xen wants it plain), and the whole string as its command line (Xen drops the first word)."""
    from . import images
    return _read_module(spec, images.looks_like_kernel)


def read_request(kernel: str | Path, *, initrd: str | Path | None = None, cmdline: str | None = "",
                 image_type: str | None = None, crash: bool = False, modules: Sequence[str] = (),
                 purgatory: PurgatoryOptions = PurgatoryOptions(), args_style: ArgsStyle | None = None,
                 hotplug: bool = False, initrds: Sequence[str | Path] = (), uki_profile: int | None = None
                 ) -> LoadRequest:
    """Read the kernel (decompressed), the initrd (as is: the new kernel unpacks it itself) and modules.

    args_style: --args-linux/--args-elf/--args-none (ELF kernels only; None: the image kind's default).
    hotplug: with crash, let the kernel rewrite the elfcorehdr on CPU/memory hotplug (--hotplug).
    initrds: several initrd files, loaded as one initramfs in this order (instead of `initrd`).
    cmdline None: none given, so a UKI's .cmdline is used. uki_profile: the UKI profile (None: the first)."""
    if len(initrds) == 1 and initrd is None:
        initrd, initrds = initrds[0], ()
    from . import images
    parts: tuple[InitrdPart, ...] = ()
    if initrds:
        from .initramfs import InitrdPart
        parts = tuple(InitrdPart(str(p), read_file(p, "initrd")) for p in initrds)
    data = read_image(kernel, "kernel")
    addons: tuple[str, ...] = ()
    sidecars: tuple[InitrdPart, ...] = ()
    addon_parts: tuple[tuple[str, InitrdPart], ...] = ()
    # a UKI's command-line addons, found where systemd-stub looks for them (a file that is a bzImage too is
    # planned as one, kexec-tools' order: its PE sections are not looked at, and uki is not imported)
    if not images.bzimage.probe(data) and images.probe_uki(data):
        from . import bootentries
        from .images import uki
        uname = uki.contents(data, str(kernel), uki_profile).uname
        addons = tuple(line for _, line in bootentries.addons(kernel, uname))
        sidecars = tuple(bootentries.sidecars(kernel))
        addon_parts = bootentries.addon_parts(kernel, uname)
    return LoadRequest(initrd_parts=parts, uki_addons=addons, uki_sidecars=sidecars, uki_addon_parts=addon_parts,
        cmdline_given=cmdline is not None, uki_profile=uki_profile,
        modules=tuple(read_module(m) for m in modules),
        kernel=data, kernel_name=str(kernel), cmdline=cmdline or "",
        initrd=read_file(initrd, "initrd") if initrd is not None else None,
        initrd_name=str(initrd) if initrd is not None else "",
        image_type=image_type, crash=crash, purgatory=purgatory, args_style=args_style, rng_seed=rng_seed(),
        hotplug=hotplug)


def rng_seed() -> bytes | None:
    """32 bytes for the new kernel's SETUP_RNG_SEED, or None when the entropy pool is not ready (as kexec-tools,
    which skips the seed rather than block)."""
    try:
        return os.getrandom(32, os.GRND_NONBLOCK)
    except (BlockingIOError, OSError, AttributeError):
        return None


def make_plan(req: LoadRequest, facts: SystemFacts, *, window: Range = EVERYWHERE) -> Plan:
    """Pure: the plan that loads `req` on the machine `facts` describe, inside `window` (--mem-min/--mem-max)."""
    from . import images
    kind = images.detect(req.kernel, req.kernel_name, req.image_type)
    if req.initrd_parts and kind.name not in ("bzImage64", "bzImage", "uki"):  # planners of one initrd segment
        from . import initramfs
        req = dataclasses.replace(req, initrd=initramfs.join(req.initrd_parts), initrd_parts=(),
                                  initrd_name=initramfs.describe(req.initrd_parts))
    if req.modules and not kind.name.startswith("multiboot"):
        raise UsageError(f"{req.kernel_name}: --module is for multiboot images; a {kind.name} takes --initrd")
    if req.dtb is not None and kind.name.startswith("multiboot"):
        raise UsageError(f"{req.kernel_name}: --dtb is for Linux kernels (SETUP_DTB); a {kind.name} takes none")
    planner = kind.plan
    assert planner is not None  # detect returns only kinds with a planner
    plan: Plan | None = None
    try:
        if req.crash:
            plan = _crash_plan(kind, planner, req, facts, window)
        else:
            usable = [part for r in facts.ram() if (part := r.intersect(window)) is not None]
            if facts.xen is not None and window == EVERYWHERE:
                low = [part for r in usable if (part := r.intersect(Range(0, xen_dma_limit(facts)))) is not None]
                with contextlib.suppress(PlacementError):  # too small: anywhere, as before
                    plan = planner(req, facts, low)
            if plan is None:
                plan = planner(req, facts, usable)
    except UsageError as e:  # an image loader refusing the request (a command line too long, an initrd a
        # multiboot image cannot take): kexec-tools' loaders fail with "Cannot load", exit 255
        raise UsageError(str(e), hint=e.hint, exit_code=EXIT_FAILURE) from e
    return dataclasses.replace(plan, notes=plan.notes + (f"facts: {facts.source}",))


def xen_dma_limit(facts: SystemFacts) -> int:
    """Where Xen's DMA zone ends (its default dma_bits: a quarter of the RAM node, at most 4 GiB). Xen's page
    allocator hands out pages below it last, so an image placed there does not collide with the pages Xen
    allocates while it copies the image in: on a collision Xen's kimage_alloc_page swaps pages and writes a
    wrong entry (MFN 0), which BUG()s Xen on unload (seen with Xen 4.20) and corrupts a page on exec."""
    end_pfn = max((r.end for r in facts.ram()), default=0) >> 12
    return 1 << min(max(end_pfn // 4 - 1, 1).bit_length() + 12, 32)


def _crash_plan(kind: Kind, planner: Planner, req: LoadRequest, facts: SystemFacts, window: Range) -> Plan:
    """-p: plan inside the crash kernel region; say by how much it is too small when it is."""
    from . import crash
    usable = crash.usable(facts, window)  # NoCrashRegionError first, as kexec-tools checks before loading
    if not kind.crash_kernel:
        raise UnsupportedImageError(f"{req.kernel_name}: a {kind.name} image cannot be a crash kernel",
                                    hint="kdump boots a Linux kernel: load a bzImage with -p")
    try:
        plan = planner(req, facts, usable)
    except PlacementError as e:
        raise crash.shortfall(facts, window, lambda pretend: planner(req, facts, pretend), e) from None
    return plan
