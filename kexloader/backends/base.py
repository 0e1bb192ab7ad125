"""The contract every backend keeps."""

from __future__ import annotations

from typing import Protocol

from ..model import Plan


class Backend(Protocol):
    name: str

    def load(self, plan: Plan) -> None:
        """Hand the plan to the kernel or hypervisor (replacing a loaded image of the same kind)."""

    def unload(self, crash: bool) -> None:
        """Remove the loaded normal (or crash) image."""

    def loaded(self, crash: bool) -> bool:
        """Is a normal (or crash) image loaded?"""

    def execute(self) -> None:
        """Start the loaded normal image. Does not return on success."""
