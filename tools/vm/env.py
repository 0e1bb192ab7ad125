"""Where the VM harness finds its inputs: the cache that tools/install-deps.sh fills, and host tools."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUEST_PYTHON = Path("/usr/bin/python3.11")  # Debian's interpreter, copied into guests
BUSYBOX = Path("/bin/busybox")  # busybox-static


def cache_dir() -> Path:
    """${KEXLOADER_CACHE:-$HOME/.cache/kexloader}: downloads (debs/, linux/, xen/) and built images (vm/)."""
    env = os.environ.get("KEXLOADER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kexloader"


def work_dir() -> Path:
    """Generated guest artifacts (initrds, logs): $KEXLOADER_CACHE/vm."""
    d = cache_dir() / "vm"
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass(frozen=True)
class Inputs:
    """The files a VM test needs, as found on this host; `missing` says what is not there."""

    qemu: Path | None
    vmlinuz: Path | None  # Debian's bzImage, unpacked from linux-image-6.1.0-*-amd64
    modules: Path | None  # lib/modules/<version> beside it
    xen_gz: Path | None  # Debian's xen-4.17-amd64.gz as shipped
    xen_elf: Path | None  # the same, decompressed (QEMU's multiboot loader wants the ELF)
    busybox: Path | None
    guest_python: Path | None

    @property
    def kernel_version(self) -> str | None:
        return self.vmlinuz.name.removeprefix("vmlinuz-") if self.vmlinuz else None

    def missing(self, *, xen: bool = False) -> list[str]:
        out = []
        if not self.qemu:
            out.append("qemu-system-x86_64 (apt-get install qemu-system-x86)")
        if not self.vmlinuz:
            out.append(f"Debian's kernel under {cache_dir()}/linux/boot (run tools/install-deps.sh)")
        if not self.busybox:
            out.append(f"{BUSYBOX} (apt-get install busybox-static)")
        if not self.guest_python:
            out.append(f"{GUEST_PYTHON} (apt-get install python3.11)")
        if xen and not self.xen_elf:
            out.append(f"Debian's Xen under {cache_dir()}/xen (run tools/install-deps.sh)")
        return out


def _newest(paths) -> Path | None:
    paths = sorted(paths, key=lambda p: p.name)
    return paths[-1] if paths else None


def find_inputs() -> Inputs:
    c = cache_dir()
    vmlinuz = _newest((c / "linux" / "boot").glob("vmlinuz-*"))
    modules = None
    if vmlinuz:
        m = c / "linux" / "lib" / "modules" / vmlinuz.name.removeprefix("vmlinuz-")
        modules = m if m.is_dir() else None
    xen_gz = _newest((c / "xen" / "boot").glob("xen-*-amd64.gz"))
    xen_elf = c / "xen" / "xen.elf"
    qemu = shutil.which("qemu-system-x86_64")
    return Inputs(
        qemu=Path(qemu) if qemu else None,
        vmlinuz=vmlinuz,
        modules=modules,
        xen_gz=xen_gz,
        xen_elf=xen_elf if xen_elf.is_file() else None,
        busybox=BUSYBOX if BUSYBOX.is_file() else None,
        guest_python=GUEST_PYTHON if GUEST_PYTHON.is_file() else None,
    )
