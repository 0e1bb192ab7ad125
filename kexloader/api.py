"""The library surface: read what the user named, plan it for a machine, hand the plan to a backend.

    facts = kexloader.system.read_facts()            # or system.load_snapshot("target.json")
    req = read_request("vmlinuz", initrd="initrd.img", cmdline="console=ttyS0")
    plan = make_plan(req, facts)                     # pure: bytes + facts -> Plan
    LinuxKexecBackend().load(plan)
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
from pathlib import Path

from . import crash, images
from .errors import UsageError, DecompressionError, KexloaderError, PlacementError, UnsupportedImageError
from .formats import compression
from .memory import EVERYWHERE
from .model import LoadRequest, Module, Plan, PurgatoryOptions, Range, SystemFacts

DECOMPRESSED_LIMIT = 1 << 30  # a kernel, hypervisor or module larger than 1 GiB is a decompression bomb


def read_file(path: str | Path, what: str):
    """The file's bytes as a copy-on-write mapping (no copy, writable for ctypes), or bytes when empty."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                return b""
            return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
    except OSError as e:
        raise KexloaderError(f"cannot read {what} {path}: {e.strerror}") from e
    except ValueError as e:  # mmap of something that is not a regular file
        raise KexloaderError(f"cannot read {what} {path}: {e}") from e


def read_image(path: str | Path, what: str):
    """An image file, decompressed when its content says it is compressed (never by its name)."""
    return inflate(read_file(path, what), what, path)


def inflate(data, what: str, path):
    """`data` decompressed when its content is compressed, else `data` itself."""
    try:
        out, _ = compression.maybe_decompress(data, limit=DECOMPRESSED_LIMIT)
    except compression.CompressionError as e:
        raise DecompressionError(f"{what} {path}: {e}") from e
    return out


@contextlib.contextmanager
def open_for_file_load(kernel: str | Path, initrd: str | Path | None):
    """File descriptors for kexec_file_load: the kernel as is, or, when compressed, decompressed into a memfd
    (the kernel parses only a plain bzImage); the initrd as is, or -1."""
    fds = []
    try:
        raw = read_file(kernel, "kernel")
        if compression.sniff(raw):
            fd = os.memfd_create("kernel", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, inflate(raw, "kernel", kernel))
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            fds.append(_open(kernel, "kernel"))
        fds.append(_open(initrd, "initrd") if initrd is not None else -1)
        yield fds[0], fds[1]
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def _open(path, what: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KexloaderError(f"cannot read {what} {path}: {e.strerror}") from e


def read_module(spec: str) -> Module:
    """--module="FILE args": the file, decompressed only when what comes out is a kernel (a gzip'ed dom0
    kernel; Xen wants it plain), and the whole string as its command line (Xen drops the first word)."""
    path = spec.split()[0]
    raw = read_file(path, "module")
    data = raw
    if compression.sniff(raw):
        inflated = inflate(raw, "module", path)
        if images.looks_like_kernel(inflated):
            data = inflated
    return Module(path, data, spec.strip())


def read_request(kernel: str | Path, *, initrd: str | Path | None = None, cmdline: str | None = "",
                 image_type: str | None = None, crash: bool = False, modules: list[str] = (),
                 purgatory: PurgatoryOptions = PurgatoryOptions(), args_style: str | None = None,
                 hotplug: bool = False, initrds: list = (), uki_profile: int | None = None) -> LoadRequest:
    """Read the kernel (decompressed), the initrd (as is: the new kernel unpacks it itself) and modules.

    args_style: "linux", "elf" or "none" (--args-linux/--args-elf/--args-none; ELF kernels only).
    hotplug: with crash, let the kernel rewrite the elfcorehdr on CPU/memory hotplug (--hotplug).
    initrds: several initrd files, loaded as one initramfs in this order (instead of `initrd`).
    cmdline None: none given, so a UKI's .cmdline is used. uki_profile: the UKI profile (None: the first)."""
    if len(initrds) == 1 and initrd is None:
        initrd, initrds = initrds[0], ()
    extra = {}
    if initrds:
        from .initramfs import InitrdPart
        extra["initrd_parts"] = tuple(InitrdPart(str(p), read_file(p, "initrd")) for p in initrds)
    data = read_image(kernel, "kernel")
    if images.uki.probe(data):  # its command-line addons, found where systemd-stub looks for them
        from . import bootentries
        uname = images.uki.contents(data, str(kernel), uki_profile).uname
        extra["uki_addons"] = tuple(line for _, line in bootentries.addons(kernel, uname))
        extra["uki_sidecars"] = tuple(bootentries.sidecars(kernel))
        extra["uki_addon_parts"] = bootentries.addon_parts(kernel, uname)
    return LoadRequest(**extra, cmdline_given=cmdline is not None, uki_profile=uki_profile,
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
    kind = images.detect(req.kernel, req.kernel_name, req.image_type)
    if req.initrd_parts and kind.name not in ("bzImage64", "bzImage", "uki"):  # planners of one initrd segment
        from . import initramfs
        req = dataclasses.replace(req, initrd=initramfs.join(req.initrd_parts), initrd_parts=(),
                                  initrd_name=initramfs.describe(req.initrd_parts))
    if req.modules and not kind.name.startswith("multiboot"):
        raise UsageError(f"{req.kernel_name}: --module is for multiboot images; a {kind.name} takes --initrd")
    if req.crash:
        plan = _crash_plan(kind, req, facts, window)
    else:
        usable = [part for r in facts.ram() if (part := r.intersect(window)) is not None]
        plan = None
        if facts.xen is not None and window == EVERYWHERE:
            low = [part for r in usable if (part := r.intersect(Range(0, xen_dma_limit(facts)))) is not None]
            with contextlib.suppress(PlacementError):  # too small: anywhere, as before
                plan = kind.plan(req, facts, low)
        if plan is None:
            plan = kind.plan(req, facts, usable)
    return dataclasses.replace(plan, notes=plan.notes + (f"facts: {facts.source}",))


def xen_dma_limit(facts: SystemFacts) -> int:
    """Where Xen's DMA zone ends (its default dma_bits: a quarter of the RAM node, at most 4 GiB). Xen's page
    allocator hands out pages below it last, so an image placed there does not collide with the pages Xen
    allocates while it copies the image in: on a collision Xen's kimage_alloc_page swaps pages and writes a
    wrong entry (MFN 0), which BUG()s Xen on unload (seen with Xen 4.20) and corrupts a page on exec."""
    end_pfn = max((r.end for r in facts.ram()), default=0) >> 12
    return 1 << min(max(end_pfn // 4 - 1, 1).bit_length() + 12, 32)


def _crash_plan(kind, req: LoadRequest, facts: SystemFacts, window: Range) -> Plan:
    """-p: plan inside the crash kernel region; say by how much it is too small when it is."""
    usable = crash.usable(facts, window)  # NoCrashRegionError first, as kexec-tools checks before loading
    if kind.name.startswith("multiboot"):
        raise UnsupportedImageError(f"{req.kernel_name}: a {kind.name} image cannot be a crash kernel",
                                    hint="kdump boots a Linux kernel: load a bzImage with -p")
    try:
        plan = kind.plan(req, facts, usable)
    except PlacementError as e:
        raise crash.shortfall(facts, window, lambda pretend: kind.plan(req, facts, pretend), e) from None
    if not any(s.role == "elfcorehdr" for s in plan.segments):  # a planner that does not call crash.prepare
        raise UnsupportedImageError(f"{req.kernel_name}: {kind.name} images cannot be crash kernels",
                                    hint="load a Linux bzImage with -p")
    return plan
