"""kexec_load(2), reboot(2) and the sysfs status files, through ctypes.

Thin on purpose: build `struct kexec_segment[]`, call, turn errno into a sentence.

Newer flags are found at run time, by asking the kernel with an argument it must reject (flag_supported):
both syscalls check their flags before anything else, so an unknown flag gives EINVAL while a known one gets
as far as the next check (a NULL segment list: EFAULT; kernel fd -1: EBADF), and nothing is loaded, unloaded
or freed (neither probe is a crash load). Measured on Debian's 7.3.4: kexec_load accepts 0x4 and 0x8 and
rejects 0x10: that kernel has no kexec_load debug flag (kexec-tools' master sends KEXEC_DEBUG = 0x10 with -d,
for a kernel patch that 7.3 does not have, so its -c -d fails there); kexec_file_load accepts DEBUG (0x8),
NO_CMA (0x10) and FORCE_DTB (0x20). Debian 12's 6.1 knows none of them. On kernels with kexec_load_limit_*
(6.6+) each probe counts as one load; they are only made for -d and --no-cma.
"""

from __future__ import annotations

import errno as E
import os
import sys

# `kexloader -u` imports this module (kexloader/entry.py): typing, pathlib, contextlib and functools would cost it
# more than the rest of its run, so they are only named for the type checker (which reads this block all the same).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import contextlib
    import ctypes  # imported by the calls that use it
    from typing import Any, TextIO

    from ..model import Plan

    StrPath = str | os.PathLike[str]

from .. import kexec_sysfs
from ..errors import BackendError
from ..kexec_abi import KEXEC_ARCH_X86_64, KEXEC_ON_CRASH  # not ..model: -u does not import the plan model

SYS_REBOOT = 169  # arch/x86/entry/syscalls/syscall_64.tbl
SYS_KEXEC_LOAD = 246
SYS_KEXEC_FILE_LOAD = 320
KEXEC_FILE_UNLOAD = 0x1
KEXEC_FILE_ON_CRASH = 0x2
KEXEC_FILE_NO_INITRAMFS = 0x4
KEXEC_FILE_DEBUG = 0x8  # Linux 6.7+: the kernel logs how it laid the image out (kexec_dprintk)
KEXEC_FILE_NO_CMA = 0x10  # Linux 6.17+: do not place the segments in CMA (default: kexec_file may, to avoid a copy)
# kexec_file_load errors after which kexec-tools falls back to kexec_load (-a) or gives up with 253 (-s)
FILE_FALLBACK_ERRNOS = frozenset({E.ENOSYS, E.EINVAL, E.ENOEXEC, E.EOPNOTSUPP})
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543
KEXEC_DEBUG = 0x10  # kexec-tools' name for a kexec_load debug flag; not in mainline as of 7.3 (measured: EINVAL)
FEATURES = {  # name -> (syscall, flag): see flag_supported
    "load-debug": (SYS_KEXEC_LOAD, KEXEC_DEBUG),
    "file-debug": (SYS_KEXEC_FILE_LOAD, KEXEC_FILE_DEBUG),
    "file-no-cma": (SYS_KEXEC_FILE_LOAD, KEXEC_FILE_NO_CMA),
}


_segment_type: type[ctypes.Structure] | None = None


def kexec_segment_type() -> type[ctypes.Structure]:
    """struct kexec_segment (include/uapi/linux/kexec.h), 32 bytes; made once, when a load needs it."""
    global _segment_type
    if _segment_type is not None:
        return _segment_type
    import ctypes

    class KexecSegment(ctypes.Structure):
        _fields_ = [
            ("buf", ctypes.c_void_p),
            ("bufsz", ctypes.c_size_t),
            ("mem", ctypes.c_void_p),
            ("memsz", ctypes.c_size_t),
        ]

    assert ctypes.sizeof(KexecSegment) == 32
    _segment_type = KexecSegment
    return KexecSegment


_libc = None


def raw_syscall(nr: int, *args: Any) -> int:
    """The one place a real syscall leaves the process; tests replace it (tests/conftest.py).

    Returns the syscall's result, or -errno."""
    import ctypes
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    # ctypes passes bare ints as 32-bit C ints: wrap every argument.
    wrapped = [a if isinstance(a, (ctypes._SimpleCData, ctypes.Array, ctypes._Pointer)) else ctypes.c_ulong(a)
               for a in args]
    rc: int = _libc.syscall(ctypes.c_long(nr), *wrapped)
    return -ctypes.get_errno() if rc == -1 else rc


