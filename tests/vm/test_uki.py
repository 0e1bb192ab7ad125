"""Unified kernel images and boot loader entries kexec'd inside a QEMU guest (issue 14), BIOS firmware.

A UKI is built on the host with Debian 13's ukify and systemd-stub from the platform's kernel:
  .ucode   an uncompressed cpio with /ucode-part.bin (it only has to come first, as microcode does)
  .initrd  the leaf (gzip'ed cpio: busybox, /init, the "report" stage, /payload.bin)
  .cmdline the second kernel's command line with a fresh token; profile 1 has its own
and an addon (`*.addon.efi`, systemd-stub's addon stub) in the UKI's `.extra.d/` adds to the command line.
The first kernel kexecs it with -c (kexloader's own layout) and with -s (kexec_file_load, memfds), each
time with an extra --initrd (gzip'ed cpio with /extra.bin). The second kernel reports its /proc/cmdline
and the SHA-256 of one file from each initrd part. A third run boots a Type #1 entry with two initrds.
Each test runs on deb12 in a plain run; on deb13 (6.12) and deb13-bpo (7.x) with `-m vm_matrix`.
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
for f in /payload.bin /ucode-part.bin /extra.bin /addon-part.bin /ucode-addon.bin /order.txt; do
    if [ -e "$f" ]; then mark "sha256:$f" "$(sha256 "$f")"; else mark "sha256:$f" missing; fi
done
for f in /.extra/os-release /.extra/profile /.extra/credentials/a.cred /.extra/global_credentials/g.cred; do
    if [ -e "$f" ]; then mark "sha256:$f" "$(sha256 "$f")"; else mark "sha256:$f" missing; fi
done
mark extra "$(stat -c '%a:%n' /.extra /.extra/* /.extra/*/* 2>/dev/null | tr '\n' ' ')"
mark uname "$(uname -r)"
"""


