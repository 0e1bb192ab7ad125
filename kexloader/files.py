"""Image, initrd and module files: mapped without a copy, inflated when their content is compressed, opened
for kexec_file_load. The only place the library reads the files a user names."""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import DecompressionError, KexloaderError
from .formats import compression
from .model import Module

FileData = bytes | bytearray | memoryview  # a mapped file is a memoryview: never copied

# a kernel, hypervisor or module inflating past this (1 GiB) is a decompression bomb; a name of its own here
# so that tests can lower it for the readers below
DECOMPRESSED_LIMIT = compression.DEFAULT_LIMIT


def read_file(path: str | Path, what: str) -> FileData:
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


def read_image(path: str | Path, what: str) -> FileData:
    """An image file, decompressed when its content says it is compressed (never by its name)."""
    return inflate(read_file(path, what), what, path)


def inflate(data: FileData, what: str, path: str | Path) -> FileData:
    """`data` decompressed when its content is compressed, else `data` itself."""
    try:
        out, _ = compression.maybe_decompress(data, limit=DECOMPRESSED_LIMIT)
    except compression.CompressionError as e:
        raise DecompressionError(f"{what} {path}: {e}") from e
    return out


@contextlib.contextmanager
def open_for_file_load(kernel: str | Path, initrd: str | Path | None) -> Iterator[tuple[int, int]]:
    """File descriptors for kexec_file_load: the kernel as is, or, when compressed, decompressed into a memfd
    (the kernel parses only a plain bzImage); the initrd as is, or -1."""
    fds: list[int] = []
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


def _open(path: str | Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise KexloaderError(f"cannot read {what} {path}: {e.strerror}") from e


def read_module(spec: str, is_kernel: Callable[[FileData], bool]) -> Module:
    """--module="FILE args": the file, decompressed only when what comes out `is_kernel` (a gzip'ed dom0
    kernel; Xen wants it plain), and the whole string as its command line (Xen drops the first word)."""
    path = spec.split()[0]
    raw = read_file(path, "module")
    data = raw
    if compression.sniff(raw):
        inflated = inflate(raw, "module", path)
        if is_kernel(inflated):
            data = inflated
    return Module(path, data, spec.strip())
