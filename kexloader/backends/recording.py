"""A backend that keeps plans instead of loading them: --dry-run, tests, and bug reports."""

from __future__ import annotations

from ..errors import BackendError
from ..model import Plan


class RecordingBackend:
    name = "recorder"

    def __init__(self) -> None:
        self.plans: dict[bool, Plan] = {}
        self.file_loads: list[tuple[int, int, str, bool]] = []
        self.executed = False

    def load(self, plan: Plan) -> None:
        self.plans[plan.crash] = plan

    def load_file(self, kernel_fd: int, initrd_fd: int, cmdline: str, crash: bool) -> None:
        """kexec_file_load's arguments, kept as a plan-less record (the kernel would do the layout)."""
        self.file_loads.append((kernel_fd, initrd_fd, cmdline, crash))

    def unload_file(self, crash: bool) -> None:
        self.file_loads.clear()
        self.plans.pop(crash, None)

    def unload(self, crash: bool) -> None:
        self.plans.pop(crash, None)

    def loaded(self, crash: bool) -> bool:
        return crash in self.plans

    def execute(self) -> None:
        if False not in self.plans:
            raise BackendError("nothing has been loaded", hint="load an image with -l first")
        self.executed = True
