"""--plan-out DIR and `python3 -m kexloader.system save FILE` write beside their target and rename into place: an
interrupt or a failed write (EFBIG under RLIMIT_FSIZE, ENOSPC, a directory in the way) leaves nothing new behind,
or the previous version intact, and no temporary sibling."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kexloader import cli, files, plan as plans
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import KexloaderError, SystemFactsError
from kexloader.model import Plan, Role, Segment
from kexloader.snapshot import load_snapshot, save_snapshot

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "fixtures/bzimage/tiny.bzImage")
SNAP = str(ROOT / "fixtures/snapshots/devhost.json")


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A shell starts background jobs with SIGINT ignored
    (`setsid nohup .ci/run &`), Python then keeps it ignored, and the interrupt tests would wait in vain."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kexloader(args: list[str], *, fsize: int | None = None, **kw) -> subprocess.Popen:
    """python3 -m kexloader ARGS in a child, with RLIMIT_FSIZE = fsize bytes if given (Python ignores SIGXFSZ:
    a write past the limit fails with EFBIG)."""
    def limit() -> None:
        default_sigint()
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, preexec_fn=limit, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def finished(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and err.count("\n") == (proc.returncode != 0), err  # a failure: one line
    return proc.returncode, err


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def snapshot_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture()
def big_initrd(tmp_path: Path) -> Path:
    path = tmp_path / "initrd.img"
    with open(path, "wb") as f:
        f.truncate(256 << 20)  # sparse: quick to make, 256 MiB to hash and to write
    return path


PLAN_OUT = ["kexloader", "--dry-run", "-l", TINY, "--facts", SNAP]


def test_plan_out_past_the_file_size_limit_leaves_nothing(tmp_path, big_initrd):
    out = tmp_path / "plan"
    code, err = finished(kexloader([*PLAN_OUT, "--initrd", str(big_initrd), "--plan-out", str(out)],
                                   fsize=1 << 20))
    assert code == 1 and "cannot write the plan" in err and "File too large" in err
    assert not out.exists() and not leftovers(tmp_path, "plan")


def test_plan_out_failing_over_a_previous_plan_keeps_it(tmp_path, big_initrd):
    out = tmp_path / "plan"
    code, err = finished(kexloader([*PLAN_OUT, "--append=first", "--plan-out", str(out)]))
    assert code == 0
    before = snapshot_of(out)
    code, err = finished(kexloader([*PLAN_OUT, "--initrd", str(big_initrd), "--plan-out", str(out)],
                                   fsize=1 << 20))
    assert code == 1 and "File too large" in err
    assert snapshot_of(out) == before and not leftovers(tmp_path, "plan")
    assert plans.read_dir(out).entry == json.loads(before["plan.json"])["entry"]  # still a whole plan


def test_plan_out_replaces_a_previous_plan_whole(tmp_path, capsys):
    out = tmp_path / "plan"
    for append in ("first", "second=" + "x" * 100):
        assert cli.main([*PLAN_OUT[1:], f"--append={append}", "--plan-out", str(out)],
                        backend_factory=RecordingBackend) == 0
    doc = json.loads((out / "plan.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([s["file"] for s in doc["segments"]] + ["plan.json"])
    assert plans.read_dir(out).segments and not leftovers(tmp_path, "plan")


def test_sigint_while_the_plan_is_written_leaves_nothing(tmp_path, big_initrd):
    out = tmp_path / "plan"
    proc = kexloader([*PLAN_OUT, "--initrd", str(big_initrd), "--plan-out", str(out)])
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path, "plan"):  # the temporary sibling exists: the segment files are being written
        assert proc.poll() is None and time.monotonic() < deadline, "finished before it could be interrupted"
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert not out.exists() and not leftovers(tmp_path, "plan")


# The command, with the plan's directory held open once every file is written and before it is renamed into
# place: the latest point an interrupt can come. The marker file says the child got there.
HELD_CHILD = r"""
import os, sys, time
import kexloader.plan as plan
real = plan.replace_directory
def held(path, fill, replaceable):
    def fill_and_wait(tmp):
        fill(tmp)
        open(os.environ["KL_MARKER"], "w").close()
        time.sleep(120)
    return real(path, fill_and_wait, replaceable)
plan.replace_directory = held
sys.argv = ["kexloader", *sys.argv[1:]]
from kexloader.entry import entry_point
entry_point()
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_a_signal_after_every_file_is_written_leaves_nothing(tmp_path, sig, code):
    """SIGINT exits 130 in one piece; SIGTERM (default action) kills the process outright, and even then the
    half-made plan is only a temporary sibling, never `out`."""
    out, marker = tmp_path / "plan", tmp_path / "filled"
    proc = subprocess.Popen([sys.executable, "-c", HELD_CHILD, *PLAN_OUT[1:], "--plan-out", str(out)], cwd=ROOT,
                            env={**os.environ, "KL_MARKER": str(marker)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert not out.exists()
    if sig == signal.SIGINT:
        assert not leftovers(tmp_path, "plan") and "Traceback" not in err


@pytest.mark.parametrize("in_the_way, words", [
    (lambda out: (out.mkdir(), (out / "00-kernel-100000.bin").mkdir()), "holds other files"),
    (lambda out: (out.mkdir(), (out / "notes.txt").write_text("mine")), "holds other files"),
    (lambda out: out.write_text("a file"), "exists and is not a directory"),
])
def test_plan_out_does_not_replace_what_is_not_a_plan(in_the_way, words, tmp_path, capsys):
    out = tmp_path / "plan"
    in_the_way(out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code = cli.main([*PLAN_OUT[1:], "--plan-out", str(out)], backend_factory=RecordingBackend)
    err = capsys.readouterr().err
    assert code == 1 and words in err and err.count("\n") == 1
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_no_space_while_writing_leaves_the_previous_plan(tmp_path, monkeypatch):
    out = tmp_path / "plan"
    plan = Plan(entry=0x100000, flags=0, segments=(Segment(Role.KERNEL, 0x100000, 0x1000, b"k"),))
    plans.write_dir(plan, out)
    before = snapshot_of(out)

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(KexloaderError, match="No space left on device"):
        plans.write_dir(plan, out)
    assert snapshot_of(out) == before and not leftovers(tmp_path, "plan")


def test_system_save_past_the_file_size_limit_keeps_the_old_snapshot(tmp_path):
    path = tmp_path / "facts.json"
    path.write_text("old")
    proc = kexloader(["kexloader.system", "save", str(path)], fsize=64)
    code, err = finished(proc)
    assert code == 1 and "cannot write snapshot" in err and "File too large" in err
    assert path.read_text() == "old" and not leftovers(tmp_path, "facts.json")


def test_system_save_writes_a_whole_snapshot(tmp_path):
    path = tmp_path / "facts.json"
    save_snapshot(load_snapshot(Path(SNAP)), path)
    assert load_snapshot(path).memmap == load_snapshot(Path(SNAP)).memmap
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~files._umask())  # as a plain write would make it
    with pytest.raises(SystemFactsError, match="cannot write snapshot"):
        save_snapshot(load_snapshot(Path(SNAP)), tmp_path / "missing-dir" / "facts.json")
