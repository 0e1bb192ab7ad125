"""The checked-in SHA-256 routines (kexloader/purgatory/sha256_routines.py) are what the assembler makes of
kexloader/purgatory/sha256_code.py today, and the module is exactly what tools/sha256_routines.py writes."""

from kexloader.purgatory import sha256_code, sha256_routines
from tools import sha256_routines as generator


def test_the_checked_in_bytes_are_what_the_assembler_gives():
    code, offsets = sha256_code.assemble_routines()
    assert sha256_routines.CODE == code, "run python -m tools.sha256_routines and commit the result"
    assert sha256_routines.OFFSETS == offsets


def test_the_module_is_what_the_tool_writes():
    assert generator.MODULE.read_text() == generator.render(), "run python -m tools.sha256_routines"
