"""The purgatory: generated x86 code between the old and the new system (see program.py)."""

from ..model import Backup
from .program import (Linux64Handoff, Multiboot32Handoff, PurgatoryError, PurgatoryImage, Region,
                      build_purgatory, purgatory_size)

__all__ = ["Backup", "Linux64Handoff", "Multiboot32Handoff", "PurgatoryError", "PurgatoryImage", "Region",
           "build_purgatory", "purgatory_size"]
