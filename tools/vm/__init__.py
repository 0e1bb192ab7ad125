"""QEMU harness for kexloader's VM tests: guest initramfs images with Python and the kexloader
wheel, TCG boots of Debian's kernel (and Xen), serial-console transcripts with markers.

Public API (see tools/vm/harness.py for a worked example, tests/vm/ for real scenarios):

    Harness          build and boot guests (leaf(), full(), build(), boot(), start())
    Guest            what one initrd holds: stage scripts, files, trees
    Transcript       a run's console: get(), b64(), rc(), out(), stages(), uptimes(), report()
    Qemu             one running QEMU: wait_for(), wait_for_marker(), send(), wait()
    boot()           boot and wait for exit
    find_inputs()    Debian's kernel/Xen of a platform, QEMU, busybox, the host's python3 as found here
    PLATFORMS        "deb12" (default: 6.1, Xen 4.17), "deb13" (6.12, Xen 4.20), "deb13-bpo" (7.x, Xen 4.20)
    REPORT           the default stage of a second kernel (cmdline, payload sha256, uname)
    new_token()      a random word for the u-root marker trick

Run as a script: `python3 -m tools.vm --help`.
"""

from . import pyruntime
from .env import DEFAULT_PLATFORM, PLATFORMS, Inputs, cache_dir, find_inputs, work_dir
from .guest import Guest
from .harness import BASE_APPEND, REPORT, Harness, new_token
from .qemu import MarkerMissing, Qemu, Transcript, boot, qemu_command

__all__ = [
    "BASE_APPEND", "DEFAULT_PLATFORM", "PLATFORMS", "REPORT", "Guest", "Harness", "Inputs", "MarkerMissing", "Qemu",
    "Transcript", "boot", "cache_dir", "find_inputs", "new_token", "pyruntime", "qemu_command", "work_dir",
]
