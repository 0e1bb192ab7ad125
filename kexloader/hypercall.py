"""Xen hypercalls from a PV dom0: /dev/xen/privcmd ioctls, with every buffer Xen reads in memory from
/dev/xen/hypercall (kernel pages that stay present while Xen copies from them).

The one edge to the hypervisor, shared by the facts (kexloader.system: Xen's kexec ranges and the machine memory
map) and the Xen backend (kexloader.backends.xen: load, unload, exec). Interfaces: Xen public/kexec.h
(kexec_op), public/memory.h (XENMEM_machine_memory_map), Linux include/uapi/xen/privcmd.h.
"""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import mmap
import os
from typing import Any

from .errors import BackendError
from .formats import xen as x
from .model import E820_RESERVED, MemRegion, Range, align_up

PRIVCMD_PATHS = ("/dev/xen/privcmd", "/proc/xen/privcmd")
HYPERCALL_BUF = "/dev/xen/hypercall"

_privcmd = None


def raw_hypercall(op: int, *args: int) -> int:
    """The one place a hypercall leaves the process; tests replace it (tests/conftest.py).

    Returns the hypercall's result, or -errno."""
    global _privcmd
    if _privcmd is None:
        for path in PRIVCMD_PATHS:
            try:
                _privcmd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                break
            except OSError:
                continue
        else:
            raise BackendError("cannot open /dev/xen/privcmd",
                               hint="load xen-privcmd (modprobe xen-privcmd) and mount xenfs on /proc/xen")
    padded = list(args) + [0] * (5 - len(args))
    call = bytearray(x.PrivcmdHypercall.build(dict(op=op, arg0=padded[0], arg1=padded[1], arg2=padded[2],
                                                    arg3=padded[3], arg4=padded[4])))
    try:
        return int(fcntl.ioctl(_privcmd, x.IOCTL_PRIVCMD_HYPERCALL, call))
    except OSError as e:
        return -(e.errno or 0)