def _buffer_address(data: bytes | bytearray | memoryview, keep: list[object]) -> int:
    """Address of a bytes-like buffer, never a copy: bytes directly, a writable buffer (a copy-on-write
    mapping of a file) through ctypes' from_buffer, a read-only one through the buffer protocol. Everything
    that holds the address valid goes into `keep`, which the caller holds until the syscall returns."""
    import ctypes
    if len(data) == 0:
        return 0
    if isinstance(data, bytes):
        ptr = ctypes.c_char_p(data)
        keep.append(ptr)
        return ctypes.cast(ptr, ctypes.c_void_p).value or 0
    view = memoryview(data)
    if not view.contiguous:
        raise BackendError("a segment buffer is not contiguous memory", hint="this is a kexloader bug; please report it")
    keep.append(view)
    if not view.readonly:
        c = (ctypes.c_char * view.nbytes).from_buffer(view)
        keep.append(c)
        return ctypes.addressof(c)
    return _readonly_address(view)


def _readonly_address(view: memoryview) -> int:
    """The address of a read-only buffer's first byte (CPython's PyObject_GetBuffer). The export is released
    at once: `view`, which the caller keeps, holds its own, so the bytes stay where they are."""
    import ctypes

    class PyBuffer(ctypes.Structure):  # Py_buffer (Include/pybuffer.h)
        _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                    ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                    ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                    ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]

    pybuf = PyBuffer()
    api = ctypes.pythonapi
    api.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(PyBuffer), ctypes.c_int]
    api.PyBuffer_Release.argtypes = [ctypes.POINTER(PyBuffer)]
    if api.PyObject_GetBuffer(view, ctypes.byref(pybuf), 0) != 0:  # PyBUF_SIMPLE: contiguous bytes
        raise BackendError("a segment buffer cannot be handed to the kernel", hint="this is a kexloader bug")
    try:
        return pybuf.buf or 0
    finally:
        api.PyBuffer_Release(ctypes.byref(pybuf))


LOAD_ERRORS = {
    E.EPERM: ("the kernel refused to load an image (EPERM)",
              "run as root with CAP_SYS_BOOT; if the kernel is locked down (Secure Boot) or "
              "/proc/sys/kernel/kexec_load_disabled is 1, kexec_load cannot be used: try -s (kexec_file_load, "
              "with a signed bzImage under Secure Boot)"),
    E.ENOSYS: ("this kernel has no kexec_load (ENOSYS)", "the running kernel was built without CONFIG_KEXEC"),
    E.EBUSY: ("another kexec load or exec is in progress (EBUSY)", "try again when it has finished"),
    E.EINVAL: ("the kernel rejected the segment list (EINVAL)",
               "segments overlap, exceed 16, are larger than half of RAM, or a flag is not supported by this kernel"),
    E.EADDRNOTAVAIL: ("a segment or the entry lies where the kernel will not put it (EADDRNOTAVAIL)",
                      "for -p everything must be inside the crash kernel region; run with -d to see the segments"),
    E.ENOMEM: ("the kernel ran out of memory preparing the image (ENOMEM)",
               "for -p, leave a few MiB of the crash kernel region free"),
    E.EFAULT: ("the kernel could not read a segment buffer (EFAULT)", "this is a kexloader bug; please report it"),
}


def flag_supported(nr: int, flag: int) -> bool | None:
    """Does the running kernel know this kexec_load / kexec_file_load flag? None when it cannot tell (EPERM:
    not root, or kexec disabled; EBUSY). The probe is refused before it can load anything (module docstring)."""
    if nr == SYS_KEXEC_LOAD:
        rc = raw_syscall(SYS_KEXEC_LOAD, 0, 1, 0, KEXEC_ARCH_X86_64 | flag)  # NULL segments: EFAULT if known
        known = -E.EFAULT
    else:
        rc = raw_syscall(SYS_KEXEC_FILE_LOAD, (1 << 64) - 1, (1 << 64) - 1, 0, 0, KEXEC_FILE_NO_INITRAMFS | flag)
        known = -E.EBADF  # kernel fd -1 (the fds are C ints: all ones is -1)
    if rc == -E.EINVAL:
        return False
    if rc == known:
        return True
    return None


# ---- the kernel's log during a call (-d): /dev/kmsg records after the position it had before the call

def parse_kmsg(data: bytes) -> list[str]:
    """The message text of /dev/kmsg records ("PRIO,SEQ,USEC,FLAGS;text" plus " KEY=value" lines)."""
    out = []
    for line in data.decode(errors="replace").splitlines():
        if not line or line.startswith(" "):
            continue  # the dictionary lines of a record
        head, sep, text = line.partition(";")
        out.append(text if sep and "," in head else line)
    return out


