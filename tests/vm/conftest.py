"""Fixtures for the QEMU tests: a session-wide Harness, skip/fail rules, consoles on failure.

Missing prerequisites (QEMU, Debian's kernel in the cache, busybox-static, python3.11) skip the
VM tests with the reason, except in CI (CI=true), where they fail: CI must never pass by
skipping the tests that boot real kernels. `tools/install-deps.sh` installs them all.

On a failing VM test, the console of every guest it used (its fixtures' and the ones it booted)
is added to the report, once per session; the full logs stay in $KEXLOADER_CACHE/vm/logs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.vm import Harness, Qemu, Transcript, find_inputs, pyruntime  # noqa: E402

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
_HARNESS = pytest.StashKey[Harness]()
_BOOTED_BEFORE = pytest.StashKey[int]()
_SHOWN = pytest.StashKey[set]()


def _unavailable(msg: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def kexloader_wheel(tmp_path_factory) -> Path:
    """The kexloader wheel built from this working tree (pip wheel --no-deps on a clean copy)."""
    return pyruntime.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def vm_harness(request, tmp_path_factory, kexloader_wheel) -> Harness:
    """The session's Harness; its Python runtime and kexloader wheel are staged once."""
    inputs = find_inputs()
    missing = inputs.missing()
    if missing:
        _unavailable("the VM tests need: " + "; ".join(missing) + " (sudo bash tools/install-deps.sh)")
    h = Harness(tmp_path_factory.mktemp("vm"), inputs, wheel=kexloader_wheel)
    h.python_trees()  # build the wheel and stage Python now, so the first test's time is its own
    request.config.stash[_HARNESS] = h
    return h


@pytest.fixture(scope="session")
def xen_inputs(vm_harness):
    """Debian's Xen (xen_gz as shipped, xen_elf decompressed); skip/fail as above when missing."""
    missing = vm_harness.inputs.missing(xen=True)
    if missing:
        _unavailable("the Xen VM tests need: " + "; ".join(missing))
    return vm_harness.inputs


@pytest.fixture(autouse=True)
def _remember_boots(request):
    h = request.config.stash.get(_HARNESS, None)
    request.node.stash[_BOOTED_BEFORE] = len(h.booted) if h else 0
    yield


def _transcripts_of(item) -> list[Transcript]:
    found: list = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, (Transcript, Qemu)):
            found.append(value)
        elif hasattr(value, "transcript") and isinstance(value.transcript, (Transcript, Qemu)):
            found.append(value.transcript)
        elif isinstance(getattr(value, "transcripts", None), (list, tuple)):
            found.extend(value.transcripts)
    h = item.config.stash.get(_HARNESS, None)
    if h:
        found.extend(h.booted[item.stash.get(_BOOTED_BEFORE, len(h.booted)):])
    out = []
    for t in found:
        if isinstance(t, Qemu):
            t = t.transcript()
        if isinstance(t, Transcript) and all(t.log_path != o.log_path for o in out):
            out.append(t)
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or "vm" not in item.keywords:
        return
    shown = item.config.stash.setdefault(_SHOWN, set())
    for t in _transcripts_of(item):
        key = str(t.log_path)
        if key in shown:
            rep.sections.append((f"guest console {t.log_path.name}", f"(shown above) {t.summary()}"))
        else:
            shown.add(key)
            rep.sections.append((f"guest console {t.log_path.name}", t.report()))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    h = config.stash.get(_HARNESS, None)
    if not h:
        return
    tr = terminalreporter
    tr.section("VM boots")
    for name, secs in h.timings.items():
        tr.write_line(f"{name:<28} {secs:6.1f} s")
    for t in h.booted:
        if isinstance(t, Qemu):
            t = t.transcript()
        ups = ", ".join(f"{k} at {v:.1f}s" for k, v in t.uptimes().items())
        tr.write_line(f"{t.log_path.name:<48} {t.elapsed:6.1f} s  {t.timed_out or 'exit ' + str(t.returncode)}"
                      f"  /init: {ups or 'never'}")