def _ukify(*args):
    r = subprocess.run([sys.executable, str(UKIFY), "build", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def uki_setup(platform_harness, tmp_path_factory):
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
    h = platform_harness
    d = tmp_path_factory.mktemp("uki-vm")
    payload, ucode_file, extra_file = os.urandom(200 * 1024), os.urandom(3001), os.urandom(5003)
    leaf = h.build(h.leaf(stages={"report": REPORT_PARTS}, files={"/payload.bin": payload, "/order.txt": b"leaf"}),
                   "uki-leaf")
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


def _extra_expected(setup, profile):
    """What systemd-stub puts in /.extra for this profile: .osrel and .profile as files (sha256), and the modes."""
    from kexloader.images import uki
    data = setup["uki"].read_bytes()
    chosen = uki.select(uki.read_pe(data, "uki.efi"), profile, "uki.efi")
    sha = {f"/.extra/{f}": hashlib.sha256(bytes(uki.section_data(data, chosen[sec]))).hexdigest()
           for sec, f in ((".osrel", "os-release"), (".profile", "profile"))}
    sha["/.extra/credentials/a.cred"] = hashlib.sha256(setup["cred"].read_bytes()).hexdigest()
    sha["/.extra/global_credentials/g.cred"] = hashlib.sha256(setup["global_cred"].read_bytes()).hexdigest()
    return sha, ("555:/.extra 500:/.extra/credentials 500:/.extra/global_credentials 444:/.extra/os-release "
                 "444:/.extra/profile 400:/.extra/credentials/a.cred 400:/.extra/global_credentials/g.cred")


def _assert_second(t, cmdline, sha, parts=("/payload.bin", "/ucode-part.bin", "/extra.bin")):
    assert t.timed_out is None, t.summary()
    assert t.stages() == ["first", "report"], f"the second kernel did not reach /init: {t.summary()}"
    assert t.b64("cmdline").decode() == cmdline + "\n"
    for p in parts:
        assert t.get(f"sha256:{p}") == sha[p], p
    assert not t.has("exec_returned")


def test_uki_with_c_via_boot_entry(platform_harness, uki_setup):
    """-c: the Type #2 entry (the UKI), profile 0, its addon, plus --initrd."""
    t = _boot(platform_harness, uki_setup, "uki-c", [
        "run list kexloader --list-boot-entries --esp=/esp",
        "run load kexloader -c -l --esp=/esp --boot-entry=uki --initrd=/extra.img -d",
    ], _esp_files(uki_setup))
    assert t.rc("load") == 0, t.out("load")
    assert "uki.efi@1" in t.out("list") and "Rescue" in t.out("list"), t.out("list")
    _assert_second(t, uki_setup["line0"] + " addon=yes", uki_setup["sha256"])


def test_uki_with_s_profile_1(platform_harness, uki_setup):
    """-s: .linux and the assembled initrd in memfds, profile 1's command line, the addon."""
    t = _boot(platform_harness, uki_setup, "uki-s", [
        "run load kexloader -s -l /esp/EFI/Linux/uki.efi --uki-profile=1 --initrd=/extra.img -d",
    ], _esp_files(uki_setup))
    assert t.rc("load") == 0, t.out("load")
    _assert_second(t, uki_setup["line1"] + " addon=yes", uki_setup["sha256"])


def test_type1_entry_with_two_initrds(platform_harness, uki_setup):
    """A Type #1 entry: linux, two initrd lines, options; selected as the loader.conf default."""
    token = new_token()
    options = f"console=ttyS0 panic=-1 stage=report token={token} entry=type1"
    conf = f"title Debian\nversion 1\nlinux /vmlinuz\ninitrd /ucode.cpio\ninitrd /leaf.img\noptions {options}\n"
    files = {"/boot/vmlinuz": platform_harness.vmlinuz, "/boot/ucode.cpio": uki_setup["dir"] / "ucode.cpio",
             "/boot/leaf.img": uki_setup["leaf"], "/boot/loader/entries/debian-1.conf": conf.encode(),
             "/boot/loader/loader.conf": b"default debian-*\n"}
    t = _boot(platform_harness, uki_setup, "bls-type1", [
        "run load kexloader -c -l --boot-dir=/boot --esp=/boot --boot-entry=default -d",
    ], files)
    assert t.rc("load") == 0, t.out("load")
    _assert_second(t, options, uki_setup["sha256"], parts=("/payload.bin", "/ucode-part.bin"))


# --- the differential against systemd-stub itself, under OVMF ------------------------------------------------

OVMF_TIMEOUT = 600
# the files the differential compares: .initrd's, .ucode's, the addon's initrd and microcode, and /order.txt,
# which both the leaf and the addon's initrd hold (the later archive wins: the addon's)
PARTS = ("/payload.bin", "/ucode-part.bin", "/addon-part.bin", "/ucode-addon.bin", "/order.txt")


def _require_ovmf_and_mtools():
    from tests.vm.conftest import _unavailable
    from tools.vm.qemu import OVMF_FD, ovmf_args

    if ovmf_args() is None:
        _unavailable(f"OVMF is missing ({OVMF_FD}: apt-get install ovmf; sudo bash tools/install-deps.sh)")
    for tool in ("mkfs.fat", "mmd", "mcopy"):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            _unavailable(f"{tool} is missing (apt-get install dosfstools mtools)")


def _esp_image(out: Path, setup, startup: str) -> Path:
    """A FAT ESP: EFI/Linux/uki.efi, its .extra.d addon, a global addon in loader/addons, and startup.nsh (the
    UEFI shell runs it: there is no EFI/BOOT/BOOTX64.EFI, so OVMF falls through to its shell)."""
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    mkfs = next(str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / "mkfs.fat").exists())
    size_kib = max((setup["uki"].stat().st_size >> 10) + 16384, 65536)  # FAT32 wants 65525+ clusters
    nsh = out.with_suffix(".nsh")
    nsh.write_text(startup + "\r\n")
    out.unlink(missing_ok=True)
    steps = [[mkfs, "-C", "-F", "32", "-n", "ESP", str(out), str(size_kib)],
             ["mmd", "-i", str(out), "::/EFI", "::/EFI/Linux", "::/EFI/Linux/uki.efi.extra.d", "::/loader",
              "::/loader/addons", "::/loader/credentials"],
             ["mcopy", "-i", str(out), str(setup["cred"]), "::/EFI/Linux/uki.efi.extra.d/a.cred"],
             ["mcopy", "-i", str(out), str(setup["parts_addon"]), "::/EFI/Linux/uki.efi.extra.d/b.addon.efi"],
             ["mcopy", "-i", str(out), str(setup["global_cred"]), "::/loader/credentials/g.cred"],
             ["mcopy", "-i", str(out), str(setup["uki"]), "::/EFI/Linux/uki.efi"],
             ["mcopy", "-i", str(out), str(setup["addon"]), "::/EFI/Linux/uki.efi.extra.d/a.addon.efi"],
             ["mcopy", "-i", str(out), str(setup["global_addon"]), "::/loader/addons/g.addon.efi"],
             ["mcopy", "-i", str(out), str(nsh), "::/startup.nsh"]]
    for cmd in steps:
        subprocess.run(cmd, check=True, capture_output=True, env=env)
    return out


@pytest.fixture(scope="module")
def ovmf_setup(uki_setup):
    _require_ovmf_and_mtools()
    d = uki_setup["dir"]
    _ukify("--stub", ADDON_STUB, "--cmdline", "addon=global", "--output", d / "g.addon.efi")
    # an addon with an initrd (a later archive: its /order.txt replaces the leaf's) and microcode (first)
    addon_file, ucode_addon_file = os.urandom(1001), os.urandom(555)
    init = Initramfs()
    init.add_file("/addon-part.bin", addon_file)
    init.add_file("/order.txt", b"addon")
    init.write(d / "addon-initrd.img", "gzip")
    uc = Initramfs()
    uc.add_file("/ucode-addon.bin", ucode_addon_file)
    uc.write(d / "addon-ucode.cpio")
    _ukify("--stub", ADDON_STUB, "--initrd", d / "addon-initrd.img", "--microcode", d / "addon-ucode.cpio",
           "--output", d / "parts.addon.efi")
    (d / "a.cred").write_bytes(os.urandom(77))
    (d / "g.cred").write_bytes(os.urandom(99))
    sha = {**uki_setup["sha256"], "/addon-part.bin": hashlib.sha256(addon_file).hexdigest(),
           "/ucode-addon.bin": hashlib.sha256(ucode_addon_file).hexdigest(),
           "/order.txt": hashlib.sha256(b"addon").hexdigest()}
    return {**uki_setup, "global_addon": d / "g.addon.efi", "cred": d / "a.cred", "global_cred": d / "g.cred",
            "parts_addon": d / "parts.addon.efi", "sha256": sha}


@pytest.mark.parametrize("profile", [0, 1])
@pytest.mark.parametrize("how", ["stub", "c", "s"])
def test_same_as_systemd_stub_under_ovmf(platform_harness, ovmf_setup, how, profile):
    """The second kernel's /proc/cmdline, a file from each initrd part and the stub's /.extra/os-release and
    /.extra/profile, the files of an addon's initrd and microcode (and which archive came last), the
    credentials beside the UKI (/.extra/credentials, /.extra/global_credentials;
    sha256 and modes) are the same whether OVMF ran the UKI (systemd-stub, from the shell:
    `uki.efi @1` picks profile 1) or kexloader kexec'd it with -c or -s from a first kernel booted by OVMF;
    the profile and both addons (global, then the UKI's own) change them alike."""
    h, s = platform_harness, ovmf_setup
    expected = s[f"line{profile}"] + " addon=global addon=yes"
    name = f"uki-ovmf-{how}-p{profile}"
    extra_sha, extra_modes = _extra_expected(s, profile)
    if how == "stub":
        esp = _esp_image(h.out_dir / f"{name}-esp.img", s, r"fs0:\EFI\Linux\uki.efi" + (" @1" if profile else ""))
        try:
            t = h.boot(None, "", name=name, kernel=False, base_append="", firmware="ovmf",
                       extra_args=["-drive", f"file={esp},format=raw,if=ide"], timeout=OVMF_TIMEOUT, idle_timeout=300)
        finally:
            esp.unlink(missing_ok=True)
        assert t.timed_out is None, t.summary()
        assert t.stages() == ["report"], f"systemd-stub did not start the kernel: {t.summary()}"
        assert t.b64("cmdline").decode() == expected + "\n"
        for p in PARTS:
            assert t.get(f"sha256:{p}") == s["sha256"][p], p
        for p, want in extra_sha.items():
            assert t.get(f"sha256:{p}") == want, p
        assert t.get("extra").strip() == extra_modes
        return
    files = {"/esp/EFI/Linux/uki.efi": s["uki"], "/esp/EFI/Linux/uki.efi.extra.d/a.addon.efi": s["addon"],
             "/esp/loader/addons/g.addon.efi": s["global_addon"], "/esp/EFI/Linux/uki.efi.extra.d/a.cred": s["cred"],
             "/esp/loader/credentials/g.cred": s["global_cred"],
             "/esp/EFI/Linux/uki.efi.extra.d/b.addon.efi": s["parts_addon"]}
    script = (f"run load kexloader -{how} -l /esp/EFI/Linux/uki.efi --uki-profile={profile} -d\n"
              "run exec kexloader -e\nmark exec_returned\n")
    guest = h.full(stages={"first": script}, files=files, kernel=True)
    t = h.boot(guest, f"console=ttyS0 panic=-1 stage=first token={new_token()}", base_append="", name=name,
               firmware="ovmf", timeout=OVMF_TIMEOUT, idle_timeout=300)
    assert t.rc("load") == 0, t.out("load")
    _assert_second(t, expected, {**s["sha256"], **extra_sha},
                   parts=(*PARTS, *extra_sha))
    assert t.get("extra").strip() == extra_modes
