"""The VM harness's own parts, without QEMU: cpio writer, marker helpers and their parser, QEMU command."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import stat
import subprocess

import pytest

from tools.vm.cpio import Initramfs
from tools.vm.guest import HELPERS, INIT, Guest
from tools.vm.qemu import MarkerMissing, Transcript, qemu_command

BUSYBOX = shutil.which("busybox")


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, body, (rdevmajor, rdevminor)); a reader independent of the writer."""
    out, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701", f"bad magic at {off}"
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name_off = off + 110
        name = data[name_off:name_off + namesize - 1].decode()
        body_off = name_off + namesize
        body_off += -body_off % 4
        body = data[body_off:body_off + filesize]
        off = body_off + filesize
        off += -off % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, (rmaj, rmin))


def test_cpio_round_trip(tmp_path):
    img = Initramfs()
    img.add_file("/etc/hello", b"hi\n", 0o600)
    img.add_symlink("/bin/sh", "/bin/busybox")
    img.add_node("/dev/console", "c", 5, 1)
    (tmp_path / "tree/sub").mkdir(parents=True)
    (tmp_path / "tree/sub/x").write_bytes(b"x" * 5)
    img.add_tree(tmp_path / "tree", "/opt")
    buf = io.BytesIO()
    img.write_cpio(buf)
    entries = parse_newc(buf.getvalue())
    assert entries["etc/hello"] == (stat.S_IFREG | 0o600, b"hi\n", (0, 0))
    assert entries["bin/sh"][1] == b"/bin/busybox" and stat.S_ISLNK(entries["bin/sh"][0])
    assert entries["dev/console"][2] == (5, 1) and stat.S_ISCHR(entries["dev/console"][0])
    assert entries["opt/sub/x"][1] == b"xxxxx"
    names = list(entries)
    for n in names:  # every parent directory comes before what it holds
        parent = n.rpartition("/")[0]
        assert not parent or names.index(parent) < names.index(n)


def test_cpio_gzip_is_the_same_archive(tmp_path):
    img = Initramfs()
    img.add_file("/a", b"a" * 1000)
    raw = io.BytesIO()
    img.write_cpio(raw)
    img.write(tmp_path / "a.img", "gzip")
    assert gzip.decompress((tmp_path / "a.img").read_bytes()) == raw.getvalue()


