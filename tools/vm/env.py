"""Where the VM harness finds its inputs: the cache that tools/install-deps.sh fills, and host tools.

Platforms (tools/apt-platforms.sh unpacks them; `info` says which packages):

    $KEXLOADER_CACHE/platforms/NAME/linux   boot/vmlinuz-VER, lib/modules/VER/ (lib may link to usr/lib)
    $KEXLOADER_CACHE/platforms/NAME/xen     boot/xen-4.x-amd64.gz, xen.elf (decompressed)
    $KEXLOADER_CACHE/platforms/NAME/info    "kernel PKG VERSION SUITE" / "xen PKG VERSION"

NAME is one of PLATFORMS; DEFAULT_PLATFORM (Debian 12) is also linked as $KEXLOADER_CACHE/{linux,xen}.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")  # busybox-static
INSTALL_HINT = "sudo bash tools/install-deps.sh"

PLATFORMS = ("deb12", "deb13", "deb13-bpo")
DEFAULT_PLATFORM = "deb12"
PLATFORM_INFO = {
    "deb12": "Debian 12: kernel 6.1, Xen 4.17",
    "deb13": "Debian 13: kernel 6.12, Xen 4.20",
    "deb13-bpo": "Debian 13 with trixie-backports' kernel (7.x), Xen 4.20",
}


def _host_python() -> Path:
    """The host release's interpreter, /usr/bin/python3 resolved to its python3.X (3.11 on Debian 12,
    3.13 on Debian 13). Guests get this one whatever Python runs the tests (a venv's, for instance)."""
    p = Path("/usr/bin/python3")
    try:
        real = p.resolve(strict=True)
    except OSError:
        return Path("/usr/bin/python3.11")  # reported as missing by Inputs.missing()
    return real if re.fullmatch(r"python3\.\d+", real.name) else p


GUEST_PYTHON = _host_python()  # Debian's interpreter, copied into guests
GUEST_PYVER = GUEST_PYTHON.name.removeprefix("python") if re.fullmatch(r"python3\.\d+", GUEST_PYTHON.name) else "3.11"


def cache_dir() -> Path:
    """${KEXLOADER_CACHE:-$HOME/.cache/kexloader}: downloads (debs/, pkgs/, platforms/) and built images (vm/)."""
    env = os.environ.get("KEXLOADER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kexloader"


def work_dir() -> Path:
    """Generated guest artifacts (initrds, logs): $KEXLOADER_CACHE/vm."""
    d = cache_dir() / "vm"
    d.mkdir(parents=True, exist_ok=True)
    return d


def platform_dir(platform: str = DEFAULT_PLATFORM) -> Path:
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: one of {', '.join(PLATFORMS)}")
    return cache_dir() / "platforms" / platform


def read_info(platform: str = DEFAULT_PLATFORM) -> dict[str, list[str]]:
    """platforms/NAME/info as {"kernel": [PKG, VERSION, SUITE], "xen": [PKG, VERSION]} ({} if absent)."""
    try:
        text = (platform_dir(platform) / "info").read_text()
    except OSError:
        return {}
    return {w[0]: w[1:] for w in (line.split() for line in text.splitlines()) if w}


@dataclass(frozen=True)
class Inputs:
    """The files a VM test needs, as found on this host; `missing` says what is not there."""

    qemu: Path | None
    vmlinuz: Path | None  # Debian's bzImage of the platform (boot/vmlinuz-VER)
    modules: Path | None  # lib/modules/<version> beside it
    xen_gz: Path | None  # Debian's xen-4.x-amd64.gz as shipped
    xen_elf: Path | None  # the same, decompressed (QEMU's multiboot loader wants the ELF)
    busybox: Path | None
    guest_python: Path | None
    platform: str = DEFAULT_PLATFORM
    xen_version: str | None = None  # "4.17", "4.20" (from the package name in info, or xen-4.x-amd64.gz)
    kernel_package: str | None = None  # "linux-image-6.12.118+deb13-amd64 6.12.118-1 trixie-security"
    xen_package: str | None = None

    @property
    def kernel_version(self) -> str | None:
        return self.vmlinuz.name.removeprefix("vmlinuz-") if self.vmlinuz else None

    @property
    def kernel_release(self) -> tuple[int, int] | None:
        """(major, minor) of the kernel, e.g. (6, 12)."""
        m = re.match(r"(\d+)\.(\d+)", self.kernel_version or "")
        return (int(m.group(1)), int(m.group(2))) if m else None

    def module(self, rel: str) -> Path | None:
        """A kernel module by its path under lib/modules/VER without the suffix (e.g.
        "kernel/drivers/xen/xen-privcmd.ko"): the file as shipped, .ko, .ko.xz, .ko.zst or .ko.gz."""
        if not self.modules:
            return None
        base = self.modules / rel.removesuffix(".ko")
        for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
            p = base.with_name(base.name + suffix)
            if p.is_file():
                return p
        return None

    def missing(self, *, xen: bool = False) -> list[str]:
        out = []
        where = platform_dir(self.platform)
        if not self.qemu:
            out.append("qemu-system-x86_64 (apt-get install qemu-system-x86)")
        if not self.vmlinuz:
            out.append(f"Debian's kernel for {self.platform} under {where}/linux/boot ({INSTALL_HINT})")
        if not self.busybox:
            out.append(f"{BUSYBOX} (apt-get install busybox-static)")
        if not self.guest_python:
            out.append(f"{GUEST_PYTHON} (apt-get install python3)")
        if xen and not (self.xen_elf and self.xen_gz):
            out.append(f"Debian's Xen for {self.platform} under {where}/xen ({INSTALL_HINT})")
        return out


def _newest(paths) -> Path | None:
    paths = sorted(paths, key=lambda p: p.name)
    return paths[-1] if paths else None


def find_inputs(platform: str = DEFAULT_PLATFORM) -> Inputs:
    """The inputs of one platform. The default platform falls back to the legacy $cache/{linux,xen}."""
    c = cache_dir()
    p = platform_dir(platform)
    linux, xen = p / "linux", p / "xen"
    if platform == DEFAULT_PLATFORM and not linux.exists() and (c / "linux").exists():
        linux, xen = c / "linux", c / "xen"
    vmlinuz = _newest(v for v in (linux / "boot").glob("vmlinuz-*") if v.is_file())
    modules = None
    if vmlinuz:
        m = linux / "lib" / "modules" / vmlinuz.name.removeprefix("vmlinuz-")
        modules = m if m.is_dir() else None
    xen_gz = _newest((xen / "boot").glob("xen-*-amd64.gz"))
    xen_elf = xen / "xen.elf"
    info = read_info(platform)
    xen_version = None
    for name in (info.get("xen", [""])[0], xen_gz.name if xen_gz else ""):
        m = re.search(r"xen-(?:hypervisor-)?(\d+\.\d+)-amd64", name)
        if m:
            xen_version = m.group(1)
            break
    qemu = shutil.which("qemu-system-x86_64")
    return Inputs(
        qemu=Path(qemu) if qemu else None,
        vmlinuz=vmlinuz,
        modules=modules,
        xen_gz=xen_gz,
        xen_elf=xen_elf if xen_elf.is_file() else None,
        busybox=BUSYBOX if BUSYBOX.is_file() else None,
        guest_python=GUEST_PYTHON if GUEST_PYTHON.is_file() else None,
        platform=platform,
        xen_version=xen_version,
        kernel_package=" ".join(info["kernel"]) if "kernel" in info else None,
        xen_package=" ".join(info["xen"]) if "xen" in info else None,
    )


def read_module(path: Path) -> bytes:
    """A kernel module's bytes, inflated when shipped compressed (.ko.xz on Debian 13 and later:
    busybox insmod takes only plain ELF)."""
    data = Path(path).read_bytes()
    name = Path(path).name
    if name.endswith(".xz"):
        import lzma

        return lzma.decompress(data)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if name.endswith(".gz"):
        import gzip

        return gzip.decompress(data)
    return data
