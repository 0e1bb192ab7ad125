"""`-u` as kexec-tools 2.0.32 does it, for the command line and for the command's quick entry alike."""

from __future__ import annotations

import errno

from ..errors import EXIT_FALLBACK, BackendError

TYPE_CHECKING = False  # typing costs `kexloader -u` more than its run (kexloader/entry.py)
if TYPE_CHECKING:
    from .base import Backend


def unload(backend: Backend, crash: bool, *, file_first: bool, file_only: bool) -> None:
    """kexec_file_load's unload first when `file_first` (-a, -s), kexec_load's when that answers ENOSYS, unless
    `file_only` (-s: exit 253, as kexec-tools); kexec_load's alone otherwise (-c, Xen). BackendError on a refusal."""
    if file_first:
        try:
            backend.unload_file(crash)
            return
        except BackendError as e:
            if e.errno != errno.ENOSYS:
                raise
            if file_only:
                raise BackendError("syscall kexec_file_load not available", exit_code=EXIT_FALLBACK) from None
    backend.unload(crash)
