"""The man pages (tools/manpages.py) are generated from the option table, checked in, and render cleanly."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kexloader import cli, options
from tools import manpages

ROOT = Path(__file__).resolve().parents[2]


def _unavailable(msg):
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def test_the_checked_in_files_are_what_the_tool_generates(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tools.manpages", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for rel in manpages.pages():
        assert (ROOT / rel).exists(), f"{rel} is missing: run python -m tools.manpages"
        assert (tmp_path / rel).read_text() == (ROOT / rel).read_text(), \
            f"{rel} is out of date: run python -m tools.manpages and commit the result"


def test_the_man_page_describes_every_option_as_help_does():
    page = manpages.pages()["man/kexloader.8"]
    for o in options.OPTIONS:
        assert "\\fB\\-\\-" + o.long.replace("-", "\\-") + "\\fR" in page, o.long
        if o.help:
            assert manpages.roff(o.help) in page and o.help in cli.USAGE.replace("\n" + " " * 26, " ")
    assert f"kexec\\-tools {options.KEXEC_TOOLS_VERSION} (kexloader " in page  # the kexec name's --version


@pytest.mark.parametrize("page", ["kexloader.8", "vmcore-dmesg.8"])
def test_the_pages_render_without_warnings(page):
    path = ROOT / "man" / page
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    if shutil.which("man"):
        cmd = ["man", "--warnings=all", "-l", str(path)]
    elif shutil.which("groff"):
        cmd = ["groff", "-man", "-ww", "-Tutf8", str(path)]
    else:
        _unavailable("neither man nor groff is installed")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and not r.stderr, r.stderr
    name = page.removesuffix(".8")
    assert r.stdout.startswith(name.upper()) or name.upper() in r.stdout.splitlines()[0]
    assert "SYNOPSIS" in r.stdout and "EXIT STATUS" in r.stdout
