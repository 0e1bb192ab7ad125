"""The `kexloader` (and `kexec`) command: `-S` answered from sysfs, and `-u` and `-e` done by the Linux backend,
before the loader is imported; every other command line goes to kexloader.cli.main.

`kexec -S` is what scripts poll (kdump services at start-up, health checks) and `kexec -p -u` what they run at
stop, and `kexec -e` is the last step of a kexec reboot (Debian's kexec init script), so each should cost
Python's start-up and one sysfs read or syscall, not the imports of the loader (kexloader.cli brings the
planning modules, ~25 ms). Only the plain shapes are answered here, and only where
Linux's own kexec is the door (not in a Xen PV domain, where Xen's hypercall answers); a missing sysfs file, an
unload the kernel refuses, or any doubt takes the full path, which gives the same answer or the error line.
"""

from __future__ import annotations

import os
import sys

STATUS = ("-S", "--status")
NORMAL = ("-l", "--load")  # -S -l asks about the normal image; kexec-tools' -S alone, or with -p, the crash image

UNLOAD = ("-u", "--unload")
CRASH = ("-p", "--load-panic")
SYSCALLS = {"-a": "auto", "--kexec-syscall-auto": "auto", "-c": "load", "--kexec-syscall": "load",
            "-s": "file", "--kexec-file-syscall": "file"}


def status_shape(argv: tuple[str, ...]) -> bool | None:
    """Whether a bare status query asks about the crash image: -S with at most one of -p and -l, in any order;
    None for anything else."""
    kinds = [a for a in argv if a in CRASH + NORMAL]
    if sum(a in STATUS for a in argv) != 1 or len(kinds) > 1 or len(kinds) + 1 != len(argv):
        return None
    return not (kinds and kinds[0] in NORMAL)


def unload_shape(argv: tuple[str, ...]) -> tuple[bool, str] | None:
    """(crash, syscall) of a bare unload: -u with at most one of -p and one syscall option, in any order."""
    unloads = [a for a in argv if a in UNLOAD]
    crashes = [a for a in argv if a in CRASH]
    syscalls = [SYSCALLS[a] for a in argv if a in SYSCALLS]
    if len(unloads) != 1 or len(crashes) > 1 or len(syscalls) > 1 or len(unloads + crashes + syscalls) != len(argv):
        return None
    return bool(crashes), (syscalls or ["auto"])[0]


def _under_a_hypervisor(root: str) -> bool:
    return os.path.exists(os.path.join(root, "sys/hypervisor/type"))  # kexloader.system.xen_role decides there


def quick_status(argv: list[str], root: str = "/") -> int | None:
    """The exit code of a bare `-S` (1: an image is loaded, 0: none, as kexec-tools), or None: use kexloader.cli."""
    crash = status_shape(tuple(argv))
    if crash is None or _under_a_hypervisor(root):
        return None
    from .kexec_sysfs import loaded_flag
    try:
        flag = loaded_flag(root, crash)
    except OSError:
        return None
    return None if flag is None else int(flag)


def quick_unload(argv: list[str], root: str = "/") -> int | None:
    """0 when a bare -u (-p -u, -c -u, ...) unloaded at the first try, as kexloader.cli.run does it (-a:
    kexec_file_load's unload, kexec_load's where there is no kexec_file_load); None on anything else: the full
    path asks the kernel again and says why it refused."""
    shape = unload_shape(tuple(argv))
    if shape is None or _under_a_hypervisor(root):
        return None
    crash, syscall = shape
    from .backends.linux import LinuxKexecBackend
    from .backends.unload import unload
    from .errors import BackendError
    try:
        unload(LinuxKexecBackend(root=root), crash, file_first=syscall != "load", file_only=syscall == "file")
        return 0
    except BackendError:
        return None


EXEC = ("-e", "--exec")
EXEC_NO_OPS = ("-x", "--no-ifdown", "--no-sync")  # accepted by kexloader.cli, and change nothing there either


def quick_exec(argv: list[str], root: str = "/") -> int | None:
    """A bare -e (-x, --no-ifdown, --no-sync beside it) with a normal image loaded: sync and
    reboot(LINUX_REBOOT_CMD_KEXEC), as kexloader.cli.run. Returns None when it did not start the image (nothing
    loaded, a hypervisor, the kernel refused): the full path asks again and says why."""
    if (sum(a in EXEC for a in argv) != 1 or any(a not in EXEC + EXEC_NO_OPS for a in argv)
            or _under_a_hypervisor(root)):
        return None
    from .kexec_sysfs import loaded_flag
    try:
        if not loaded_flag(root, False):
            return None
    except OSError:
        return None
    from .backends.linux import LinuxKexecBackend
    from .errors import BackendError
    try:
        LinuxKexecBackend(root=root).execute()  # does not return when the kernel starts the image
    except BackendError:
        pass
    return None


def quick(argv: list[str], root: str = "/") -> int | None:
    """The exit code of a bare -S, -u or -e done here, or None: the command line is kexloader.cli's."""
    for attempt in (quick_status, quick_unload, quick_exec):
        code = attempt(argv, root)
        if code is not None:
            return code
    return None


def entry_point() -> None:
    """The console script's entry (pip's `kexloader`, and Debian's /usr/sbin/kexloader, which starts Python
    without `site`: debian/kexloader-command)."""
    argv = sys.argv[1:]
    code = quick(argv)
    if code is None:
        from .cli import main
        code = main(argv)
    sys.exit(code)