class HypercallBuffer:
    """Pages Xen may read and write during a hypercall, addressed by dom0 virtual address."""

    def __init__(self, size: int):
        try:
            fd = os.open(HYPERCALL_BUF, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise BackendError(f"cannot open {HYPERCALL_BUF}: {e.strerror}",
                               hint="needs Linux 4.18+ with xen-privcmd loaded") from e
        try:
            self.map = mmap.mmap(fd, align_up(max(size, 1), mmap.PAGESIZE), mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.base = ctypes.addressof(self._anchor)
        self.used = 0

    def put(self, data: bytes, align: int = 8) -> int:
        """Copy `data` in; returns its address."""
        self.used = align_up(self.used, align)
        n = len(data)
        self.map[self.used:self.used + n] = data
        addr = self.base + self.used
        self.used += n
        return addr

    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.base
        return self.map[off:off + size]

    def close(self) -> None:
        del self._anchor
        self.map.close()


ERRORS = {
    E.EPERM: ("Xen refused: this domain may not use kexec (EPERM)", "kexec works only from dom0"),
    E.EINVAL: ("Xen rejected the image (EINVAL)", "segments overlap, are more than 15, or the type is unknown"),
    E.EADDRNOTAVAIL: ("a segment or the entry lies where Xen will not put it (EADDRNOTAVAIL)",
                      "for -p everything must be inside Xen's crash area"),
    E.ENOMEM: ("Xen ran out of memory for the image (ENOMEM)", None),
    E.EFAULT: ("Xen could not read a buffer (EFAULT)", "this is a kexloader bug; please report it"),
    E.ENOENT: ("no image of that kind is loaded in Xen (ENOENT)", "load one with -l (or -p) first"),
    E.EBUSY: ("a kexec is in progress in Xen (EBUSY)", None),
    E.ENOSYS: ("this Xen has no kexec support (ENOSYS)", "Xen was built without CONFIG_KEXEC"),
}


def call(what: str, op: int, *args: int) -> int:
    rc = raw_hypercall(op, *args)
    if rc < 0:
        known = ERRORS if what in ("kexec_load", "kexec") else {}
        message, hint = known.get(-rc, (f"Xen answered {E.errorcode.get(-rc, -rc)} ({os.strerror(-rc)})", None))
        if -rc == E.EPERM:
            message, hint = ERRORS[E.EPERM]
        raise BackendError(f"{what}: {message}", errno=-rc, hint=hint)
    return rc


def kexec_op(what: str, cmd: int, arg: bytes) -> bytes:
    """One kexec_op with its argument struct in a hypercall buffer; returns the struct as Xen left it."""
    buf = HypercallBuffer(len(arg))
    try:
        addr = buf.put(arg)
        call(what, x.HYPERVISOR_kexec_op, cmd, addr)
        return buf.read(addr, len(arg))
    finally:
        buf.close()


def get_range(kind: int, nr: int = 0) -> Range | None:
    """A machine range Xen reports (crash area, a CPU's note buffer, VMCOREINFO, Xen itself); None if absent."""
    arg = x.XenKexecRange.build(dict(range=kind, nr=nr, size=0, start=0))
    out = x.XenKexecRange.parse(kexec_op("kexec_get_range", x.KEXEC_CMD_kexec_get_range, arg))
    return Range(out.start, out.size) if out.size else None


def cpu_note_ranges(limit: int = 4096) -> list[tuple[int, Range]]:
    """Every physical CPU's crash note buffer, until Xen answers ERANGE (past the last CPU).

    Xen allocates the buffers only when it has a crash area; without one it answers EINVAL."""
    found = []
    for cpu in range(limit):
        try:
            r = get_range(x.KEXEC_RANGE_MA_CPU, cpu)
        except BackendError as e:
            if e.errno in (E.ERANGE, E.EINVAL):
                break
            raise
        if r is not None:
            found.append((cpu, r))
    return found


def machine_memory_map(capacity: int = 1024) -> tuple[MemRegion, ...]:
    """The host's e820 (XENMEM_machine_memory_map), not dom0's pseudo-physical view."""
    buf = HypercallBuffer(capacity * 20 + 16)
    try:
        entries = buf.put(bytes(capacity * 20))
        hdr = buf.put(x.XenMemoryMap.build(dict(nr_entries=capacity, buffer=entries)))
        call("XENMEM_machine_memory_map", x.HYPERVISOR_memory_op, x.XENMEM_machine_memory_map, hdr)
        count = x.XenMemoryMap.parse(buf.read(hdr, 16)).nr_entries
        raw = buf.read(entries, count * 20)
    finally:
        buf.close()
    regions = []
    for i in range(count):
        e = x.XenE820Entry.parse(raw[i * 20:(i + 1) * 20])
        if e.size:
            regions.append(MemRegion(Range(e.addr, e.size), e.type if 1 <= e.type <= 5 else E820_RESERVED))
    return tuple(sorted(regions))


def _efi_info(index: int, addr: int = 0, size: int = 0) -> Any:
    """One XENPF_firmware_info/XEN_FW_EFI_INFO query: the struct as Xen left it, or None when Xen answers an
    error (ENOSYS: Xen was not booted by EFI; ESRCH: no descriptor holds `addr`)."""
    arg = x.XenPlatformEfiInfo.build(dict(cmd=x.XENPF_firmware_info, interface_version=x.XENPF_INTERFACE_VERSION,
                                          type=x.XEN_FW_EFI_INFO, index=index, addr=addr, size=size, attr=0,
                                          mem_type=0))
    buf = HypercallBuffer(len(arg))
    try:
        at = buf.put(arg)
        rc = raw_hypercall(x.HYPERVISOR_platform_op, at)
        out = buf.read(at, len(arg))
    finally:
        buf.close()
    return None if rc < 0 else x.XenPlatformEfiInfo.parse(out)


def efi_config_table() -> tuple[int, int] | None:
    """(physical address, entries) of the firmware's configuration table; None unless Xen was booted by EFI."""
    got = _efi_info(x.XEN_FW_EFI_CONFIG_TABLE)
    return None if got is None else (got.addr, got.size & 0xFFFFFFFF)


def efi_mem_info(addr: int) -> tuple[int, int, int] | None:
    """(type, attribute, bytes from `addr` to the end of its descriptor) of the firmware's EFI memory map
    descriptor that holds `addr`, as Xen kept the map at ExitBootServices; None when none holds it."""
    got = _efi_info(x.XEN_FW_EFI_MEM_INFO, addr, (1 << 64) - 1 - addr)
    return None if got is None else (got.mem_type, got.attr, got.size)
