"""The contract every backend keeps (kexec_load, Xen's kexec hypercall, the recorder)."""

from __future__ import annotations

from typing import Protocol

from ..model import Plan


class Backend(Protocol):
    name: str
    debug: bool  # -d: the kernel's debug flag where it has one, and what it logged
    # Is there a kexec_file_load behind load_file? False under Xen (its load_file refuses): the CLI then
    # loads through `load` for -s and -a.
    has_file_load: bool

    def load(self, plan: Plan) -> None:
        """Hand the plan to the kernel or hypervisor (replacing a loaded image of the same kind)."""

    def load_file(self, kernel_fd: int, initrd_fd: int, cmdline: bytes, crash: bool, *,
                  no_cma: bool = False) -> None:
        """kexec_file_load: the kernel reads and lays out the image itself. initrd_fd -1: none; cmdline as
        the kernel takes it (NUL-terminated: Cmdline.encode); no_cma: KEXEC_FILE_NO_CMA."""

    def unload(self, crash: bool) -> None:
        """Remove the loaded normal (or crash) image."""

    def unload_file(self, crash: bool) -> None:
        """Remove it through kexec_file_load (-s -u)."""

    def loaded(self, crash: bool) -> bool:
        """Is a normal (or crash) image loaded?"""

    def execute(self) -> None:
        """Start the loaded normal image (after a sync). Does not return on success."""

    def supports(self, feature: str) -> bool | None:
        """"load-debug", "file-debug", "file-no-cma": does the kernel have it? None: cannot tell."""

    def hotplug_active(self) -> bool | None:
        """After a crash load with --hotplug: will the kernel update the image? None: cannot tell."""
