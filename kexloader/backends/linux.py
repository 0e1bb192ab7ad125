"""kexec_load(2), reboot(2) and the sysfs status files, through ctypes.

Thin on purpose: build `struct kexec_segment[]`, call, turn errno into a sentence.
"""

from __future__ import annotations

import ctypes
import errno as E
import os
from pathlib import Path

from ..errors import BackendError
from ..model import MAP_ONLY, Plan

SYS_REBOOT = 169  # arch/x86/entry/syscalls/syscall_64.tbl
SYS_KEXEC_LOAD = 246
SYS_KEXEC_FILE_LOAD = 320
KEXEC_FILE_UNLOAD = 0x1
KEXEC_FILE_ON_CRASH = 0x2
KEXEC_FILE_NO_INITRAMFS = 0x4
# kexec_file_load errors after which kexec-tools falls back to kexec_load (-a) or gives up with 253 (-s)
FILE_FALLBACK_ERRNOS = frozenset({E.ENOSYS, E.EINVAL, E.ENOEXEC, E.EOPNOTSUPP})
LINUX_REBOOT_MAGIC1 = 0xFEE1DEAD
LINUX_REBOOT_MAGIC2 = 672274793
LINUX_REBOOT_CMD_KEXEC = 0x45584543
KEXEC_ON_CRASH = 0x1
KEXEC_ARCH_X86_64 = 62 << 16


class KexecSegment(ctypes.Structure):
    """struct kexec_segment (include/uapi/linux/kexec.h), 32 bytes."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("bufsz", ctypes.c_size_t),
        ("mem", ctypes.c_void_p),
        ("memsz", ctypes.c_size_t),
    ]


assert ctypes.sizeof(KexecSegment) == 32

_libc = None


def raw_syscall(nr: int, *args) -> int:
    """The one place a real syscall leaves the process; tests replace it (tests/conftest.py).

    Returns the syscall's result, or -errno."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    # ctypes passes bare ints as 32-bit C ints: wrap every argument.
    wrapped = [a if isinstance(a, (ctypes._SimpleCData, ctypes.Array, ctypes._Pointer)) else ctypes.c_ulong(a)
               for a in args]
    rc = _libc.syscall(ctypes.c_long(nr), *wrapped)
    return -ctypes.get_errno() if rc == -1 else rc


def _buffer_address(data, keep: list) -> int:
    """Address of a bytes-like buffer without copying it where ctypes allows."""
    if len(data) == 0:
        return 0
    if isinstance(data, bytes):
        ptr = ctypes.c_char_p(data)
        keep.append(ptr)
        return ctypes.cast(ptr, ctypes.c_void_p).value
    view = memoryview(data)
    if not view.readonly and view.contiguous:
        c = (ctypes.c_char * view.nbytes).from_buffer(view)
        keep.append(c)
        return ctypes.addressof(c)
    copy = ctypes.create_string_buffer(bytes(view), view.nbytes)
    keep.append(copy)
    return ctypes.addressof(copy)


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


class LinuxKexecBackend:
    """Loads through kexec_load(2) and starts through reboot(LINUX_REBOOT_CMD_KEXEC)."""

    name = "kexec_load"

    def __init__(self, sysfs: Path = Path("/sys/kernel")):
        self.sysfs = sysfs

    def load(self, plan: Plan) -> None:
        if any(s.role == MAP_ONLY for s in plan.segments):
            # Linux would zero-fill such a segment: the BIOS data area and more would be lost.
            raise BackendError("this plan was made for a Xen dom0 (it has map-only segments); "
                               "Linux's kexec_load cannot load it", hint="plan it on the machine that loads it")
        keep: list = []
        segs = (KexecSegment * len(plan.segments))()
        for seg, s in zip(sorted(plan.segments, key=lambda s: s.mem), segs):
            s.buf = _buffer_address(seg.data, keep) or None
            s.bufsz = seg.bufsz
            s.mem = seg.mem
            s.memsz = seg.memsz
        rc = raw_syscall(SYS_KEXEC_LOAD, plan.entry, len(plan.segments), segs, plan.flags)
        if rc < 0:
            self._fail("kexec_load", -rc)

    def load_file(self, kernel_fd: int, initrd_fd: int, cmdline: str, crash: bool) -> None:
        """kexec_file_load(2): the kernel reads, checks (signatures, lockdown) and lays out the bzImage itself."""
        line = cmdline.encode() + b"\0"
        flags = (KEXEC_FILE_ON_CRASH if crash else 0) | (KEXEC_FILE_NO_INITRAMFS if initrd_fd < 0 else 0)
        rc = raw_syscall(SYS_KEXEC_FILE_LOAD, kernel_fd, initrd_fd, len(line), ctypes.c_char_p(line), flags)
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
            self._fail("kexec_load (unload)", -rc)

    def loaded(self, crash: bool) -> bool:
        path = self.sysfs / ("kexec_crash_loaded" if crash else "kexec_loaded")
        try:
            return path.read_text().strip() == "1"
        except OSError as e:
            raise BackendError(f"cannot read {path}: {e.strerror}", hint="is this kernel built with CONFIG_KEXEC?")

    def execute(self) -> None:
        os.sync()
        rc = raw_syscall(SYS_REBOOT, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, 0)
        self._fail("reboot(LINUX_REBOOT_CMD_KEXEC)", -rc if rc < 0 else E.EINVAL)

    @staticmethod
    def _fail(call: str, err: int) -> None:
        message, hint = LOAD_ERRORS.get(err, (f"{call} failed: {os.strerror(err)}", None))
        raise BackendError(f"{call}: {message}", errno=err, hint=hint)
