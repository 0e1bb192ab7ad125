"""What kexec_file_load (-s) gets for a UKI or for several initrds: memfds holding what no file holds.

- a UKI: `.linux` in a memfd as the kernel; `.ucode`, `.initrd` and the user's initrds, each padded to
  4 bytes (initramfs.join, as systemd-stub combines them), in a memfd as the initrd; `.cmdline` (plus
  command-line addons) as the command line unless the user gave one;
- several --initrd files: the kernel as open_for_file_load gives it, the initrds joined in a memfd;
- otherwise exactly open_for_file_load.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import initramfs
from .cmdline import Cmdline
from .memory import SegmentData
from .files import open_for_file_load, read_file, read_image
from . import images
from .images import bzimage, uki


@dataclass(frozen=True)
class FileLoad:
    kernel_fd: int
    initrd_fd: int  # -1: none
    cmdline: str
    kernel_what: str
    initrd_what: str  # "" when none

    @property
    def cmdline_bytes(self) -> bytes:
        """The command line as kexec_file_load takes it: NUL-terminated; the kernel checks the length itself.
        A NUL inside is refused (the kernel would stop reading there), as kexec_load's path does."""
        return Cmdline(self.cmdline).encode(None)


def memfd(name: str, data: SegmentData) -> int:
    """A sealed-size anonymous file holding `data`, at offset 0 (closed by the caller)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data).cast("B") if len(data) else memoryview(b"")
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def open_files(kernel: str | Path, initrds: Sequence[str | Path], cmdline: str | None, *,
               uki_profile: int | None = None, addon_cmdlines: tuple[str, ...] = ()) -> Iterator[FileLoad]:
    """A FileLoad for kexec_file_load; cmdline None: none given (a UKI's .cmdline is used)."""
    fds: list[int] = []
    try:
        raw = read_image(kernel, "kernel")
        if uki.probe(raw):
            from . import bootentries
            uname = uki.contents(raw, str(kernel), uki_profile).uname
            c = uki.contents(raw, str(kernel), uki_profile, tuple(bootentries.sidecars(kernel)),
                             bootentries.addon_parts(kernel, uname))
            addon_cmdlines = tuple(addon_cmdlines) + tuple(line for _, line in bootentries.addons(kernel, uname))
            parts = list(c.initrd_parts) + [initramfs.InitrdPart(str(p), read_file(p, "initrd")) for p in initrds]
            parts = [p for p in parts if len(p.data)]
            fds.append(memfd("uki-linux", c.kernel))
            fds.append(memfd("uki-initrd", initramfs.join(parts)) if parts else -1)
            line = uki.with_command_line(cmdline if cmdline is not None else (c.cmdline or ""), addon_cmdlines)
            yield FileLoad(fds[0], fds[1], line, f"{kernel}:.linux (profile {c.profile})", initramfs.describe(parts))
            return
        if uki.is_pe(raw) and not bzimage.probe(raw):  # as -c would say, before the kernel is asked
            images.detect(raw, str(kernel))
        if len(initrds) > 1:
            parts = [initramfs.InitrdPart(str(p), read_file(p, "initrd")) for p in initrds]
            with open_for_file_load(kernel, None) as (kernel_fd, _):
                fds.append(memfd("initrd", initramfs.join(parts)))
                yield FileLoad(kernel_fd, fds[0], cmdline or "", str(kernel), initramfs.describe(parts))
            return
        with open_for_file_load(kernel, initrds[0] if initrds else None) as (kernel_fd, initrd_fd):
            yield FileLoad(kernel_fd, initrd_fd, cmdline or "", str(kernel), str(initrds[0]) if initrds else "")
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
