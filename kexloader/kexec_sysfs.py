"""Where the kernel's kexec files are (Documentation/ABI/testing/sysfs-kernel-kexec-kdump): Linux 6.19+ has them
in /sys/kernel/kexec/ and keeps the old names in /sys/kernel as symlinks (marked obsolete): the new name is read
first, then the old one. Measured on Debian's 7.3.4: /sys/kernel/kexec/{loaded, crash_loaded, crash_size,
crash_elfcorehdr_size, crash_cma_ranges}; Debian 12's 6.1 has only kexec_loaded, kexec_crash_loaded and
kexec_crash_size.

Read by the facts (kexloader/system.py), the Linux backend and `-S` (kexloader/entry.py). Only `os`: `-S`
imports this and nothing else of kexloader.
"""

from __future__ import annotations

import os

KEXEC_SYSFS_DIR = "sys/kernel/kexec"
KEXEC_SYSFS_FILES = {  # attribute -> (name in /sys/kernel/kexec, old name in /sys/kernel)
    "loaded": ("loaded", "kexec_loaded"),
    "crash_loaded": ("crash_loaded", "kexec_crash_loaded"),
    "crash_size": ("crash_size", "kexec_crash_size"),
    "crash_elfcorehdr_size": ("crash_elfcorehdr_size", "crash_elfcorehdr_size"),  # 6.5+, CONFIG_CRASH_HOTPLUG
    "crash_cma_ranges": ("crash_cma_ranges", "kexec_crash_cma_ranges"),  # crashkernel=...,cma (old name: 6.19 rc)
}


def candidates(root: str | os.PathLike[str], attribute: str) -> tuple[str, str]:
    """The two places of `attribute` under `root`, in the order they are read."""
    new, old = KEXEC_SYSFS_FILES[attribute]
    return os.path.join(root, KEXEC_SYSFS_DIR, new), os.path.join(root, "sys/kernel", old)


def find(root: str | os.PathLike[str], attribute: str) -> str | None:
    """The file that holds `attribute`: /sys/kernel/kexec/NAME, else the old /sys/kernel/OLDNAME; None if neither."""
    for path in candidates(root, attribute):
        if os.path.isfile(path):
            return path
    return None


def loaded_flag(root: str | os.PathLike[str], crash: bool) -> bool | None:
    """Is a normal (or crash) image loaded, as the kernel says now; None when neither file exists.
    OSError when the file is there but cannot be read."""
    path = find(root, "crash_loaded" if crash else "loaded")
    if path is None:
        return None
    with open(path) as f:
        return f.read().strip() == "1"
