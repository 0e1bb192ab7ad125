"""The hole allocator and the final validation (kexloader/memory.py)."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexloader.errors import PlacementError
from kexloader.memory import Layout, allocate, merge, subtract, validate
from kexloader.model import MiB, Plan, Range, Role, Segment

R = Range


@pytest.mark.parametrize("name, free, size, align, window, top_down, want", [
    ("first fit", [R(0x1000, 0x10000)], 0x2000, 0x1000, R(0, 1 << 40), False, R(0x1000, 0x2000)),
    ("last fit", [R(0x1000, 0x10000)], 0x2000, 0x1000, R(0, 1 << 40), True, R(0xF000, 0x2000)),
    ("aligned up", [R(0x1000, 0x400000)], 0x1000, 0x200000, R(0, 1 << 40), False, R(0x200000, 0x1000)),
    ("aligned down", [R(0x1000, 0x400000)], 0x1000, 0x200000, R(0, 1 << 40), True, R(0x400000, 0x1000)),
    ("window clips", [R(0, 0x100000000)], 0x1000, 0x1000, R(16 * MiB, 0x1000), True, R(16 * MiB, 0x1000)),
    ("skips small", [R(0x1000, 0x1000), R(0x10000, 0x3000)], 0x2000, 0x1000, R(0, 1 << 40), False,
     R(0x10000, 0x2000)),
    ("highest range", [R(0x1000, 0x3000), R(0x10000, 0x3000)], 0x2000, 0x1000, R(0, 1 << 40), True,
     R(0x11000, 0x2000)),
])
def test_allocate(name, free, size, align, window, top_down, want):
    assert allocate(free, size, align=align, window=window, top_down=top_down) == want


def test_allocate_says_what_did_not_fit():
    with pytest.raises(PlacementError, match=r"0x3000 bytes .* largest free block there is 0x2000|0x3000 bytes"):
        allocate([R(0x1000, 0x2000)], 0x3000)


def test_merge_and_subtract():
    assert merge([R(0x2000, 0x1000), R(0, 0x1000), R(0x1000, 0x1000)]) == [R(0, 0x3000)]
    assert subtract([R(0, 0x10000)], [R(0x4000, 0x1000)]) == [R(0, 0x4000), R(0x5000, 0xB000)]


ranges = st.builds(lambda s, n: R(s * 0x1000, n * 0x1000), st.integers(0, 1 << 20), st.integers(1, 1 << 12))


@settings(max_examples=300, deadline=None)
@given(free=st.lists(ranges, max_size=8), size=st.integers(1, 1 << 24),
       align=st.sampled_from([0x1000, 0x10000, 1 << 21]), top_down=st.booleans())
def test_allocate_is_aligned_and_inside_free(free, size, align, top_down):
    with contextlib.suppress(PlacementError):
        got = allocate(merge(free), size, align=align, top_down=top_down)
        assert got.start % align == 0 and got.size == size
        assert any(r.contains(got) for r in merge(free))


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 1 << 22), min_size=1, max_size=12), top_down=st.booleans())
def test_layout_never_overlaps(sizes, top_down):
    layout = Layout([R(MiB, 64 * MiB)])
    with contextlib.suppress(PlacementError):
        for i, n in enumerate(sizes):
            layout.place(Role.MODULE, b"x" * min(n, 64), memsz=n, top_down=top_down)
    segs = sorted(layout.segments, key=lambda s: s.mem)
    for a, b in zip(segs, segs[1:]):
        assert a.range.end <= b.mem
    assert all(s.mem % 0x1000 == 0 and s.memsz % 0x1000 == 0 for s in segs)


def test_put_refuses_overlap_and_outside_ram():
    layout = Layout([R(MiB, 16 * MiB)])
    layout.put(Role.KERNEL, b"x", 2 * MiB, 0x1000)
    with pytest.raises(PlacementError, match="initrd at .* overlaps kernel at"):
        layout.put(Role.INITRD, b"y", 2 * MiB, 0x2000)
    with pytest.raises(PlacementError, match="not inside usable memory"):
        layout.put(Role.CMDLINE, b"z", 32 * MiB, 0x1000)


def seg(role, mem, memsz, data=b"x"):
    return Segment(role, mem, memsz, data)


@pytest.mark.parametrize("segments, entry, words", [
    ([seg("a", 0x100800, 0x1000)], 0x100800, "not page aligned"),
    ([seg("a", MiB, 0x1000, b"x" * 0x1001)], MiB, "reserves only"),
    ([seg("a", MiB, 0x2000), seg("b", MiB + 0x1000, 0x1000)], MiB, "overlaps"),
    ([seg("a", MiB, 0x1000)], 0x5000, "entry 0x5000 is not inside any segment"),
    ([seg(f"s{i}", MiB + i * 0x1000, 0x1000) for i in range(17)], MiB, "at most 16"),
    ([seg("a", 0x100000000, 0x1000)], 0x100000000, "not inside usable memory"),
])
def test_validate_rejects(segments, entry, words):
    with pytest.raises(PlacementError, match=words):
        validate(Plan(entry=entry, flags=0, segments=tuple(segments)), [R(0, 0x80000000)])


def test_validate_accepts_a_good_plan():
    validate(Plan(entry=MiB, flags=0, segments=(seg("a", MiB, 0x1000), seg("b", 2 * MiB, 0x2000))),
             [R(0, 0x80000000)])
