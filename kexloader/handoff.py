"""The last placement step shared by every image kind: digest the segments, then place the purgatory.

The purgatory recomputes the same SHA-256 over the same regions before it hands over, so the
digest covers each segment's buffer followed by its zero fill, segments in address order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from .memory import Layout
from .model import Backup, PurgatoryOptions, Range, Role, Segment
from .purgatory.program import Handoff, Region, build_purgatory, purgatory_size

ZEROS = bytes(1 << 20)


def segments_digest(segments: Sequence[Segment]) -> tuple[tuple[Region, ...], bytes]:
    """Regions in address order and the SHA-256 of their contents as the new system will see them."""
    h = hashlib.sha256()
    regions = []
    for seg in sorted(segments, key=lambda s: s.mem):
        h.update(seg.data)
        pad = seg.memsz - seg.bufsz
        while pad > 0:
            h.update(ZEROS[: min(pad, len(ZEROS))])
            pad -= len(ZEROS)
        regions.append(Region(seg.mem, seg.memsz))
    return tuple(regions), h.digest()


def attach_purgatory(layout: Layout, handoff: Handoff, options: PurgatoryOptions, *, window: Range,
                     backup: Backup | None = None, unhashed: tuple[Role, ...] = ()) -> int:
    """Place the purgatory in `window`, built for its final address; returns the plan's entry point.

    unhashed: roles the purgatory must not verify because the kernel may rewrite them after the load (the
    elfcorehdr with --hotplug, as kexec-tools' arch_do_exclude_segment)."""
    hashed = tuple(s for s in layout.segments if s.role != Role.MAP_ONLY and s.role not in unhashed)
    regions: tuple[Region, ...] = ()
    digest = None
    if options.checks:
        regions, digest = segments_digest(hashed)
    # The size does not depend on where the code goes: reserve it, then build for that address.
    size = purgatory_size(handoff, regions=regions, digest=digest, options=options, backup=backup)
    seg = layout.place(Role.PURGATORY, b"", memsz=size, window=window, what="generated entry code")
    image = build_purgatory(seg.mem, handoff, regions=regions, digest=digest, options=options, backup=backup)
    layout.replace(seg, image.code)
    return image.entry
