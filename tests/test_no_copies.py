"""Large inputs are not copied (issue 15): files are mapped, segments are views of the mapping, the backend
hands the kernel the mapping's own addresses, and searching an image for payloads copies a window at a time."""

from __future__ import annotations

import ctypes
import gzip
import os
import tracemalloc
from pathlib import Path

import pytest

from kexloader import api, files, system
from kexloader.backends import linux
from kexloader.formats import compression
from kexloader.model import Role

ROOT = Path(__file__).resolve().parent.parent
TINY_BZIMAGE = ROOT / "fixtures/bzimage/tiny.bzImage"
DEVHOST = ROOT / "fixtures/snapshots/devhost.json"


def _base(buffer: bytearray | memoryview) -> int:
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


def test_a_writable_view_is_handed_over_where_it_is():
    data = bytearray(os.urandom(1 << 16))
    keep: list[object] = []
    assert linux._buffer_address(memoryview(data)[100:200], keep) == _base(data) + 100


def test_a_read_only_view_is_handed_over_where_it_is():
    data = bytes(os.urandom(1 << 16))
    keep: list[object] = []
    start = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert linux._buffer_address(memoryview(data)[300:4000], keep) == start + 300
    assert ctypes.string_at(linux._buffer_address(memoryview(data)[5:9], keep), 4) == data[5:9]


def test_a_plans_kernel_and_initrd_are_views_of_the_mapped_files(tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(os.urandom(3 << 20))
    facts = system.load_snapshot(DEVHOST)
    plan = api.plan_intent(api.LoadIntent(kernel=str(TINY_BZIMAGE), initrds=(str(initrd),), append="quiet"), facts)
    big = {s.role: s.data for s in plan.segments if s.role in (Role.KERNEL, Role.INITRD)}
    assert set(big) == {Role.KERNEL, Role.INITRD}
    for data in big.values():
        assert isinstance(data, memoryview) and not data.readonly  # ACCESS_COPY: from_buffer, no copy
    mapped = files.read_file(initrd, "initrd")
    assert bytes(big[Role.INITRD]) == bytes(mapped)


def test_find_payloads_does_not_copy_a_mapped_image(tmp_path):
    path = tmp_path / "image"
    with open(path, "wb") as f:
        f.write(os.urandom(16 << 20))
        f.write(gzip.compress(b"payload" * 1000))
    image = files.read_file(path, "image")
    tracemalloc.start()
    try:
        found = compression.find_payloads(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (16 << 20, "gzip") in found
    assert peak < 4 << 20, f"{peak} bytes allocated while searching a 16 MiB mapping"


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 3])
def test_windowed_search_finds_what_bytes_find_finds(size):
    data = bytearray(os.urandom(size))
    magic = b"\x1f\x8b\x08"
    for at in {0, size // 2, max(size - 3, 0), (1 << 20) - 2}:
        if at + 3 <= size:
            data[at:at + 3] = magic
    want, pos = [], bytes(data).find(magic)
    while pos >= 0:
        want.append(pos)
        pos = bytes(data).find(magic, pos + 1)
    view = memoryview(data)
    assert list(compression._find_all(view, view, magic)) == want
    assert list(compression._find_all(bytes(data), view, magic)) == want
