"""Fixtures for the QEMU tests: a Harness per platform, skip/fail rules, consoles on failure.

Platforms (tools/vm/env.py): "deb12" (Debian 12: 6.1, Xen 4.17; the default), "deb13" (Debian 13:
6.12, Xen 4.20), "deb13-bpo" (Debian 13 with trixie-backports' kernel 7.x, Xen 4.20).

    vm_harness            the deb12 Harness (session-wide)
    platform_harness      parametrized over PLATFORMS: a test using it runs once per platform
    harness_for(name)     the session's Harness of one platform (factory; all share one wheel)
    xen_inputs            deb12's inputs with Xen (skip/fail when Xen is missing)
    platform_xen_inputs   the same for platform_harness's platform

A plain `pytest` runs every platform_harness test on deb12, and on deb13 and deb13-bpo only the
seed's six paths (SEED below, docs/seed-paths.md). The rest of the matrix on those platforms carries
the marker `vm_matrix`, which runs only when asked for: `pytest -m vm_matrix` (that matrix alone) or
`pytest -m "vm_matrix or not vm_matrix"` (everything).

Missing prerequisites (QEMU, Debian's kernel in the cache, busybox-static, the host's python3) skip
the VM tests with the reason, except in CI (CI=true), where they fail: CI must never pass by
skipping the tests that boot real kernels. `sudo bash tools/install-deps.sh` installs them all.

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

from tools.vm import DEFAULT_PLATFORM, PLATFORMS, Harness, Qemu, Transcript, find_inputs, pyruntime  # noqa: E402
from tools.vm.env import INSTALL_HINT  # noqa: E402

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
_HARNESSES = pytest.StashKey[dict]()  # platform -> Harness
_BOOTED_BEFORE = pytest.StashKey[dict]()  # platform -> len(booted) when the test started
_SHOWN = pytest.StashKey[set]()

# The seed's six paths on every platform in a plain run (one run each): module -> {test name or
# "name[param]" without the platform}. Everything else with platform_harness on a platform other than
# the default is marked vm_matrix.
SEED = {
    "test_linux_kexec.py": {  # kexec Linux -> Linux (one guest: the kexec_tools_style fixture)
        "test_status_before_load_says_nothing_loaded", "test_load_sets_kexec_loaded_and_status",
        "test_unload_clears_kexec_loaded", "test_exec_boots_second_kernel_with_exact_cmdline_and_initrd",
    },
    "test_kdump.py": {  # kdump Linux -> Linux (one guest: the kdump fixture)
        "test_p_loads_the_crash_kernel_and_status_says_so", "test_p_u_unloads", "test_print_ckr_size_is_the_region",
        "test_sysrq_c_boots_the_crash_kernel_with_a_readable_vmcore", "test_the_guest_snapshot_has_the_kdump_facts",
    },
    "test_xen.py": {
        "test_linux_to_xen[module-mb2]",  # kexec Linux -> Xen
        "test_xen_to_linux",  # kexec Xen -> Linux
        "test_xen_to_xen[vmm]",  # kexec Xen -> Xen
        "test_xen_kdump[sysrq]",  # kdump Xen -> Linux
    },
}


def _unavailable(msg: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def _platform_of(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("platform_harness") if callspec else None


def _is_seed(item) -> bool:
    names = SEED.get(Path(str(item.fspath)).name, set())
    if item.originalname in names:
        return True
    callspec = getattr(item, "callspec", None)
    if not callspec:
        return False
    others = [str(v) for k, v in callspec.params.items() if k != "platform_harness"]
    return any(f"{item.originalname}[{v}]" in names for v in others)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    keep, dropped = [], []
    wants_matrix = "vm_matrix" in (config.option.markexpr or "")
    for item in items:
        platform = _platform_of(item)
        if platform and platform != DEFAULT_PLATFORM and not _is_seed(item):
            item.add_marker(pytest.mark.vm_matrix)
            if not wants_matrix:  # e.g. `-m vm`, which overrides addopts' `-m "not vm_matrix"`
                dropped.append(item)
                continue
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def kexloader_wheel(tmp_path_factory) -> Path:
    """The kexloader wheel built from this working tree (pip wheel --no-deps on a clean copy)."""
    return pyruntime.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def harness_for(request, tmp_path_factory, kexloader_wheel):
    """harness_for(platform) -> the session's Harness for that platform (made on first use; Python and
    the wheel are staged then, so the first test's time is its own). Skips/fails when inputs are missing."""
    harnesses = request.config.stash.setdefault(_HARNESSES, {})

    def get(platform: str = DEFAULT_PLATFORM) -> Harness:
        if platform not in harnesses:
            inputs = find_inputs(platform)
            missing = inputs.missing()
            if missing:
                _unavailable(f"the VM tests on {platform} need: " + "; ".join(missing) + f" ({INSTALL_HINT})")
            h = Harness(tmp_path_factory.mktemp(f"vm-{platform}"), inputs, wheel=kexloader_wheel)
            h.python_trees()
            harnesses[platform] = h
        return harnesses[platform]

    return get


@pytest.fixture(scope="session")
def vm_harness(harness_for) -> Harness:
    """The default platform's (deb12) Harness; its Python runtime and kexloader wheel are staged once."""
    return harness_for(DEFAULT_PLATFORM)


@pytest.fixture(scope="session", params=PLATFORMS)
def platform_harness(request, harness_for) -> Harness:
    """The Harness of each platform in turn (test ids end in [deb12], [deb13], [deb13-bpo])."""
    return harness_for(request.param)


def _xen(h: Harness):
    missing = h.inputs.missing(xen=True)
    if missing:
        _unavailable(f"the Xen VM tests on {h.platform} need: " + "; ".join(missing))
    return h.inputs


@pytest.fixture(scope="session")
def xen_inputs(vm_harness):
    """Debian's Xen (xen_gz as shipped, xen_elf decompressed); skip/fail as above when missing."""
    return _xen(vm_harness)


@pytest.fixture(scope="session")
def platform_xen_inputs(platform_harness):
    """xen_inputs for platform_harness's platform."""
    return _xen(platform_harness)


def _harnesses(config) -> dict:
    return config.stash.get(_HARNESSES, {})


@pytest.fixture(autouse=True)
def _remember_boots(request):
    request.node.stash[_BOOTED_BEFORE] = {p: len(h.booted) for p, h in _harnesses(request.config).items()}
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
    before = item.stash.get(_BOOTED_BEFORE, {})
    for p, h in _harnesses(item.config).items():
        found.extend(h.booted[before.get(p, 0):])
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
    harnesses = _harnesses(config)
    if not harnesses:
        return
    tr = terminalreporter
    tr.section("VM boots")
    for platform, h in harnesses.items():
        i = h.inputs
        tr.write_line(f"-- {platform}: kernel {i.kernel_version}, Xen {i.xen_version}, guest Python "
                      f"{pyruntime.PYVER}")
        for name, secs in h.timings.items():
            tr.write_line(f"{name:<28} {secs:6.1f} s")
        for t in h.retried:
            tr.write_line(f"retried after a stall in a kernel's boot (tools/vm/harness.py _boot_flake): "
                          f"{t.log_path.name}: {t.timed_out}")
        for t in h.booted:
            if isinstance(t, Qemu):
                t = t.transcript()
            ups = ", ".join(f"{k} at {v:.1f}s" for k, v in t.uptimes().items())
            tr.write_line(f"{t.log_path.name:<48} {t.elapsed:6.1f} s  {t.timed_out or 'exit ' + str(t.returncode)}"
                          f"  /init: {ups or 'never'}")
