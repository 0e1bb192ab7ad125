"""The command's entry (kexloader/entry.py): a bare `-S` answered from sysfs without the loader's imports gives
what the full command line gives, and anything else goes to the full path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kexloader import cli, entry
from kexloader.backends.linux import LinuxKexecBackend

ROOT = Path(__file__).resolve().parent.parent


def sysfs(tmp_path: Path, loaded: int, crash: int, new_layout: bool) -> Path:
    d = tmp_path / ("sys/kernel/kexec" if new_layout else "sys/kernel")
    d.mkdir(parents=True, exist_ok=True)
    names = ("loaded", "crash_loaded") if new_layout else ("kexec_loaded", "kexec_crash_loaded")
    (d / names[0]).write_text(f"{loaded}\n")
    (d / names[1]).write_text(f"{crash}\n")
    return tmp_path


@pytest.mark.parametrize("new_layout", [False, True], ids=["6.1", "6.19+"])
@pytest.mark.parametrize("loaded, crash", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("argv", list(entry.STATUS_QUERIES), ids=" ".join)
def test_quick_status_is_what_the_full_path_says(argv, loaded, crash, new_layout, tmp_path):
    root = sysfs(tmp_path, loaded, crash, new_layout)
    quick = entry.quick_status(list(argv), str(root))
    full = cli.main(list(argv), backend_factory=lambda: LinuxKexecBackend(root=root), prog="kexec")
    assert quick is not None and quick == full
    assert quick == (crash if entry.STATUS_QUERIES[argv] else loaded)


@pytest.mark.parametrize("argv", [["-S", "-d"], ["-S", "--bogus"], ["-Sp"], ["-l", "-S", "vmlinuz"], ["-u"], [],
                                  ["-S", "-p", "-l"]])
def test_other_command_lines_take_the_full_path(argv, tmp_path):
    assert entry.quick_status(argv, str(sysfs(tmp_path, 1, 1, False))) is None


def test_a_hypervisor_or_no_kexec_files_takes_the_full_path(tmp_path):
    assert entry.quick_status(["-S"], str(tmp_path)) is None  # neither file: the full path says so in one line
    root = sysfs(tmp_path, 1, 1, False)
    (root / "sys/hypervisor").mkdir(parents=True)
    (root / "sys/hypervisor/type").write_text("xen\n")
    assert entry.quick_status(["-S"], str(root)) is None  # Xen: its hypercall answers (kexloader.system.xen_role)


def test_quick_status_imports_nothing_of_the_loader(tmp_path):
    """Only kexloader's two small modules (the standard library's are whatever `site` brings: an editable
    install's finder imports pathlib and re, a packaged one nothing)."""
    root = sysfs(tmp_path, 0, 1, False)
    child = ("import sys, json; from kexloader import entry; rc = entry.quick_status(['-S', '-p'], sys.argv[1]);"
             "print(json.dumps([rc, sorted(m for m in sys.modules if m.startswith('kexloader'))]))")
    r = subprocess.run([sys.executable, "-c", child, str(root)], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rc, modules = json.loads(r.stdout)
    assert rc == 1
    assert modules == ["kexloader", "kexloader.entry", "kexloader.kexec_sysfs"], modules
