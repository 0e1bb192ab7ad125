"""A backend that keeps plans instead of loading them: --dry-run, tests, and bug reports."""

from __future__ import annotations

from ..errors import BackendError
from ..model import Plan


class RecordingBackend:
    name = "recorder"

    def __init__(self) -> None:
        self.plans: dict[bool, Plan] = {}
        self.executed = False

    def load(self, plan: Plan) -> None:
        self.plans[plan.crash] = plan

    def unload(self, crash: bool) -> None:
        self.plans.pop(crash, None)

    def loaded(self, crash: bool) -> bool:
        return crash in self.plans

    def execute(self) -> None:
        if False not in self.plans:
            raise BackendError("nothing has been loaded", hint="load an image with -l first")
        self.executed = True
