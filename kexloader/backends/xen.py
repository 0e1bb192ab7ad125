"""Xen's kexec hypercall from a PV dom0 (Xen public/kexec.h, KEXEC_CMD_kexec_load and friends), through the
hypercall edge (kexloader.hypercall).

Thin on purpose: lay out the argument structs, call, turn errno into a sentence.
"""

from __future__ import annotations

import errno
import os

from .. import hypercall as hc
from ..errors import EXIT_FALLBACK, BackendError
from ..formats import xen as x
from ..kexec_abi import KEXEC_ON_CRASH
from ..model import Plan, Role, align_up


class XenKexecBackend:
    """Loads through Xen's kexec_op; the whole machine (Xen and dom0) is replaced on exec."""

    name = "xen kexec_op"
    debug = False  # -d changes nothing here: Xen has no debug flag for kexec_op
    has_file_load = False  # Xen has no file-load call: the CLI loads through `load` for -s and -a

    def load(self, plan: Plan) -> None:
        segs = sorted(plan.segments, key=lambda s: s.mem)
        if len(segs) > x.KEXEC_SEGMENT_MAX:
            raise BackendError(f"{len(segs)} segments; Xen takes at most {x.KEXEC_SEGMENT_MAX}")
        kind = x.KEXEC_TYPE_CRASH if plan.flags & KEXEC_ON_CRASH else x.KEXEC_TYPE_DEFAULT
        arch = (plan.flags >> 16) or x.EM_X86_64
        size = sum(align_up(s.bufsz, 8) for s in segs) + 32 * len(segs) + 24 + 64
        buf = hc.HypercallBuffer(size)
        try:
            table = []
            for s in segs:
                if s.role == Role.MAP_ONLY:
                    addr = 0  # Xen maps it for the new image and leaves its contents alone
                else:
                    addr = buf.put(s.data) if s.bufsz else buf.put(b"\0")  # non-NULL: Xen zero-fills
                table.append(x.XenKexecSegment.build(dict(buf=addr, buf_size=s.bufsz, dest_maddr=s.mem,
                                                          dest_size=s.memsz)))
            array = buf.put(b"".join(table))
            load = buf.put(x.XenKexecLoad.build(dict(type=kind, arch=arch, nr_segments=len(segs),
                                                     segments=array, entry_maddr=plan.entry)))
            self.unload(bool(kind))  # keeps Xen's status bit meaning "loaded" (see unload)
            hc.call("kexec_load", x.HYPERVISOR_kexec_op, x.KEXEC_CMD_kexec_load, load)
        finally:
            buf.close()

    def unload(self, crash: bool) -> None:
        # Xen 4.17 answers kexec_status with a bit that flips on every load and unload (kexec_swap_images),
        # loaded or not. Starting from boot (nothing loaded, bit clear), unloading only what is loaded and
        # loading only into an empty slot keeps that bit equal to "an image is loaded".
        if not self.loaded(crash):
            return
        hc.kexec_op("kexec_unload", x.KEXEC_CMD_kexec_unload, x.XenKexecType.build(dict(type=int(crash))))

    def loaded(self, crash: bool) -> bool:
        buf = hc.HypercallBuffer(8)
        try:
            addr = buf.put(x.XenKexecType.build(dict(type=int(crash))))
            return hc.call("kexec_status", x.HYPERVISOR_kexec_op, x.KEXEC_CMD_kexec_status, addr) == 1
        finally:
            buf.close()

    def load_file(self, kernel_fd: int, initrd_fd: int, cmdline: bytes, crash: bool, *,
                  no_cma: bool = False) -> None:
        raise BackendError("syscall kexec_file_load not available", errno=errno.ENOSYS, exit_code=EXIT_FALLBACK,
                           hint="Xen loads images only through its kexec hypercall: use -c")

    def unload_file(self, crash: bool) -> None:
        self.load_file(-1, -1, b"\0", crash)

    def supports(self, feature: str) -> bool | None:
        return None  # the kexec_load/kexec_file_load flags are Linux's

    def hotplug_active(self) -> bool | None:
        return None  # Xen's crash image has no hotplug update

    def execute(self) -> None:
        os.sync()
        hc.kexec_op("kexec", x.KEXEC_CMD_kexec, x.XenKexecExec.build(dict(type=x.KEXEC_TYPE_DEFAULT)))
        raise BackendError("Xen returned from kexec without starting the new image")