class kernel_log:  # noqa: N801 -- used as `with kernel_log(...)`, like a function
    """Print to `out` (stderr) what the kernel logged while the block ran, one line per record, "kernel: ...".
    Nothing when the log cannot be read (no /dev/kmsg, dmesg_restrict without CAP_SYSLOG). A class, not
    contextlib.contextmanager: `kexloader -u` imports this module, and contextlib costs it a few ms."""

    def __init__(self, path: StrPath = "/dev/kmsg", out: TextIO | None = None):
        self.path, self.out, self.fd = path, out, -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return
        os.lseek(self.fd, 0, os.SEEK_END)

    def __exit__(self, *exc: object) -> None:
        if self.fd < 0:
            return
        chunks = []
        while True:
            try:
                data = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == E.EPIPE:  # records were overwritten while we read: carry on with the next
                    continue
                break
            if not data:
                break
            chunks.append(data)
        os.close(self.fd)
        self.fd = -1
        out = self.out or sys.stderr
        for text in parse_kmsg(b"".join(chunks)):
            out.write(f"kernel: {text}\n")


def kexec_loaded(root: StrPath, crash: bool) -> bool:
    """Is a normal (or crash) image loaded? The kernel's answer, read after a load (the facts hold the answer from
    before): /sys/kernel/kexec/[crash_]loaded (6.19+), else the old /sys/kernel/kexec_[crash_]loaded."""
    try:
        flag = kexec_sysfs.loaded_flag(root, crash)
    except OSError as e:
        raise BackendError(f"cannot read {e.filename}: {e.strerror}") from None
    if flag is None:
        paths = kexec_sysfs.candidates(root, "crash_loaded" if crash else "loaded")
        raise BackendError(f"neither {paths[0]} nor {paths[1]} exists", hint="is this kernel built with CONFIG_KEXEC?")
    return flag


def lockdown_mode(root: StrPath) -> str | None:
    """"integrity" or "confidentiality" when the kernel is locked down (the bracketed word of securityfs'
    lockdown file, "none [integrity] confidentiality"), None when it is not or cannot be told (no securityfs)."""
    try:
        with open(os.path.join(root, "sys/kernel/security/lockdown")) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    mode = text[start + 1:end] if 0 <= start < end else ""
    return mode if mode in ("integrity", "confidentiality") else None


