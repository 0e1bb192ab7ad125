"""The built wheel, not the source tree: everything in kexloader/ ships (py.typed too), and imports.

A subpackage the packaging does not find works from the editable install and is missing from the wheel.
These tests install the wheel with `pip install --target` into a throwaway directory (the same
way the guests get it) and import every module from there with Debian's python3 (GUEST_PYTHON, the
guests' interpreter), which has no editable install of kexloader to fall back on. No QEMU needed.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tools.vm import pyruntime
from tools.vm.env import GUEST_PYTHON, REPO



def _unavailable(msg: str) -> None:
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def _source_modules() -> set[str]:
    """Wheel paths the source tree should produce: kexloader/**.py and the py.typed marker."""
    out = {"kexloader/py.typed"}
    for p in (REPO / "kexloader").rglob("*.py"):
        rel = p.relative_to(REPO)
        if "__pycache__" in rel.parts or any(part.startswith(".") for part in rel.parts):
            continue
        out.add(rel.as_posix())
    return out


def test_wheel_holds_every_source_module(kexloader_wheel):
    with zipfile.ZipFile(kexloader_wheel) as z:
        names = set(z.namelist())
    missing = sorted(_source_modules() - names)
    assert not missing, (
        f"{len(missing)} source files are not in the wheel (see [tool.setuptools] in pyproject.toml): {missing}"
    )
    assert "kexloader/formats/__init__.py" in names


@pytest.fixture(scope="module")
def installed(kexloader_wheel) -> Path:
    if not GUEST_PYTHON.is_file():
        _unavailable(f"{GUEST_PYTHON} is missing (apt-get install python3)")
    staged = pyruntime.build_packages(kexloader_wheel)
    return staged.root / pyruntime.SITE_DIR


IMPORT_ALL = r"""
import importlib, pkgutil, sys
site = sys.argv[1]
sys.path.insert(0, site)
import kexloader, kexloader.formats
assert kexloader.__file__.startswith(site), kexloader.__file__
assert kexloader.formats.__file__.startswith(site + "/kexloader/formats/"), kexloader.formats.__file__
failed = []
for m in pkgutil.walk_packages(kexloader.__path__, "kexloader."):
    if m.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed.append(f"{m.name}: {type(e).__name__}: {e}")
print("imported", len(sys.modules))
if failed:
    sys.exit("\n".join(failed))
"""


def test_every_module_imports_from_the_installed_wheel(installed):
    r = subprocess.run([str(GUEST_PYTHON), "-s", "-c", IMPORT_ALL, str(installed)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_console_script_runs_from_the_installed_wheel(installed):
    r = subprocess.run([str(GUEST_PYTHON), "-s", "-c",
                        "import sys; sys.path.insert(0, sys.argv[1]); sys.argv = ['kexloader', '--version'];"
                        "from kexloader.entry import entry_point; entry_point()", str(installed)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
