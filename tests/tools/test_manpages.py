"""The man pages and bash completion (tools/manpages.py) are generated from the option table, checked in, and work."""

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


def _complete(tmp_path, *words):
    """What completion/kexloader.bash offers for the command line `words` (the last one being completed)."""
    bash = shutil.which("bash")
    if bash is None:
        _unavailable("bash is not installed")
    script = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _kexloader;'
              ' (( ${#COMPREPLY[@]} )) && printf "%s\\n" "${COMPREPLY[@]}"; complete -p kexec kexloader')
    r = subprocess.run([bash, "--norc", "--noprofile", "-c", script, "bash", str(ROOT / "completion/kexloader.bash"),
                        *words], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-2:] == ["complete -F _kexloader kexec", "complete -F _kexloader kexloader"]  # both names
    return lines[:-2]


def test_completion_offers_the_tables_options(tmp_path):
    assert _complete(tmp_path, "kexec", "--ap") == ["--append="]  # takes an argument: offered with '='
    assert _complete(tmp_path, "kexloader", "--load-p") == ["--load-panic", "--load-preserve-context"]
    every = _complete(tmp_path, "kexec", "-")
    want = [f"-{o.short}" for o in options.OPTIONS if o.short]
    want += [f"--{o.long}" + "=" * o.takes_arg for o in options.OPTIONS]
    assert every == want


def test_completion_offers_files_after_options_that_take_them(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/initrd.img").touch()
    (tmp_path / "boot/vmlinuz").touch()
    assert sorted(_complete(tmp_path, "kexec", "-l", "boot/")) == ["boot/initrd.img", "boot/vmlinuz"]  # the kernel
    assert _complete(tmp_path, "kexec", "--initrd", "boot/i") == ["boot/initrd.img"]
    assert _complete(tmp_path, "kexec", "--initrd", "=", "boot/i") == ["boot/initrd.img"]  # --initrd=… split at '='
    assert _complete(tmp_path, "kexec", "--initrd=boot/i") == ["--initrd=boot/initrd.img"]  # … or one word
    assert _complete(tmp_path, "kexec", "--plan-out", "b") == ["boot"]  # a directory
    assert _complete(tmp_path, "kexec", "--append", "b") == []  # free text: nothing to offer
