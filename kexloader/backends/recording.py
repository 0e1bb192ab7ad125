"""A backend that keeps plans instead of loading them: --dry-run, tests, and bug reports."""

from __future__ import annotations

from ..errors import BackendError
from ..model import Plan


class RecordingBackend:
    name = "recorder"
    has_file_load = True

    def __init__(self, supported: dict[str, bool | None] | None = None) -> None:
        self.plans: dict[bool, Plan] = {}
        self.file_loads: list[tuple[int, int, bytes, bool]] = []
        self.file_options: list[dict[str, bool]] = []  # per kexec_file_load: no_cma, debug
        self.file_loaded: set[bool] = set()  # crash or not, for each image loaded through load_file
        self.executed = False
        self.debug = False
        self.supported = dict(supported or {})  # a pretend kernel's features (LinuxKexecBackend.supports)

    def supports(self, feature: str) -> bool | None:
        return self.supported.get(feature, True)

    def load(self, plan: Plan) -> None:
        self.plans[plan.crash] = plan
        self.file_loaded.discard(plan.crash)

    def load_file(self, kernel_fd: int, initrd_fd: int, cmdline: bytes, crash: bool, *, no_cma: bool = False) -> None:
        """kexec_file_load's arguments, kept as a plan-less record (the kernel would do the layout)."""
        self.file_loads.append((kernel_fd, initrd_fd, cmdline, crash))
        self.plans.pop(crash, None)  # the kernel has one slot per kind, whichever call filled it
        self.file_loaded.add(crash)
        self.file_options.append({"no_cma": no_cma, "debug": self.debug})

    def unload_file(self, crash: bool) -> None:
        self.file_loads = [f for f in self.file_loads if f[3] != crash]
        self.unload(crash)

    def unload(self, crash: bool) -> None:
        self.plans.pop(crash, None)
        self.file_loaded.discard(crash)

    def loaded(self, crash: bool) -> bool:
        return crash in self.plans or crash in self.file_loaded

    def hotplug_active(self) -> bool | None:
        return None  # a recorder cannot tell

    def execute(self) -> None:
        if not self.loaded(False):
            raise BackendError("nothing has been loaded", hint="load an image with -l first")
        self.executed = True
