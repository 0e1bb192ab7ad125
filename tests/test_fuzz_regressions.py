"""Every reproducer the fuzz campaign found (fixtures/fuzz/TARGET/*.bin, minimized, with its traceback in the
.txt beside it) runs through its target again and may raise only KexloaderError.

Reproducers of crashes in modules another change is hardening (the snapshot and plan-directory readers, see
fixtures/fuzz/README.md) are expected failures until that lands; once they pass, they count as passes."""

from pathlib import Path

import pytest

from tools.fuzz.engine import execute, pending
from tools.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "fixtures/fuzz").glob("*/*.bin"))


def site_of_record(case: Path) -> str:
    for line in case.with_suffix(".txt").read_text().splitlines():
        if line.startswith("site: "):
            return line.removeprefix("site: ")
    return ""


def test_there_are_reproducers():
    assert CASES, "fixtures/fuzz holds no reproducers"
    assert {c.parent.name for c in CASES} <= set(TARGETS), "a reproducer directory names no fuzz target"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.stem[:60]}" for c in CASES])
def test_reproducer_raises_only_kexloader_errors(case):
    failure = execute(TARGETS[case.parent.name], case.read_bytes())
    if failure is not None and pending(site_of_record(case)):
        pytest.xfail(f"{failure.site}: waits for the snapshot/plan schema validation")
    assert failure is None, f"{case}: {failure.kind} at {failure.site}\n{failure.trace}"
