"""Where segments may go: free-range arithmetic, the hole allocator, and the final validation.

Pure functions over Range values; they never look at the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import PlacementError
from .kexec_abi import KEXEC_SEGMENT_MAX
from .model import PAGE_SIZE, Plan, Range, Role, Segment, align_down, align_up

SegmentData = bytes | bytearray | memoryview  # a segment's bytes: a memoryview of an mmap'ed file is not copied

ADDRESS_LIMIT = 1 << 46  # KEXEC_DESTINATION_MEMORY_LIMIT with 4-level paging (MAXMEM)
EVERYWHERE = Range(0, ADDRESS_LIMIT)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sort and join ranges that overlap or touch."""
    out: list[Range] = []
    for r in sorted(r for r in ranges if r.size):
        if out and r.start <= out[-1].end:
            last = out[-1]
            out[-1] = Range.between(last.start, max(last.end, r.end))
        else:
            out.append(r)
    return out


def subtract(ranges: Iterable[Range], taken: Iterable[Range]) -> list[Range]:
    """What is left of `ranges` once every range in `taken` is removed."""
    left = merge(ranges)
    for t in taken:
        left = [piece for r in left for piece in r.minus(t)]
    return left


def allocate(free: Sequence[Range], size: int, *, align: int = PAGE_SIZE, window: Range = EVERYWHERE,
             top_down: bool = False) -> Range:
    """The lowest (or highest) `align`-aligned run of `size` bytes inside one free range and inside `window`."""
    best: Range | None = None
    for r in free:
        room = r.intersect(window)
        if room is None:
            continue
        if top_down:
            start = align_down(room.end - size, align)
            if start < room.start or room.end < size:
                continue
            if best is None or start > best.start:
                best = Range(start, size)
        else:
            start = align_up(room.start, align)
            if start + size > room.end:
                continue
            if best is None or start < best.start:
                best = Range(start, size)
    if best is None:
        raise PlacementError(
            f"no free memory for {size:#x} bytes aligned to {align:#x} in {window}",
            hint=f"largest free block there is {largest(free, window):#x} bytes")
    return best


def largest(free: Sequence[Range], window: Range) -> int:
    sizes = [room.size for r in free if (room := r.intersect(window))]
    return max(sizes, default=0)


class Layout:
    """Segments placed so far in a set of usable ranges (RAM, or the crash region for kdump)."""

    def __init__(self, usable: Sequence[Range]):
        self.usable = merge(usable)
        self.segments: list[Segment] = []

    def free(self) -> list[Range]:
        return subtract(self.usable, (s.range for s in self.segments))

    def place(self, role: Role, data: SegmentData, *, memsz: int | None = None, align: int = PAGE_SIZE,
              window: Range = EVERYWHERE, top_down: bool = True, what: str = "") -> Segment:
        """Find room for `data` (zero-filled up to `memsz`) and record the segment."""
        size = align_up(max(memsz or 0, len(data), 1), PAGE_SIZE)
        try:
            spot = allocate(self.free(), size, align=max(align, PAGE_SIZE), window=window, top_down=top_down)
        except PlacementError as e:
            raise PlacementError(f"{role} ({what or 'data'}): {e}", hint=e.hint) from None
        return self.put(role, data, spot.start, size, what)

    def put(self, role: Role, data: SegmentData, mem: int, memsz: int, what: str = "") -> Segment:
        """Record a segment at a fixed address (an ELF PT_LOAD, a non-relocatable kernel)."""
        seg = Segment(role, mem, align_up(max(memsz, len(data)), PAGE_SIZE), data, what)
        for other in self.segments:
            if seg.range.overlaps(other.range):
                raise PlacementError(f"{role} at {seg.range} overlaps {other.role} at {other.range}")
        if not any(u.contains(seg.range) for u in self.usable):
            raise PlacementError(f"{role} at {seg.range} is not inside usable memory",
                                 hint="usable: " + ", ".join(str(u) for u in self.usable))
        self.segments.append(seg)
        return seg

    def replace(self, seg: Segment, data: SegmentData) -> Segment:
        """Swap in the final bytes of a segment placed earlier (e.g. code built once its address is known)."""
        if len(data) > seg.memsz:
            raise PlacementError(f"{seg.role} grew to {len(data):#x} bytes, more than the {seg.memsz:#x} reserved")
        new = Segment(seg.role, seg.mem, seg.memsz, data, seg.what)
        self.segments[self.segments.index(seg)] = new
        return new


def validate(plan: Plan, usable: Sequence[Range]) -> None:
    """What the kernel will check (sanity_check_segment_list) plus what kexec-tools checks, with readable errors."""
    segs = sorted(plan.segments, key=lambda s: s.mem)
    if not segs:
        raise PlacementError("the plan has no segments")
    if len(segs) > KEXEC_SEGMENT_MAX:
        raise PlacementError(f"{len(segs)} segments; the kernel takes at most {KEXEC_SEGMENT_MAX}")
    usable = merge(usable)
    for s in segs:
        if s.mem % PAGE_SIZE or s.memsz % PAGE_SIZE:
            raise PlacementError(f"{s.role} at {s.range} is not page aligned")
        if s.bufsz > s.memsz:
            raise PlacementError(f"{s.role} holds {s.bufsz:#x} bytes but reserves only {s.memsz:#x}")
        if s.range.end > ADDRESS_LIMIT:
            raise PlacementError(f"{s.role} at {s.range} is above the {ADDRESS_LIMIT:#x} limit")
        if not any(u.contains(s.range) for u in usable):
            raise PlacementError(f"{s.role} at {s.range} is not inside usable memory")
    for a, b in zip(segs, segs[1:]):
        if a.range.overlaps(b.range):
            raise PlacementError(f"{a.role} at {a.range} overlaps {b.role} at {b.range}")
    if not any(s.mem <= plan.entry < s.range.end for s in segs):
        raise PlacementError(f"entry {plan.entry:#x} is not inside any segment")
