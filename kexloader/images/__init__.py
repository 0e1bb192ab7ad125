"""Image kinds, probed in kexec-tools' order (kexec/arch/x86_64/kexec-x86_64.c file_type[]).

Each kind is a probe (cheap, "is this that kind?") and a planner `(req, facts, usable) -> Plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ..errors import EXIT_FAILURE, NotSupportedYet, UnknownFormatError, UsageError
from ..memory import SegmentData
from ..model import LoadRequest, Plan, Range, SystemFacts
from . import bzimage, multiboot, uki, vmlinux

Probe = Callable[[SegmentData], bool]
Planner = Callable[[LoadRequest, SystemFacts, list[Range]], Plan]  # (req, facts, usable RAM) -> Plan


@dataclass(frozen=True)
class Kind:
    name: str
    probe: Probe
    plan: Planner | None  # None: recognised but not built yet
    crash_kernel: bool = False  # its planner can lay it out as a kdump kernel (-p): elfcorehdr, crash e820


KINDS = [
    Kind("multiboot2-x86", multiboot.probe_mb2, partial(multiboot.plan, version=2)),
    Kind("elf-x86_64", vmlinux.probe_x86_64, vmlinux.plan, crash_kernel=True),
    Kind("multiboot-x86", multiboot.probe_mb1, partial(multiboot.plan, version=1)),
    Kind("elf-x86", vmlinux.probe_x86, None),  # a 32-bit (i386) ELF kernel: not built
    Kind("bzImage64", bzimage.probe, bzimage.plan, crash_kernel=True),
    # a 32-bit-only bzImage gets bzImage64's clear refusal
    Kind("bzImage", bzimage.probe, bzimage.plan, crash_kernel=True),
    # a PE with a .linux section (kexec-tools 2.0.31+: after bzImage)
    Kind("uki", uki.probe, uki.plan, crash_kernel=True),
]
NAMES = [k.name for k in KINDS]


def looks_like_kernel(data: SegmentData) -> bool:
    """A bzImage, an ELF or a multiboot image (used to decide whether to inflate a module)."""
    return any(k.probe(data) for k in KINDS)


def detect(data: SegmentData, name: str, forced: str | None = None) -> Kind:
    """The kind that will plan this image: the first whose probe accepts it, or the one --type names."""
    matches = [k for k in KINDS if k.probe(data)]
    if forced is not None:
        if forced not in NAMES:
            # kexec-tools (my_load): "Unsupported kernel type X", exit 255
            raise UsageError(f"Unsupported kernel type {forced}", hint=f"known types: {', '.join(NAMES)}",
                             exit_code=EXIT_FAILURE)
        if forced not in [k.name for k in matches]:
            # kexec-tools: "Wrong file type X, file matches type Y", exit 255; with no match at all it
            # says it cannot determine the file type, as without --type
            if matches:
                raise UnknownFormatError(f"{name}: Wrong file type {forced}, file matches type {matches[0].name}",
                                         exit_code=EXIT_FAILURE)
        matches = [k for k in matches if k.name == forced]
    if not matches and uki.is_pe(data):
        raise UnknownFormatError(f"{name}: a PE image without a .linux section: not a unified kernel image",
                                 exit_code=EXIT_FAILURE)
    if not matches:
        raise UnknownFormatError(f"{name}: cannot determine the file type (not a bzImage, ELF or multiboot image)",
                                 exit_code=EXIT_FAILURE)
    kind = matches[0]
    if kind.plan is None:
        raise NotSupportedYet(f"{name}: {kind.name} images are not supported yet")
    return kind
