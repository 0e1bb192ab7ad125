"""Image kinds, probed in kexec-tools' order (kexec/arch/x86_64/kexec-x86_64.c file_type[]).

Each kind is a probe (cheap, "is this that kind?") and a planner `(req, facts, usable) -> Plan`.

Only bzimage is imported with the package. The other kinds' modules (multiboot and vmlinux bring pyelftools)
are imported by their probe, and only once a check on a few bytes that their probe also makes has passed
(the ELF magic, the multiboot magic in the first 8 KiB, the MS-DOS "MZ"): a bzImage loads none of them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import EXIT_FAILURE, NotSupportedYet, UnknownFormatError, UsageError
from ..formats.multiboot import MB1_HEADER_MAGIC, MB1_SEARCH
from ..memory import SegmentData
from ..model import LoadRequest, Plan, Range, SystemFacts
from . import bzimage

Probe = Callable[[SegmentData], bool]
Planner = Callable[[LoadRequest, SystemFacts, list[Range]], Plan]  # (req, facts, usable RAM) -> Plan


@dataclass(frozen=True)
class Kind:
    name: str
    probe: Probe
    plan: Planner | None  # None: recognised but not built yet
    crash_kernel: bool = False  # its planner can lay it out as a kdump kernel (-p): elfcorehdr, crash e820


# The byte checks that come before each lazily imported probe: each is a condition that probe checks too.
_MB1_MAGIC = struct.pack("<I", MB1_HEADER_MAGIC)


def _elf_magic(data: SegmentData) -> bool:
    return bytes(data[:4]) == b"\x7fELF"  # multiboot 2 (probe_mb2: is_elf) and the ELF kinds (elf_header)


def _mb1_magic(data: SegmentData) -> bool:
    return _MB1_MAGIC in bytes(data[:MB1_SEARCH + 12])  # find_mb1 searches the same bytes


def _probe_mb2(data: SegmentData) -> bool:
    if not _elf_magic(data):
        return False
    from . import multiboot
    return multiboot.probe_mb2(data)


def _probe_mb1(data: SegmentData) -> bool:
    if not _mb1_magic(data):
        return False
    from . import multiboot
    return multiboot.probe_mb1(data)


def _probe_elf_x86_64(data: SegmentData) -> bool:
    if not _elf_magic(data):
        return False
    from . import vmlinux
    return vmlinux.probe_x86_64(data)


def _probe_elf_x86(data: SegmentData) -> bool:
    if not _elf_magic(data):
        return False
    from . import vmlinux
    return vmlinux.probe_x86(data)


def probe_uki(data: SegmentData) -> bool:
    """uki.probe, for a file that starts as a PE image does ("MZ"; uki is imported only then)."""
    if bytes(data[:2]) != b"MZ":
        return False
    from . import uki
    return uki.probe(data)


def _plan_mb2(req: LoadRequest, facts: SystemFacts, usable: list[Range]) -> Plan:
    from . import multiboot
    return multiboot.plan(req, facts, usable, version=2)


def _plan_mb1(req: LoadRequest, facts: SystemFacts, usable: list[Range]) -> Plan:
    from . import multiboot
    return multiboot.plan(req, facts, usable, version=1)


def _plan_elf_x86_64(req: LoadRequest, facts: SystemFacts, usable: list[Range]) -> Plan:
    from . import vmlinux
    return vmlinux.plan(req, facts, usable)


def _plan_uki(req: LoadRequest, facts: SystemFacts, usable: list[Range]) -> Plan:
    from . import uki
    return uki.plan(req, facts, usable)


KINDS = [
    Kind("multiboot2-x86", _probe_mb2, _plan_mb2),
    Kind("elf-x86_64", _probe_elf_x86_64, _plan_elf_x86_64, crash_kernel=True),
    Kind("multiboot-x86", _probe_mb1, _plan_mb1),
    Kind("elf-x86", _probe_elf_x86, None),  # a 32-bit (i386) ELF kernel: not built
    Kind("bzImage64", bzimage.probe, bzimage.plan, crash_kernel=True),
    # a 32-bit-only bzImage gets bzImage64's clear refusal
    Kind("bzImage", bzimage.probe, bzimage.plan, crash_kernel=True),
    # a PE with a .linux section (kexec-tools 2.0.31+: after bzImage)
    Kind("uki", probe_uki, _plan_uki, crash_kernel=True),
]
NAMES = [k.name for k in KINDS]


def looks_like_kernel(data: SegmentData) -> bool:
    """A bzImage, an ELF or a multiboot image (used to decide whether to inflate a module)."""
    return any(k.probe(data) for k in KINDS)


def detect(data: SegmentData, name: str, forced: str | None = None) -> Kind:
    """The kind that will plan this image: the first whose probe accepts it, or the one --type names. Probes
    run in order until one accepts (the later kinds' modules are then not imported)."""
    first = next((k for k in KINDS if k.probe(data)), None)
    matches = [first] if first is not None else []
    if forced is not None:
        if forced not in NAMES:
            # kexec-tools (my_load): "Unsupported kernel type X", exit 255
            raise UsageError(f"Unsupported kernel type {forced}", hint=f"known types: {', '.join(NAMES)}",
                             exit_code=EXIT_FAILURE)
        wanted = KINDS[NAMES.index(forced)]
        if wanted is first or wanted.probe(data):
            matches = [wanted]
        else:
            # kexec-tools: "Wrong file type X, file matches type Y", exit 255; with no match at all it
            # says it cannot determine the file type, as without --type
            if first is not None:
                raise UnknownFormatError(f"{name}: Wrong file type {forced}, file matches type {first.name}",
                                         exit_code=EXIT_FAILURE)
            matches = []
    if not matches and _is_pe(data):
        raise UnknownFormatError(f"{name}: a PE image without a .linux section: not a unified kernel image",
                                 exit_code=EXIT_FAILURE)
    if not matches:
        raise UnknownFormatError(f"{name}: cannot determine the file type (not a bzImage, ELF or multiboot image)",
                                 exit_code=EXIT_FAILURE)
    kind = matches[0]
    if kind.plan is None:
        raise NotSupportedYet(f"{name}: {kind.name} images are not supported yet")
    return kind


def _is_pe(data: SegmentData) -> bool:
    if bytes(data[:2]) != b"MZ":
        return False
    from . import uki
    return uki.is_pe(data)
