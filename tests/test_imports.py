"""What each command-line path imports: nothing it does not use (issue 15, start-up near Python's floor).

Every case runs `kexloader.cli.main` in a fresh interpreter, as `python3 -m kexloader` would, and reads the
child's `sys.modules` at the end (or at the reboot call). The child is safe on any host: raw_syscall is a
recorder, the sysfs root is a temporary directory that says an image is loaded, the Xen check says bare
metal, and the machine's facts come from a snapshot. The time these imports cost is measured by
tools/bench.py, not here: a test asserts only which modules are there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_BZIMAGE = ROOT / "fixtures/bzimage/tiny.bzImage"
SNAPSHOT = ROOT / "fixtures/snapshots/devhost.json"
SYS_KEXEC_LOAD, SYS_REBOOT = 246, 169

CHILD = r"""
import os, sys
from pathlib import Path
import kexloader.cli as cli
import kexloader.system as system
from kexloader.backends import linux

out, root = Path(os.environ["KL_OUT"]), Path(os.environ["KL_ROOT"])
calls = []

def report(rc):
    modules = sorted(sys.modules)  # before this child's own json
    import json
    out.write_text(json.dumps({"rc": rc, "calls": calls, "modules": modules}))

def record(nr, *args):
    calls.append(int(nr))
    if int(nr) == linux.SYS_REBOOT:  # reboot does not return
        report(0)
        os._exit(0)
    return 0

linux.raw_syscall = record
system.xen_role = lambda *a, **k: None  # bare metal: default_backend picks kexec_load
if os.environ.get("KL_FACTS"):
    system.read_facts = lambda *a, **k: system.load_snapshot(Path(os.environ["KL_FACTS"]))

def backend():
    b = cli.default_backend()
    b.root = root
    return b

report(cli.main(sys.argv[1:], backend_factory=backend))
"""

CONSTRUCT_AND_FRIENDS = {"construct", "elftools", "lz4", "zstandard", "bz2", "lzma", "hashlib", "json",
                         "tempfile", "shutil", "traceback"}
NO_LOAD = {"kexloader.images", "kexloader.plan", "kexloader.snapshot", "kexloader.efi", "kexloader.hypercall",
           "kexloader.purgatory", "kexloader.crash", "kexloader.bootparams", "kexloader.schema",
           "kexloader.vmcore", "kexloader.inspect", "kexloader.formats.bzimage", "kexloader.formats.elfcore",
           "kexloader.formats.efi", "kexloader.formats.xen"}
NOT_BZIMAGE = {"elftools", "lz4", "zstandard", "bz2", "lzma", "kexloader.images.multiboot",
               "kexloader.images.vmlinux", "kexloader.images.elfload", "kexloader.images.uki",
               "kexloader.vmcore", "kexloader.inspect", "kexloader.bootentries", "kexloader.hypercall",
               "kexloader.crash", "kexloader.formats.elfcore"}  # the kdump code: -p only


def run_cli(tmp_path: Path, *argv: str, facts: Path | None = None) -> dict:
    (tmp_path / "sys/kernel").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sys/kernel/kexec_loaded").write_text("1\n")
    (tmp_path / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    out = tmp_path / "out.json"
    env = dict(os.environ, KL_OUT=str(out), KL_ROOT=str(tmp_path), KL_FACTS=str(facts or ""))
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert out.exists(), f"the child did not finish: {proc.returncode} {proc.stderr[-2000:]}"
    return json.loads(out.read_text())


def present(modules: list[str], names: set[str]) -> list[str]:
    """The modules of `names` (or inside those packages) that were imported."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize("argv, rc, call", [
    pytest.param(["--version"], 0, None, id="version"),
    pytest.param(["-S"], 0, None, id="status"),  # the crash image, which the fake sysfs says is not loaded
    pytest.param(["-S", "-l"], 1, None, id="status-l"),  # the normal image: loaded
    pytest.param(["-u"], 0, None, id="unload"),  # kexec_load or kexec_file_load: the release's default
    pytest.param(["-c", "-u"], 0, SYS_KEXEC_LOAD, id="unload-c"),
    pytest.param(["-c", "-p", "-u"], 0, SYS_KEXEC_LOAD, id="crash-unload"),
    pytest.param(["-e"], 0, SYS_REBOOT, id="exec"),
])
def test_simple_paths_import_no_loader(tmp_path, argv, rc, call):
    got = run_cli(tmp_path, *argv)
    assert got["rc"] == rc and (call is None or call in got["calls"]), got["rc"]
    assert not present(got["modules"], CONSTRUCT_AND_FRIENDS | NO_LOAD | {"logging", "textwrap"})
    if not got["calls"]:  # nothing handed to the kernel: not even ctypes
        assert "ctypes" not in got["modules"]


def test_help_builds_the_text_and_nothing_else(tmp_path):
    got = run_cli(tmp_path, "--help")
    assert got["rc"] == 0
    assert "textwrap" in got["modules"]  # the control: the child does see what a path imports
    assert not present(got["modules"], CONSTRUCT_AND_FRIENDS | NO_LOAD | {"logging", "ctypes"})


def test_debug_imports_logging(tmp_path):
    got = run_cli(tmp_path, "-d", "-S")
    assert "logging" in got["modules"]
    assert not present(got["modules"], (CONSTRUCT_AND_FRIENDS - {"traceback"}) | NO_LOAD)  # logging's own


def test_bzimage_load_imports_only_the_bzimage_path(tmp_path):
    initrd = tmp_path / "initrd"
    initrd.write_bytes(os.urandom(1 << 16))
    got = run_cli(tmp_path, "-c", "-l", str(TINY_BZIMAGE), f"--initrd={initrd}", "--append=console=ttyS0",
                  facts=SNAPSHOT)
    assert got["rc"] == 0 and SYS_KEXEC_LOAD in got["calls"]
    assert {"kexloader.images.bzimage", "kexloader.purgatory", "hashlib"} <= set(got["modules"])
    assert not present(got["modules"], NOT_BZIMAGE)


def test_an_elf_kernel_does_import_pyelftools(tmp_path):
    """The control for the test above: the probe that needs pyelftools still gets it."""
    elf = next(iter(sorted((ROOT / "fixtures/elf").glob("*"))), None)
    if elf is None:
        pytest.skip("no ELF fixture")
    got = run_cli(tmp_path, "--dry-run", f"--facts={SNAPSHOT}", "-l", str(elf))
    assert "kexloader.images.vmlinux" in got["modules"] or "kexloader.images.multiboot" in got["modules"]
