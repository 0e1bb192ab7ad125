"""Every reproducer the fuzz campaign found (fixtures/fuzz/TARGET/*.bin, minimized, with its traceback in the
.txt beside it) runs through its target again and may raise only KexloaderError."""

from pathlib import Path

import pytest

from tools.fuzz.engine import execute
from tools.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "fixtures/fuzz").glob("*/*.bin"))


def test_there_are_reproducers():
    assert CASES, "fixtures/fuzz holds no reproducers"
    assert {c.parent.name for c in CASES} <= set(TARGETS), "a reproducer directory names no fuzz target"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.stem[:60]}" for c in CASES])
def test_reproducer_raises_only_kexloader_errors(case):
    failure = execute(TARGETS[case.parent.name], case.read_bytes())
    assert failure is None, f"{case}: {failure.kind} at {failure.site}\n{failure.trace}"
