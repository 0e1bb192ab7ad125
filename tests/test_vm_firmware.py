"""tools/vm's firmware parameter (issue 11 item 7), without booting: the QEMU command lines it makes."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.vm import qemu  # noqa: E402


def test_bios_is_the_default_and_adds_nothing():
    cmd = qemu.qemu_command(Path("/k"), "/i", "console=ttyS0")
    assert "-bios" not in cmd and "if=pflash" not in " ".join(cmd)
    assert cmd[cmd.index("-kernel") + 1] == "/k"


def test_ovmf_as_bios_image(monkeypatch, tmp_path):
    fd = tmp_path / "OVMF.fd"
    fd.write_bytes(b"x")
    monkeypatch.setattr(qemu, "OVMF_FD", fd)
    cmd = qemu.qemu_command(Path("/k"), None, "", firmware="ovmf")
    assert cmd[cmd.index("-bios") + 1] == str(fd)


def test_ovmf_as_two_flash_devices_when_there_is_no_ovmf_fd(monkeypatch, tmp_path):
    code, vars_ = tmp_path / "OVMF_CODE_4M.fd", tmp_path / "OVMF_VARS_4M.fd"
    code.write_bytes(b"c")
    vars_.write_bytes(b"v")
    monkeypatch.setattr(qemu, "OVMF_FD", tmp_path / "missing")
    monkeypatch.setattr(qemu, "OVMF_CODE", code)
    monkeypatch.setattr(qemu, "OVMF_VARS", vars_)
    drives = [a for a in qemu.qemu_command(Path("/k"), firmware="ovmf") if a.startswith("if=pflash")]
    assert drives == [f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                      f"if=pflash,format=raw,unit=1,snapshot=on,file={vars_}"]  # the package's file is never written


def test_no_kernel_boots_from_a_disk():
    cmd = qemu.qemu_command(None, None, "", firmware="ovmf", extra_args=["-drive", "file=esp.img,format=raw,if=ide"])
    assert "-kernel" not in cmd and "-initrd" not in cmd and "-append" not in cmd
    assert cmd[-2:] == ["-drive", "file=esp.img,format=raw,if=ide"]


def test_unknown_firmware_is_refused():
    with pytest.raises(ValueError, match="one of bios, ovmf"):
        qemu.qemu_command(Path("/k"), firmware="coreboot")


def test_a_xen_line_inside_a_dom0_marker_is_taken_out():
    """Xen's console line printed into a marker line dom0 was writing (20261203-130125 uefi-xen-xen-deb13-bpo.log:
    "(XEN) uart interrupt taking more than 4ms, switched to polling" in the middle of a b64 marker)."""
    import base64

    b64 = base64.b64encode(b"the plan's text, long enough to be cut in two").decode()
    text = (f"(XEN) Xen version 4.20\r\nKXM|plan.out|b64:{b64[:20]}(XEN) uart interrupt taking more than 4ms, "
            f"switched to polling\r\n{b64[20:]}|MXK\r\n(XEN) a line of its own\r\nKXM|load.rc|0|MXK\r\n")
    t = qemu.Transcript(text=text, cmd=[])
    assert t.out("plan") == "the plan's text, long enough to be cut in two"
    assert t.rc("load") == 0
    assert "(XEN) Xen version 4.20" in t.text  # the text itself is kept whole


def test_a_kernel_message_inside_a_marker_is_taken_out():
    """20261203-140553 kdump-backup.log: "[   10.710604] hrtimer: interrupt took ..." inside a b64 marker."""
    import base64

    b64 = base64.b64encode(b"a plan, long enough to be cut in two by a kernel warning").decode()
    text = (f"[    0.000000] Linux version 6.1\r\nKXM|load.out|b64:{b64[:30]}[   10.710604] hrtimer: interrupt took "
            f"2170080 ns\r\n{b64[30:]}|MXK\r\n")
    assert qemu.Transcript(text=text, cmd=[]).out("load") == "a plan, long enough to be cut in two by a kernel warning"