class LinuxKexecBackend:
    """Loads through kexec_load(2) and starts through reboot(LINUX_REBOOT_CMD_KEXEC)."""

    name = "kexec_load"
    has_file_load = True

    def __init__(self, root: StrPath = "/", kmsg: StrPath = "/dev/kmsg"):
        self.root = root
        self.kmsg = kmsg
        self.debug = False  # -d: the kernel's debug flag where it has one, and its log printed to stderr
        self._supported: dict[str, bool | None] = {}

    def supports(self, feature: str) -> bool | None:
        """"load-debug", "file-debug", "file-no-cma": does the running kernel have it (None: cannot tell)."""
        if feature not in self._supported:
            self._supported[feature] = flag_supported(*FEATURES[feature])
        return self._supported[feature]

    def _log(self) -> contextlib.AbstractContextManager[None]:
        import contextlib
        return kernel_log(self.kmsg) if self.debug else contextlib.nullcontext()

    def load(self, plan: Plan) -> None:
        from ..model import Role
        if any(s.role == Role.MAP_ONLY for s in plan.segments):
            # Linux would zero-fill such a segment: the BIOS data area and more would be lost.
            raise BackendError("this plan was made for a Xen dom0 (it has map-only segments); "
                               "Linux's kexec_load cannot load it", hint="plan it on the machine that loads it")
        keep: list[object] = []
        segs = (kexec_segment_type() * len(plan.segments))()
        for seg, s in zip(sorted(plan.segments, key=lambda s: s.mem), segs):
            s.buf = _buffer_address(seg.data, keep) or None
            s.bufsz = seg.bufsz
            s.mem = seg.mem
            s.memsz = seg.memsz
        flags = plan.flags
        if self.debug and self.supports("load-debug"):
            flags |= KEXEC_DEBUG
        with self._log():
            rc = raw_syscall(SYS_KEXEC_LOAD, plan.entry, len(plan.segments), segs, flags)
        if rc < 0:
            self._refused_by_lockdown("kexec_load", -rc)
            self._fail("kexec_load", -rc)

    def load_file(self, kernel_fd: int, initrd_fd: int, cmdline: bytes, crash: bool, *, no_cma: bool = False) -> None:
        """kexec_file_load(2): the kernel reads, checks (signatures, lockdown) and lays out the bzImage itself.

        cmdline: NUL-terminated, as the caller encoded it (Cmdline.encode); its length is the kernel's cmdline_len.
        no_cma: KEXEC_FILE_NO_CMA (the caller checks supports("file-no-cma") first). With self.debug,
        KEXEC_FILE_DEBUG where the kernel has it."""
        flags = (KEXEC_FILE_ON_CRASH if crash else 0) | (KEXEC_FILE_NO_INITRAMFS if initrd_fd < 0 else 0)
        if no_cma:
            flags |= KEXEC_FILE_NO_CMA
        if self.debug and self.supports("file-debug"):
            flags |= KEXEC_FILE_DEBUG
        if self.debug:
            print(f"kexloader: kexec_file_load flags {flags:#x}", file=sys.stderr)
        with self._log():
            import ctypes
            rc = raw_syscall(SYS_KEXEC_FILE_LOAD, kernel_fd, initrd_fd, len(cmdline), ctypes.c_char_p(cmdline), flags)
        if rc < 0:
            self._fail_file("kexec_file_load", -rc)

    def unload_file(self, crash: bool) -> None:
        flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if crash else 0)
        rc = raw_syscall(SYS_KEXEC_FILE_LOAD, -1, -1, 0, 0, flags)
        if rc < 0:
            self._fail_file("kexec_file_load (unload)", -rc)

    @staticmethod
    def _fail_file(call: str, err: int) -> None:
        messages = {
            E.ENOEXEC: "this kernel cannot load that image itself (only a 64-bit relocatable bzImage)",
            E.EKEYREJECTED: "the image's signature was rejected", E.ENOKEY: "the image is not signed with a "
            "trusted key", E.EBADMSG: "the image's signature is malformed",
            E.EPERM: "the kernel refused (EPERM): run as root with CAP_SYS_BOOT",
            E.ENOSYS: "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE)",
        }
        raise BackendError(f"{call}: {messages.get(err, os.strerror(err))}", errno=err)

    def unload(self, crash: bool) -> None:
        flags = KEXEC_ARCH_X86_64 | (KEXEC_ON_CRASH if crash else 0)
        rc = raw_syscall(SYS_KEXEC_LOAD, 0, 0, 0, flags)
        if rc < 0:
            self._refused_by_lockdown("kexec_load (unload)", -rc)
            self._fail("kexec_load (unload)", -rc)

    def _refused_by_lockdown(self, call: str, err: int) -> None:
        """kexec_load refused on a locked-down kernel (Secure Boot): say that lockdown is why, in one line. The errno
        is EPERM, or EACCES (measured: Debian 12's 6.1 under Secure Boot answers "Permission denied")."""
        mode = lockdown_mode(self.root) if err in (E.EPERM, E.EACCES) else None
        if mode is not None:
            raise BackendError(f"{call}: the kernel is locked down (lockdown={mode}, e.g. by Secure Boot) and refuses "
                               "kexec_load", hint="leave out -c: the default (-a) and -s load through kexec_file_load, "
                               "which takes a kernel signed with a key the kernel trusts", errno=err)

    def loaded(self, crash: bool) -> bool:
        """/sys/kernel/kexec/[crash_]loaded (6.19+), else /sys/kernel/kexec_[crash_]loaded."""
        return kexec_loaded(self.root, crash)

    def hotplug_active(self) -> bool | None:
        """After a crash load with --hotplug: will the kernel update it? /sys/devices/system/{cpu,memory}/
        crash_hotplug (1: yes; they report on the loaded crash image). None when neither file exists."""
        values = []
        for kind in ("cpu", "memory"):
            try:
                with open(os.path.join(self.root, "sys/devices/system", kind, "crash_hotplug")) as f:
                    values.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
        return any(values) if values else None

    def execute(self) -> None:
        os.sync()
        rc = raw_syscall(SYS_REBOOT, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, 0)
        self._fail("reboot(LINUX_REBOOT_CMD_KEXEC)", -rc if rc < 0 else E.EINVAL)

    @staticmethod
    def _fail(call: str, err: int) -> None:
        message, hint = LOAD_ERRORS.get(err, (f"{call} failed: {os.strerror(err)}", None))
        raise BackendError(f"{call}: {message}", errno=err, hint=hint)
