"""The last placement step shared by every image kind: digest the segments, then place the purgatory.

What the purgatory checks before it hands over, segment by segment in address order: the bytes handed
over (each segment's buffer) go through SHA-256, once here and once there; the rest of the segment (its
zero fill, memsz - bufsz: 56 MiB of Debian 12's kernel segment) is not hashed on either side: the
purgatory tests that it is still all zero, which finds the same changes at memory speed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .memory import Layout
from .model import Backup, PurgatoryOptions, Range, Role, Segment
from .purgatory.program import Handoff, Region, build_purgatory, purgatory_size

def segments_digest(segments: Sequence[Segment]) -> tuple[tuple[Region, ...], bytes]:
    """The hashed regions (each segment's buffer) in address order and their SHA-256, taken over the buffers
    as they are (an mmap'd file is read once, not copied)."""
    h = hashlib.sha256()
    regions = []
    for seg in sorted(segments, key=lambda s: s.mem):
        if seg.bufsz:
            h.update(seg.data)
            regions.append(Region(seg.mem, seg.bufsz))
    return tuple(regions), h.digest()


def zero_fills(segments: Sequence[Segment]) -> tuple[Region, ...]:
    """Each segment's memory past its buffer, which the kernel (or Xen) zero-fills, in address order."""
    return tuple(Region(s.mem + s.bufsz, s.memsz - s.bufsz) for s in sorted(segments, key=lambda s: s.mem)
                 if s.memsz > s.bufsz)


def attach_purgatory(layout: Layout, handoff: Handoff, options: PurgatoryOptions, *, window: Range,
                     backup: Backup | None = None, unhashed: tuple[Role, ...] = ()) -> int:
    """Place the purgatory in `window`, built for its final address; returns the plan's entry point.

    unhashed: roles the purgatory must not verify because the kernel may rewrite them after the load (the
    elfcorehdr with --hotplug, as kexec-tools' arch_do_exclude_segment)."""
    hashed = tuple(s for s in layout.segments if s.role != Role.MAP_ONLY and s.role not in unhashed)
    regions: tuple[Region, ...] = ()
    zeros: tuple[Region, ...] = ()
    digest = None
    if options.checks:
        regions, digest = segments_digest(hashed)
        zeros = zero_fills(hashed)
    # The size does not depend on where the code goes: reserve it, then build for that address.
    size = purgatory_size(handoff, regions=regions, zeros=zeros, digest=digest, options=options, backup=backup)
    seg = layout.place(Role.PURGATORY, b"", memsz=size, window=window, what="generated entry code")
    image = build_purgatory(seg.mem, handoff, regions=regions, zeros=zeros, digest=digest, options=options,
                            backup=backup)
    layout.replace(seg, image.code)
    return image.entry
