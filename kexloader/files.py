"""Image, initrd and module files: mapped without a copy, inflated when their content is compressed, opened
for kexec_file_load. The only place the library reads the files a user names."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import DecompressionError, FileOpenError, KexloaderError
from .formats import compression
from .model import Module

FileData = bytes | bytearray | memoryview  # a mapped file is a memoryview: never copied

# a kernel, hypervisor or module inflating past this (1 GiB) is a decompression bomb; a name of its own here
# so that tests can lower it for the readers below
DECOMPRESSED_LIMIT = compression.DEFAULT_LIMIT


def read_file(path: str | Path, what: str) -> FileData:
    """The file's bytes as a copy-on-write mapping (no copy, writable for ctypes), or bytes when empty.
    Only a regular file is read: a FIFO would block, a device never end (/dev/zero), a directory fail later."""
    fd = open_regular(path, what)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_COPY))
    except (OSError, ValueError) as e:  # ValueError: mmap refuses (a file truncated under us)
        raise KexloaderError(f"cannot read {what} {_shown(path)}: {getattr(e, 'strerror', None) or e}") from e
    finally:
        os.close(fd)


def read_small(path: str | Path, what: str, limit: int) -> bytes:
    """A regular file of at most `limit` bytes (a snapshot, a plan.json), read whole."""
    fd = open_regular(path, what)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise KexloaderError(f"{what} {_shown(path)} is {size} bytes; at most {limit} are read")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    except OSError as e:
        raise KexloaderError(f"cannot read {what} {_shown(path)}: {e.strerror}") from e
    finally:
        os.close(fd)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: str | Path, what: str, *, follow_links: bool = True) -> int:
    """A read-only descriptor of `path`, refused (one line, nothing read) unless it is a regular file. Opened
    non-blocking, so a FIFO without a writer is refused instead of waiting for one. follow_links False: a
    symbolic link is refused too (the files of a saved plan)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_links:
            raise KexloaderError(f"cannot read {what} {_shown(path)}: a symbolic link (not followed here)") from e
        if e.errno == errno.ENXIO:  # a socket (or a device without its driver) cannot be opened at all
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    raise KexloaderError(f"cannot read {what} {_shown(path)}: a socket, not a regular file") from e
        raise FileOpenError(f"cannot read {what} {_shown(path)}: {e.strerror}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise KexloaderError(f"cannot read {what} {_shown(path)}: {kind}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomically(path: Path, data: bytes) -> None:
    """`data` written to a temporary file beside `path`, then renamed over it: whatever stops the write (an
    interrupt, ENOSPC, EFBIG) leaves the previous file, or none, and no temporary file."""
    path = Path(os.path.abspath(path))
    tmp = None
    try:
        import tempfile  # only writers need it (with shutil, the bz2 and lzma modules: not on -l's path)
        with _signals_held():  # made and named together: an interrupt cannot leave it unnamed
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def replace_directory(path: Path, fill: Callable[[Path], None], replaceable: Callable[[Path], bool]) -> None:
    """Build a directory with `fill(tmp)` in a temporary sibling, then put it at `path`: an interrupt or an
    error while filling leaves `path` as it was. An existing `path` is replaced only when it is empty or
    `replaceable(path)` says it holds only what fill writes (nothing else of the user's is removed)."""
    path = Path(os.path.abspath(path))  # "." and "dir/..": a name to put a sibling beside
    if path.exists() and not (path.is_dir() and not path.is_symlink()):
        raise FileExistsError(errno.EEXIST, "exists and is not a directory (a symbolic link is not followed)")
    if path.is_dir() and any(path.iterdir()) and not replaceable(path):
        raise FileExistsError(errno.ENOTEMPTY, "holds other files (give a new or empty directory)")
    path.parent.mkdir(parents=True, exist_ok=True)
    import shutil
    import tempfile
    tmp = old = None
    try:
        with _signals_held():
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())
        fill(tmp)
        with _signals_held():  # the old directory moves aside and the new one in, with no interrupt between
            try:
                if path.is_dir() and any(path.iterdir()):
                    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
                    os.replace(path, old)
                os.replace(tmp, path)
                tmp = None
            except BaseException:
                if old is not None and not path.exists():
                    os.replace(old, path)
                    old = None
                raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (a step that must not be cut in two)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _shown(path: str | Path) -> str:
    """A path for a message: bytes that are not UTF-8 (argv's surrogate escapes) as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_image(path: str | Path, what: str) -> FileData:
    """An image file, decompressed when its content says it is compressed (never by its name). An empty one
    is refused here, as kexec-tools does ("Cannot read", exit 1), before any image kind is asked."""
    data = read_file(path, what)
    if not len(data):
        raise KexloaderError(f"cannot read {what} {_shown(path)}: the file is empty")
    return inflate(data, what, path)


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
            view = memoryview(inflate(raw, "kernel", kernel)).cast("B")
            while view:
                view = view[os.write(fd, view):]
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            fds.append(open_regular(kernel, "kernel"))
        fds.append(open_regular(initrd, "initrd") if initrd is not None else -1)
        yield fds[0], fds[1]
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


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
