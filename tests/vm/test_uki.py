"""Unified kernel images and boot loader entries kexec'd inside a QEMU guest (issue 14), BIOS firmware.

A UKI is built on the host with Debian 13's ukify and systemd-stub from the platform's kernel:
  .ucode   an uncompressed cpio with /ucode-part.bin (it only has to come first, as microcode does)
  .initrd  the leaf (gzip'ed cpio: busybox, /init, the "report" stage, /payload.bin)
  .cmdline the second kernel's command line with a fresh token; profile 1 has its own
and an addon (`*.addon.efi`, systemd-stub's addon stub) in the UKI's `.extra.d/` adds to the command line.
The first kernel kexecs it with -c (kexloader's own layout) and with -s (kexec_file_load, memfds), each
time with an extra --initrd (gzip'ed cpio with /extra.bin). The second kernel reports its /proc/cmdline
and the SHA-256 of one file from each initrd part. A third run boots a Type #1 entry with two initrds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.vm import new_token
from tools.vm.cpio import Initramfs

pytestmark = pytest.mark.vm

CACHE = Path(os.environ.get("KEXLOADER_CACHE", Path.home() / ".cache/kexloader"))
TOOLS = CACHE / "uki-tools"
UKIFY = TOOLS / "usr/bin/ukify"
STUB = TOOLS / "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
ADDON_STUB = TOOLS / "usr/lib/systemd/boot/efi/addonx64.efi.stub"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
TIMEOUT = 420

REPORT_PARTS = r"""
mark_file cmdline /proc/cmdline
for f in /payload.bin /ucode-part.bin /extra.bin; do
    if [ -e "$f" ]; then mark "sha256:$f" "$(sha256 "$f")"; else mark "sha256:$f" missing; fi
done
mark uname "$(uname -r)"
"""


def _ukify(*args):
    r = subprocess.run([sys.executable, str(UKIFY), "build", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def uki_setup(vm_harness, tmp_path_factory):
    """The UKI, the parts and what the second kernel must report."""
    try:
        import pefile  # noqa: F401
    except ImportError:
        pefile = None
    if pefile is None or not UKIFY.exists() or not STUB.exists():
        msg = f"no ukify/systemd-stub in {TOOLS} (tools/uki-tools.sh) or no pefile"
        if IN_CI:
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg)
    h = vm_harness
    d = tmp_path_factory.mktemp("uki-vm")
    payload, ucode_file, extra_file = os.urandom(200 * 1024), os.urandom(3001), os.urandom(5003)
    leaf = h.build(h.leaf(stages={"report": REPORT_PARTS}, files={"/payload.bin": payload}), "uki-leaf")
    ucode = Initramfs()
    ucode.add_file("/ucode-part.bin", ucode_file)
    ucode.write(d / "ucode.cpio")
    extra = Initramfs()
    extra.add_file("/extra.bin", extra_file)
    extra.write(d / "extra.img", "gzip")
    token = new_token()
    line0 = f"console=ttyS0 panic=-1 stage=report token={token} uki=p0"
    line1 = f"console=ttyS0 panic=-1 stage=report token={token} uki=p1"
    _ukify("--stub", ADDON_STUB, "--profile", "ID=rescue\nTITLE=Rescue", "--cmdline", line1, "--output", d / "p1.efi")
    _ukify("--linux", h.vmlinuz, "--initrd", leaf, "--microcode", d / "ucode.cpio", "--cmdline", line0,
           "--stub", STUB, "--profile", "ID=default\nTITLE=Default", "--join-profile", d / "p1.efi",
           "--output", d / "uki.efi")
    _ukify("--stub", ADDON_STUB, "--cmdline", "addon=yes", "--output", d / "a.addon.efi")
    sums = {"/payload.bin": payload, "/ucode-part.bin": ucode_file, "/extra.bin": extra_file}
    return {"dir": d, "leaf": leaf, "uki": d / "uki.efi", "addon": d / "a.addon.efi", "line0": line0,
            "line1": line1, "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in sums.items()}}


def _boot(h, setup, name, commands, files):
    script = "\n".join(commands) + "\nrun exec kexloader -e\nmark exec_returned\n"
    guest = h.full(stages={"first": script}, files=files, kernel=False)
    return h.boot(guest, f"stage=first token={new_token()}", name=name, timeout=TIMEOUT)


def _esp_files(setup):
    files = {"/esp/EFI/Linux/uki.efi": setup["uki"], "/esp/EFI/Linux/uki.efi.extra.d/a.addon.efi": setup["addon"],
             "/extra.img": setup["dir"] / "extra.img"}
    return files


def _assert_second(t, cmdline, sha, parts=("/payload.bin", "/ucode-part.bin", "/extra.bin")):
    assert t.timed_out is None, t.summary()
    assert t.stages() == ["first", "report"], f"the second kernel did not reach /init: {t.summary()}"
    assert t.b64("cmdline").decode() == cmdline + "\n"
    for p in parts:
        assert t.get(f"sha256:{p}") == sha[p], p
    assert not t.has("exec_returned")


def test_uki_with_c_via_boot_entry(vm_harness, uki_setup):
    """-c: the Type #2 entry (the UKI), profile 0, its addon, plus --initrd."""
    t = _boot(vm_harness, uki_setup, "uki-c", [
        "run list kexloader --list-boot-entries --esp=/esp",
        "run load kexloader -c -l --esp=/esp --boot-entry=uki --initrd=/extra.img -d",
    ], _esp_files(uki_setup))
    assert t.rc("load") == 0, t.out("load")
    assert "uki.efi@1" in t.out("list") and "Rescue" in t.out("list"), t.out("list")
    _assert_second(t, uki_setup["line0"] + " addon=yes", uki_setup["sha256"])


def test_uki_with_s_profile_1(vm_harness, uki_setup):
    """-s: .linux and the assembled initrd in memfds, profile 1's command line, the addon."""
    t = _boot(vm_harness, uki_setup, "uki-s", [
        "run load kexloader -s -l /esp/EFI/Linux/uki.efi --uki-profile=1 --initrd=/extra.img -d",
    ], _esp_files(uki_setup))
    assert t.rc("load") == 0, t.out("load")
    _assert_second(t, uki_setup["line1"] + " addon=yes", uki_setup["sha256"])


def test_type1_entry_with_two_initrds(vm_harness, uki_setup):
    """A Type #1 entry: linux, two initrd lines, options; selected as the loader.conf default."""
    token = new_token()
    options = f"console=ttyS0 panic=-1 stage=report token={token} entry=type1"
    conf = f"title Debian\nversion 1\nlinux /vmlinuz\ninitrd /ucode.cpio\ninitrd /leaf.img\noptions {options}\n"
    files = {"/boot/vmlinuz": vm_harness.vmlinuz, "/boot/ucode.cpio": uki_setup["dir"] / "ucode.cpio",
             "/boot/leaf.img": uki_setup["leaf"], "/boot/loader/entries/debian-1.conf": conf.encode(),
             "/boot/loader/loader.conf": b"default debian-*\n"}
    t = _boot(vm_harness, uki_setup, "bls-type1", [
        "run load kexloader -l --boot-dir=/boot --esp=/boot --boot-entry=default -d",
    ], files)
    assert t.rc("load") == 0, t.out("load")
    _assert_second(t, options, uki_setup["sha256"], parts=("/payload.bin", "/ucode-part.bin"))
