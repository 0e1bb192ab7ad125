"""The command's entry (kexloader/entry.py): a bare `-S` answered from sysfs and a bare `-u` done without the
loader's imports give what the full command line gives (the same answer, the same syscalls), and anything else
goes to the full path."""

from __future__ import annotations

import errno
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kexloader import cli, entry
from kexloader.backends import linux
from kexloader.backends.linux import LinuxKexecBackend

ROOT = Path(__file__).resolve().parent.parent


def sysfs(tmp_path: Path, loaded: int, crash: int, new_layout: bool) -> Path:
    d = tmp_path / ("sys/kernel/kexec" if new_layout else "sys/kernel")
    d.mkdir(parents=True, exist_ok=True)
    names = ("loaded", "crash_loaded") if new_layout else ("kexec_loaded", "kexec_crash_loaded")
    (d / names[0]).write_text(f"{loaded}\n")
    (d / names[1]).write_text(f"{crash}\n")
    return tmp_path


def status_shapes() -> dict[tuple[str, ...], bool]:
    """-S alone or with one of -p and -l, long and short, in every order -> asks about the crash image."""
    shapes = {}
    for status in entry.STATUS:
        for kind in (None, *entry.CRASH, *entry.NORMAL):
            tokens = [t for t in (status, kind) if t]
            shapes.update(dict.fromkeys(itertools.permutations(tokens), kind not in entry.NORMAL))
    return shapes


STATUS_SHAPES = status_shapes()