@pytest.mark.skipif(not shutil.which("cpio"), reason="cpio(1) not installed")
def test_cpio_tool_reads_our_archive(tmp_path):
    img = Initramfs()
    img.add_file("/x/y", b"z")
    p = img.write(tmp_path / "t.cpio")
    out = subprocess.run(["cpio", "-t", "-F", str(p)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["x", "x/y"]


def test_bad_guest_paths_are_refused():
    img = Initramfs()
    with pytest.raises(ValueError):
        img.add_file("/../etc/passwd", b"")
    img.add_file("/f", b"")
    with pytest.raises(ValueError):
        img.add_file("/f/g", b"")


def test_transcript_markers():
    text = (
        "junk KXM|boot|stage=first uptime=3.50|MXK\r\n"
        "KXM|half|this line was cut by a kernel message\n"
        "[  1.0] kernel says hi\n"
        "KXM|cmdline|b64:aGVsbG8K|MXK\n"
        "KXM|load.rc|0|MXK\nKXM|load.secs|7.25|MXK\nKXM|load.out|b64:|MXK\n"
        "KXM|boot|stage=report uptime=2.00|MXK\n"
    )
    t = Transcript(text=text, cmd=["qemu"])
    assert t.stages() == ["first", "report"]
    assert t.uptimes() == {"first": 3.5, "report": 2.0}
    assert t.b64("cmdline") == b"hello\n"
    assert t.rc("load") == 0 and t.secs("load") == 7.25 and t.out("load") == ""
    assert not t.has("half")
    with pytest.raises(MarkerMissing):
        t.get("half")
    assert "stages ['first', 'report']" in repr(t)


@pytest.mark.skipif(not BUSYBOX, reason="busybox not installed")
def test_stage_helpers_under_busybox_sh(tmp_path):
    """Run the guest's helper functions with the host's busybox sh and parse what they print."""
    blob = bytes(range(256)) * 40
    (tmp_path / "blob").write_bytes(blob)
    script = HELPERS.replace("/tmp/.run.out", str(tmp_path / "run.out")).replace("/proc/uptime", str(tmp_path / "up"))
    (tmp_path / "up").write_text("12.50 3.00\n")
    script += f"""
mark plain a b  c
mark_file missing_one {tmp_path}/nope
run ok sh -c 'echo out; echo err >&2; exit 3'
mark_blob blob {tmp_path}/blob
"""
    r = subprocess.run([BUSYBOX, "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    t = Transcript(text=r.stdout, cmd=["sh"])
    assert t.get("plain") == "a b c"
    assert t.get("missing_one") == "missing"
    assert t.rc("ok") == 3 and sorted(t.out("ok").split()) == ["err", "out"]
    assert t.secs("ok") == 0.0
    assert t.blob("blob") == blob
    assert t.get("blob.sha256") == hashlib.sha256(blob).hexdigest()


@pytest.mark.skipif(not BUSYBOX, reason="busybox not installed")
def test_init_and_helpers_parse():
    for body in (INIT, HELPERS):
        r = subprocess.run([BUSYBOX, "sh", "-n", "-c", body], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not BUSYBOX, reason="busybox not installed")
def test_guest_image_layout():
    img = Guest(stages={"first": "mark x 1\n"}, files={"/payload.bin": b"p"}).image()
    e = img.entries
    assert stat.S_IMODE(e["init"].mode) == 0o755 and e["init"].data == INIT.encode()
    assert e["stages/first"].data == b"mark x 1\n"
    assert e["bin/sh"].target == "/bin/busybox"
    assert e["dev/console"].rdev == (5, 1)
    assert e["payload.bin"].data == b"p"


def test_qemu_command_follows_the_recipe():
    cmd = qemu_command("/k", "/i", "console=ttyS0", memory=6144, cpu="Haswell-noTSX", extra=["-device", "x"])
    s = " ".join(cmd)
    assert "-accel tcg" in s and "-cpu Haswell-noTSX" in s and "-m 6144" in s and "-smp 2" in s
    assert "-no-reboot" in cmd and "-nographic" in cmd and cmd[-2:] == ["-device", "x"]
    assert cmd[cmd.index("-append") + 1] == "console=ttyS0"


def test_qemu_command_extra_args_and_monitor():
    cmd = qemu_command("/k", "/i", "", smp="2,maxcpus=4", extra_args=["-device", "y"], monitor="/tmp/m.sock")
    assert cmd[cmd.index("-smp") + 1] == "2,maxcpus=4" and cmd[-2:] == ["-device", "y"]
    assert cmd[cmd.index("-monitor") + 1] == "unix:/tmp/m.sock,server=on,wait=off"
    assert qemu_command("/k")[qemu_command("/k").index("-monitor") + 1] == "none"


def test_platform_inputs_and_modules(tmp_path, monkeypatch):
    import lzma

    from tools.vm import env

    monkeypatch.setenv("KEXLOADER_CACHE", str(tmp_path))
    p = tmp_path / "platforms/deb13"
    mods = p / "linux/usr/lib/modules/6.12.1+deb13-amd64/kernel/drivers/xen"
    mods.mkdir(parents=True)
    (p / "linux/lib").symlink_to("usr/lib")
    (p / "linux/boot").mkdir()
    (p / "linux/boot/vmlinuz-6.12.1+deb13-amd64").write_bytes(b"k")
    (mods / "xen-privcmd.ko.xz").write_bytes(lzma.compress(b"\x7fELF module", check=lzma.CHECK_CRC32))
    (p / "xen/boot").mkdir(parents=True)
    (p / "xen/boot/xen-4.20-amd64.gz").write_bytes(b"x")
    (p / "info").write_text("kernel linux-image-6.12.1+deb13-amd64 6.12.1-1 trixie\n"
                            "xen xen-hypervisor-4.20-amd64 4.20.4-1\n")
    i = env.find_inputs("deb13")
    assert (i.platform, i.kernel_version, i.kernel_release) == ("deb13", "6.12.1+deb13-amd64", (6, 12))
    assert i.xen_version == "4.20"
    assert env.read_module(i.module("kernel/drivers/xen/xen-privcmd.ko")) == b"\x7fELF module"
    assert any("xen" in m and "install-deps" in m for m in i.missing(xen=True))  # no xen.elf
    assert "deb12" in " ".join(env.find_inputs("deb12").missing())
    with pytest.raises(ValueError):
        env.find_inputs("deb11")


def test_boot_flake_is_only_a_failure_inside_a_kernels_boot():
    from tools.vm.harness import _boot_flake

    first = "[ 0.0] Linux version 6.1\nKXM|boot|stage=first uptime=3.2|MXK\nKXM|exec.cmd|kexloader -e|MXK\n"
    stall = "no console output for 300s"
    # before /init, or a kexec'd kernel silent before its /init: booted once more
    assert _boot_flake(Transcript(text="[ 0.0] Linux version 6.1\n[ 1.5] IP idents", cmd=[], timed_out=stall))
    assert _boot_flake(Transcript(text=first + "[ 0.0] Linux version 6.1\n[ 1.5] IP idents", cmd=[],
                                  timed_out=stall))
    # the first kernel died before /init (panic=-1 ends QEMU): booted once more too
    assert _boot_flake(Transcript(text="[ 1.3] Oops: int3\n[ 1.3] Kernel panic - not syncing", cmd=[],
                                  returncode=0))
    # a later kernel that panicked in its own boot, before its /init: booted once more
    oops = "[ 3.1] Oops: general protection fault\n[ 3.1] Kernel panic - not syncing: Attempted to kill the idle task!\n"
    assert _boot_flake(Transcript(text=first + "[ 0.0] Linux version 6.12\n" + oops, cmd=[], returncode=0))
    # ... but not the panic we trigger ourselves (sysrq c, before the crash kernel's banner), nor one after /init
    sysrq = "KXM|crash|now|MXK\n[ 9.0] Kernel panic - not syncing: sysrq triggered crash\n"
    assert not _boot_flake(Transcript(text=first + sysrq, cmd=[], returncode=0))
    assert not _boot_flake(Transcript(text=first + "Linux version 6.1\nKXM|boot|stage=report|MXK\n" + oops,
                                      cmd=[], returncode=0))
    # silence after our own command, a run that ended, or a later kernel that hit the hard timeout: not
    assert not _boot_flake(Transcript(text=first, cmd=[], timed_out=stall))
    assert not _boot_flake(Transcript(text=first + "[ 0.0] Linux version 6.1\n", cmd=[], returncode=0))
    assert not _boot_flake(Transcript(text=first + "[ 0.0] Linux version 6.1\n", cmd=[],
                                      timed_out="timed out after 600s"))
    assert not _boot_flake(Transcript(text=first + "Linux version 6.1\nKXM|boot|stage=report|MXK\n", cmd=[],
                                      timed_out=stall))
