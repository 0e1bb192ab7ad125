"""Linux -> Linux with kexloader inside a QEMU guest (issue 2, item 8).

Each scenario is one QEMU run: Debian's kernel boots the "full" initrd (Python, the kexloader
wheel, /boot/vmlinuz, /leaf.img), stage "first" runs kexloader, `kexloader -e` starts the same
kernel with the leaf initrd, whose stage "report" prints its /proc/cmdline and the SHA-256 of a
random payload file inside the leaf. A fresh random token per run goes into the command line
(u-root's marker trick): it can only come back from the second kernel if kexloader handed it over.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass

import pytest

from tools.vm import REPORT, Transcript, new_token

pytestmark = pytest.mark.vm

TIMEOUT = 420  # one run is ~25 s on 2 TCG cores; this only bounds a hang


@dataclass
class KexecRun:
    transcript: Transcript
    append: str  # the command line asked for the second kernel
    payload_sha256: str
    first_cmdline: str


def run_kexec(h, name: str, first_stage: str, second_append: str, first_cmdline: str = "") -> KexecRun:
    """Boot stage `first_stage` (a script body; $APPEND holds second_append) and collect the run.

    first_cmdline: the first kernel's whole command line (default: console, panic, stage=first
    and a token).
    """
    payload = os.urandom(256 * 1024)
    leaf = h.leaf(stages={"report": REPORT}, files={"/payload.bin": payload})
    script = f"APPEND={shlex.quote(second_append)}\n{first_stage}\nmark exec_returned\n"
    guest = h.full(stages={"first": script}, leaf=leaf)
    first_cmdline = first_cmdline or f"console=ttyS0 panic=-1 stage=first token={new_token()}"
    t = h.boot(guest, first_cmdline, base_append="", name=name, timeout=TIMEOUT)
    return KexecRun(t, second_append, hashlib.sha256(payload).hexdigest(), first_cmdline)


def assert_second_kernel_up(run: KexecRun, expected_cmdline: str) -> None:
    t = run.transcript
    assert t.timed_out is None, t.summary()
    assert t.stages() == ["first", "report"], f"the second kernel did not reach /init: {t.summary()}"
    assert t.b64("cmdline").decode() == expected_cmdline + "\n"
    assert t.get("sha256:/payload.bin") == run.payload_sha256
    assert not t.has("exec_returned")


def assert_clean(t: Transcript, *names: str) -> None:
    for n in names:
        assert "Traceback" not in t.out(n), t.out(n)


# --- kexec-tools' argument style, with -S and -u on the way -----------------------------------------

KEXEC_TOOLS_STYLE = r"""
run status0 kexloader -S -l
run crash0 kexloader -S
mark loaded0 "$(cat /sys/kernel/kexec_loaded)"
run load1 kexloader -c -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
mark loaded1 "$(cat /sys/kernel/kexec_loaded)"
run status1 kexloader -S -l
run crash1 kexloader -S
run unload kexloader -c -u
mark loaded2 "$(cat /sys/kernel/kexec_loaded)"
run status2 kexloader -S -l
run load2 kexloader -c -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
mark loaded3 "$(cat /sys/kernel/kexec_loaded)"
run exec kexloader -e
"""


@pytest.fixture(scope="module")
def kexec_tools_style(platform_harness):
    append = f"console=ttyS0 panic=-1 stage=report token={new_token()}"
    return run_kexec(platform_harness, "kexec-tools-style", KEXEC_TOOLS_STYLE, append)


def test_status_before_load_says_nothing_loaded(kexec_tools_style):
    t = kexec_tools_style.transcript
    assert t.get("loaded0") == "0"
    assert t.rc("status0") == 0, t.out("status0")  # kexec-tools: -S exits 0 when nothing is loaded
    assert t.rc("crash0") == 0, t.out("crash0")  # bare -S asks about the crash kernel


def test_load_sets_kexec_loaded_and_status(kexec_tools_style):
    t = kexec_tools_style.transcript
    assert t.rc("load1") == 0, t.out("load1")
    assert t.get("loaded1") == "1"
    assert t.rc("status1") == 1, t.out("status1")  # -S -l exits 1 when a kernel is loaded
    assert t.rc("crash1") == 0, t.out("crash1")  # still no crash kernel


def test_unload_clears_kexec_loaded(kexec_tools_style):
    t = kexec_tools_style.transcript
    assert t.rc("unload") == 0, t.out("unload")
    assert t.get("loaded2") == "0"
    assert t.rc("status2") == 0, t.out("status2")


def test_exec_boots_second_kernel_with_exact_cmdline_and_initrd(kexec_tools_style):
    t = kexec_tools_style.transcript
    assert t.rc("load2") == 0, t.out("load2")
    assert t.get("loaded3") == "1"
    assert_second_kernel_up(kexec_tools_style, kexec_tools_style.append)
    assert_clean(t, "status0", "load1", "status1", "unload", "status2", "load2")


# --- systemd's argument style: separate words, options after the image -----------------------------

SYSTEMD_STYLE = r"""
run load kexloader -c --load /boot/vmlinuz --append "$APPEND" --initrd /leaf.img
mark loaded "$(cat /sys/kernel/kexec_loaded)"
run exec kexloader -e
"""


def test_systemd_argument_style(platform_harness):
    append = f"console=ttyS0 panic=-1 stage=report token={new_token()} quiet"
    run = run_kexec(platform_harness, "systemd-style", SYSTEMD_STYLE, append)
    t = run.transcript
    assert t.rc("load") == 0, t.out("load")
    assert t.get("loaded") == "1"
    assert_second_kernel_up(run, append)


# --- --reuse-cmdline with --append ------------------------------------------------------------------

REUSE = r"""
mark_file first_cmdline /proc/cmdline
run load kexloader -c -l /boot/vmlinuz --initrd=/leaf.img --reuse-cmdline --append="$APPEND"
run exec kexloader -e
"""


def test_reuse_cmdline_with_append(platform_harness):
    # BOOT_IMAGE= (as GRUB passes it) must be dropped, the rest kept, --append added after it;
    # /init takes the last stage= word, so the second kernel runs "report".
    token, token2 = new_token(), new_token()
    first = f"BOOT_IMAGE=/boot/vmlinuz-test console=ttyS0 panic=-1 stage=first token={token}"
    append = f"stage=report token2={token2}"
    run = run_kexec(platform_harness, "reuse-cmdline", REUSE, append, first_cmdline=first)
    t = run.transcript
    assert t.rc("load") == 0, t.out("load")
    assert t.b64("first_cmdline").decode() == first + "\n"
    expected = f"console=ttyS0 panic=-1 stage=first token={token} {append}"
    assert_second_kernel_up(run, expected)
