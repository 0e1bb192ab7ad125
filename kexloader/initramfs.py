"""Several initrds as the one initramfs the next kernel unpacks.

The kernel's unpacker (init/initramfs.c unpack_to_rootfs) reads concatenated archives, skips zero bytes
between them and starts an uncompressed cpio only at a 4-byte boundary; the early microcode loader
(lib/earlycpio.c find_cpio_data) walks the same archives in 4-byte steps. So every part is padded with
zeros to a multiple of 4 bytes, as systemd-stub's combine_initrds() does (ALIGN4 of each part, the last
one included).

Two ways to hand the parts over, same contents to the kernel:
- `join`: one buffer (kexec_file_load takes one initrd fd; a planner that places one segment);
- `place`: kexec_load segments back to back, one per part, each page-aligned (so its data is passed
  as it is, an mmap slice, never copied) and the gaps zero-filled by the kernel: a part then ends
  on a page boundary, which is also a 4-byte boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .memory import Layout, SegmentData
from .model import PAGE_SIZE, Range, Role, Segment, align_up

# Parts beyond this many are joined into one segment: kexec_load takes 16 segments at most, and the
# kernel, command line, zero page, purgatory and setup_data need up to 8 of them.
MAX_SEPARATE_PARTS = 6


@dataclass(frozen=True, slots=True)
class InitrdPart:
    """One piece of the initramfs: where it came from (a file, a UKI section) and its bytes."""

    name: str
    data: SegmentData = b""


def padded_size(parts: Iterable[InitrdPart]) -> int:
    """Bytes of the joined initramfs: each part padded to 4 bytes."""
    return sum(align_up(len(p.data), 4) for p in parts)


def join(parts: Sequence[InitrdPart]) -> bytes:
    """The parts concatenated, each padded with zeros to a multiple of 4 bytes (one copy)."""
    out = bytearray(padded_size(parts))
    at = 0
    for p in parts:
        out[at:at + len(p.data)] = p.data
        at += align_up(len(p.data), 4)
    return bytes(out)


def describe(parts: Iterable[InitrdPart]) -> str:
    return " + ".join(f"{p.name} ({len(p.data)} bytes)" for p in parts)


def coalesce(parts: Iterable[InitrdPart]) -> list[InitrdPart]:
    """Runs of generated parts (bytes: the stub's /.extra archives) joined into one part each; parts that are
    views of files (sections of a UKI, --initrd files) stay as they are, to be passed without a copy."""
    out: list[InitrdPart] = []
    run: list[InitrdPart] = []

    def flush() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else InitrdPart(describe(run), join(run)))
            run.clear()
    for p in parts:
        if isinstance(p.data, (bytes, bytearray)):
            run.append(p)
        else:
            flush()
            out.append(p)
    flush()
    return out


def place(layout: Layout, parts: Iterable[InitrdPart], *, window: Range, what: str = "") -> Segment:
    """Place the parts contiguously in `layout`, top-down inside `window`; the returned Segment spans the
    whole initramfs (its `mem`, and `data` sized as the kernel's ramdisk_size) and is not itself recorded.

    One part: one segment with the data as it is. Several: one segment per part, each part starting on a
    page (zeros between them), after runs of generated parts are joined (coalesce), unless there are still
    more than MAX_SEPARATE_PARTS (then all are joined)."""
    parts = [p for p in parts if len(p.data)]
    what = what or describe(parts)
    parts = coalesce(parts)
    if len(parts) > MAX_SEPARATE_PARTS:
        parts = [InitrdPart(what, join(parts))]
    if len(parts) == 1:
        return layout.place(Role.INITRD, parts[0].data, window=window, what=what)
    strides = [align_up(len(p.data), PAGE_SIZE) for p in parts[:-1]]
    total = sum(strides) + len(parts[-1].data)
    block = layout.place(Role.INITRD, b"", memsz=total, window=window, what=what)  # reserve the whole run
    layout.segments.remove(block)
    at = block.mem
    for p, stride in zip(parts, strides + [block.memsz - sum(strides)]):
        layout.put(Role.INITRD, p.data, at, stride, what=p.name)
        at += stride
    return Segment(Role.INITRD, block.mem, block.memsz, _Sized(total), what)


class _Sized:
    """Stands for the joined initramfs where only its length is read (the zero page's ramdisk_size)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def newc_cpio(directory: str, files: Iterable[tuple[str, SegmentData]], *, dir_mode: int = 0o555,
              file_mode: int = 0o444) -> bytes:
    """A newc cpio archive of `files` ((name, bytes) pairs) in `directory`, its parent directories first, as
    systemd-stub packs the files it passes to the kernel (inodes from 1, owner root, mtime 0, mode as given;
    Documentation/driver-api/early-userspace/buffer-format.rst)."""
    out = bytearray()
    inode = 1

    def record(name: str, mode: int, body: bytes = b"", ino: int = 0, nlink: int = 1) -> None:
        fields = (ino, mode, 0, 0, nlink, 0, len(body), 0, 0, 0, 0, len(name) + 1, 0)
        out.extend(b"070701" + "".join(f"{v:08x}" for v in fields).encode() + name.encode() + b"\0")
        out.extend(bytes(-len(out) % 4))
        out.extend(body)
        out.extend(bytes(-len(out) % 4))

    parts = directory.strip("/").split("/")
    for i in range(len(parts)):
        record("/".join(parts[:i + 1]), 0o040000 | (dir_mode if i == len(parts) - 1 else 0o555), ino=inode)
        inode += 1
    for name, body in files:
        record(f"{'/'.join(parts)}/{name}", 0o100000 | file_mode, bytes(body), ino=inode)
        inode += 1
    record("TRAILER!!!", 0, ino=0)
    return bytes(out)