@pytest.mark.parametrize("new_layout", [False, True], ids=["6.1", "6.19+"])
@pytest.mark.parametrize("loaded, crash", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("argv", list(STATUS_SHAPES), ids=" ".join)
def test_quick_status_is_what_the_full_path_says(argv, loaded, crash, new_layout, tmp_path):
    root = sysfs(tmp_path, loaded, crash, new_layout)
    quick = entry.quick_status(list(argv), str(root))
    full = cli.main(list(argv), backend_factory=lambda: LinuxKexecBackend(root=root), prog="kexec")
    assert quick is not None and quick == full
    assert quick == (crash if STATUS_SHAPES[argv] else loaded)


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


# ------------------------------------------------------------------------------------------- -u

def unload_shapes() -> list[tuple[str, ...]]:
    """-u with at most one -p and one syscall option, long and short, in every order."""
    shapes = []
    for unload in entry.UNLOAD:
        for crash in (None, *entry.CRASH):
            for syscall in (None, *entry.SYSCALLS):
                tokens = [t for t in (unload, crash, syscall) if t]
                shapes += itertools.permutations(tokens)
    return shapes


class UnloadKernel:
    """raw_syscall answering the two unloads with chosen results (0 or -errno), recording the calls."""

    def __init__(self, file_rc: int, load_rc: int):
        self.file_rc, self.load_rc = file_rc, load_rc
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def __call__(self, nr, *args):
        self.calls.append((nr, args))
        return self.file_rc if nr == linux.SYS_KEXEC_FILE_LOAD else self.load_rc


KERNELS = {  # name -> (kexec_file_load's answer, kexec_load's answer)
    "both work": (0, 0),
    "no kexec_file_load": (-errno.ENOSYS, 0),
    "file refused": (-errno.EPERM, 0),
    "locked down": (0, -errno.EPERM),
    "no kexec at all": (-errno.ENOSYS, -errno.ENOSYS),
}


@pytest.mark.parametrize("argv", unload_shapes(), ids=" ".join)
def test_quick_unload_does_what_the_full_path_does(argv, monkeypatch, tmp_path, capsys):
    crash = any(a in entry.CRASH for a in argv)
    for name, (file_rc, load_rc) in KERNELS.items():
        quick_kernel, full_kernel = UnloadKernel(file_rc, load_rc), UnloadKernel(file_rc, load_rc)
        monkeypatch.setattr(linux, "raw_syscall", quick_kernel)
        quick = entry.quick_unload(list(argv), str(tmp_path))
        monkeypatch.setattr(linux, "raw_syscall", full_kernel)
        full = cli.main(list(argv), backend_factory=lambda: LinuxKexecBackend(root=tmp_path), prog="kexec")
        capsys.readouterr()
        if quick is None:  # the full path asks again and says why: the kernel refused somewhere
            assert full != 0, name
        else:
            assert (quick, quick_kernel.calls) == (full, full_kernel.calls) == (0, full_kernel.calls), name
        flags = [args[-1] for _, args in quick_kernel.calls]
        assert all(bool(f & 0x2 if nr == linux.SYS_KEXEC_FILE_LOAD else f & 0x1) == crash
                   for (nr, _), f in zip(quick_kernel.calls, flags)), (name, quick_kernel.calls)


def test_quick_unload_takes_the_file_syscall_first_unless_told(monkeypatch, tmp_path):
    kernel = UnloadKernel(-errno.ENOSYS, 0)
    monkeypatch.setattr(linux, "raw_syscall", kernel)
    assert entry.quick_unload(["-p", "-u"], str(tmp_path)) == 0
    assert [nr for nr, _ in kernel.calls] == [linux.SYS_KEXEC_FILE_LOAD, linux.SYS_KEXEC_LOAD]
    assert entry.quick_unload(["-s", "-u"], str(tmp_path)) is None  # -s: no fallback; the full path exits 253
    kernel.calls.clear()
    assert entry.quick_unload(["-u", "-c"], str(tmp_path)) == 0
    assert [nr for nr, _ in kernel.calls] == [linux.SYS_KEXEC_LOAD]


@pytest.mark.parametrize("argv", [["-u", "-d"], ["-u", "-l", "vmlinuz"], ["-u", "-p", "-p"], ["-u", "-c", "-s"],
                                  ["-pu"], ["-u", "--bogus"], ["-u", "-u"], ["-p"], ["-S", "-u"]])
def test_other_unload_command_lines_take_the_full_path(argv, monkeypatch, tmp_path):
    monkeypatch.setattr(linux, "raw_syscall", UnloadKernel(0, 0))
    assert entry.quick_unload(argv, str(tmp_path)) is None


def test_quick_unload_leaves_xen_to_the_full_path(monkeypatch, tmp_path):
    kernel = UnloadKernel(0, 0)
    monkeypatch.setattr(linux, "raw_syscall", kernel)
    (tmp_path / "sys/hypervisor").mkdir(parents=True)
    (tmp_path / "sys/hypervisor/type").write_text("xen\n")
    assert entry.quick_unload(["-u"], str(tmp_path)) is None
    assert kernel.calls == []  # the dom0 kernel's kexec is the wrong door: Xen's hypercall unloads


COSTLY = {"typing", "pathlib", "contextlib", "functools", "collections", "re", "dataclasses", "enum"}


def quick_path_modules(call: str, root: Path) -> tuple[str, list[str]]:
    """(what `call` returned, the modules it left imported) in a `python -S` child (nothing that `site` brings),
    with the syscall faked (ctypes aside: the fake stands in for it) and sync a no-op."""
    child = ("import os, sys; import kexloader.backends.linux as linux; linux.raw_syscall = lambda *a: -1;"
             f"os.sync = lambda: None; from kexloader import entry; rc = {call};"
             "print(rc, *sorted(m for m in sys.modules if m.startswith('kexloader') or '.' not in m))")
    r = subprocess.run([sys.executable, "-S", "-c", child, str(root)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rc, *modules = r.stdout.split() or ["(nothing)"]
    assert not COSTLY & set(modules), (modules, r.stderr)
    return rc + r.stderr, [m for m in modules if m.startswith("kexloader")]


def test_quick_unload_imports_no_planning_module_and_no_costly_library(tmp_path):
    rc, modules = quick_path_modules("entry.quick_unload(['-p', '-c', '-u'], sys.argv[1])", tmp_path)
    assert rc == "None" and modules == [  # refused (-1): the full path would say why
        "kexloader", "kexloader.backends", "kexloader.backends.linux", "kexloader.backends.unload", "kexloader.entry",
        "kexloader.errors", "kexloader.kexec_abi", "kexloader.kexec_sysfs"], (rc, modules)


# ------------------------------------------------------------------------------------------------ -e

def exec_shapes() -> list[tuple[str, ...]]:
    """-e or --exec, alone or with the options that change nothing (-x, --no-ifdown, --no-sync), any order."""
    shapes = []
    for e in entry.EXEC:
        for extra in ((), ("-x",), ("--no-ifdown",), ("--no-sync",), ("-x", "--no-sync")):
            shapes += itertools.permutations((e, *extra))
    return shapes


class RebootKernel:
    """raw_syscall answering reboot(2) with `rc` (a real kexec reboot never returns), recording the calls."""

    def __init__(self, rc: int):
        self.rc, self.calls = rc, []

    def __call__(self, nr, *args):
        self.calls.append((nr, args))
        return self.rc


@pytest.mark.parametrize("argv", exec_shapes(), ids=" ".join)
@pytest.mark.parametrize("loaded", [0, 1])
def test_quick_exec_does_what_the_full_path_does(argv, loaded, monkeypatch, tmp_path, capsys):
    root = sysfs(tmp_path, loaded, 0, new_layout=False)
    syncs = []
    monkeypatch.setattr(linux.os, "sync", lambda: syncs.append(1))
    quick_kernel, full_kernel = RebootKernel(-errno.EPERM), RebootKernel(-errno.EPERM)
    monkeypatch.setattr(linux, "raw_syscall", quick_kernel)
    assert entry.quick_exec(list(argv), str(root)) is None  # it returns only when the image did not start
    monkeypatch.setattr(linux, "raw_syscall", full_kernel)
    full = cli.main(list(argv), backend_factory=lambda: LinuxKexecBackend(root=root), prog="kexec")
    err = capsys.readouterr().err
    assert full == (255 if loaded else 1) and err.count("\n") == 1, err  # refused (EPERM); nothing loaded
    assert quick_kernel.calls == full_kernel.calls == ([(linux.SYS_REBOOT, (
        linux.LINUX_REBOOT_MAGIC1, linux.LINUX_REBOOT_MAGIC2, linux.LINUX_REBOOT_CMD_KEXEC, 0))] if loaded else [])
    assert len(syncs) == 2 * loaded  # both sync first


@pytest.mark.parametrize("argv", [["-e", "-d"], ["-e", "-e"], ["-e", "-l", "vmlinuz"], ["-e", "-p"], ["-ex"],
                                  ["-x"], ["-e", "--bogus"], ["-f"]])
def test_other_exec_command_lines_take_the_full_path(argv, monkeypatch, tmp_path):
    root = sysfs(tmp_path, 1, 0, new_layout=False)
    kernel = RebootKernel(-errno.EPERM)
    monkeypatch.setattr(linux, "raw_syscall", kernel)
    monkeypatch.setattr(linux.os, "sync", lambda: None)
    assert entry.quick_exec(argv, str(root)) is None and kernel.calls == []


def test_quick_exec_leaves_xen_to_the_full_path(monkeypatch, tmp_path):
    root = sysfs(tmp_path, 1, 0, new_layout=False)
    (root / "sys/hypervisor").mkdir(parents=True)
    (root / "sys/hypervisor/type").write_text("xen\n")
    kernel = RebootKernel(0)
    monkeypatch.setattr(linux, "raw_syscall", kernel)
    assert entry.quick_exec(["-e"], str(root)) is None and kernel.calls == []


def test_quick_exec_imports_no_planning_module(tmp_path):
    rc, modules = quick_path_modules("entry.quick_exec(['-e'], sys.argv[1])", sysfs(tmp_path, 1, 0, False))
    assert rc == "None" and modules == [
        "kexloader", "kexloader.backends", "kexloader.backends.linux", "kexloader.entry", "kexloader.errors",
        "kexloader.kexec_abi", "kexloader.kexec_sysfs"], (rc, modules)
