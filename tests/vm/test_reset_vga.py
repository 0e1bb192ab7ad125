"""--reset-vga in QEMU (issue 13): the purgatory puts the VGA back in text mode 3 before the next kernel runs.

The first kernel starts in 80x30 text (`vga=0x0f05`, VIDEO_80x30 of arch/x86/boot/video.h: QEMU's direct kernel
boot hands it to the kernel's real-mode setup, which reprograms the CRTC for 480 lines), so QEMU's `-vga std`
shows a 720x480 screen. kexloader loads the same kernel with and without `--reset-vga`; the next kernel has no
framebuffer driver and leaves the VGA as the purgatory left it. QEMU's `screendump` (the monitor) gives the
screen's size: 720x400 (80x25 of 9x16 characters) after the reset, still 720x480 without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.vm import REPORT, new_token

pytestmark = pytest.mark.vm

TIMEOUT = 420
VIDEO_80x30 = 0x0F05

LINES = "od -An -tu1 -j14 -N1 /sys/kernel/boot_params/data | tr -d ' '"  # screen_info.orig_video_lines

FIRST = r"""
mark first_lines "$(LINES)"
run load kexloader -c -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND" $RESET
mark ready 1
read -r _go < /dev/ttyS0
run exec kexloader -e
mark exec_returned
""".replace("LINES", LINES)

SECOND = REPORT + r"""
mark second_lines "$(LINES)"
mark settled 1
sleep 600
""".replace("LINES", LINES)


def screen_size(vm, path: Path) -> tuple[int, int]:
    """Width and height of QEMU's screen, from the header of a `screendump` (binary PPM: P6 W H 255)."""
    vm.monitor(f"screendump {path}")
    words = path.read_bytes()[:32].split()
    assert words[0] == b"P6", words
    return int(words[1]), int(words[2])


def run(h, tmp_path: Path, reset: bool) -> dict:
    leaf = h.leaf(stages={"report": SECOND})
    token = new_token()
    script = f"APPEND='console=ttyS0 panic=-1 stage=report token={token}'\nRESET={'--reset-vga' if reset else ''}\n"
    guest = h.full(stages={"first": script + FIRST}, leaf=leaf)
    name = "reset-vga" if reset else "no-reset-vga"
    vm = h.start(guest, f"console=ttyS0 panic=-1 stage=first token={new_token()} vga={VIDEO_80x30}",
                 base_append="", name=name, timeout=TIMEOUT, monitor=True, extra_args=["-vga", "std"])
    try:
        vm.wait_for_marker("ready", timeout=TIMEOUT)
        before = screen_size(vm, tmp_path / f"{name}-before.ppm")
        vm.send(b"go\n")
        vm.wait_for_marker("settled", timeout=TIMEOUT)
        after = screen_size(vm, tmp_path / f"{name}-after.ppm")
    finally:
        vm.kill()
    t = vm.transcript()
    assert t.rc("load") == 0, t.out("load")
    assert token in t.b64("cmdline").decode(), t.summary()
    return dict(before=before, after=after, first_lines=t.get("first_lines"), second_lines=t.get("second_lines"),
                load=t.out("load"))


def test_reset_vga_leaves_80x25_text(vm_harness, tmp_path):
    r = run(vm_harness, tmp_path, reset=True)
    assert r["first_lines"] == "30" and r["before"] == (720, 480), r  # the first kernel's 80x30 text
    assert r["after"] == (720, 400), r  # mode 3: 80x25 of 9x16
    assert r["second_lines"] == "25", r  # and the next kernel's screen_info says 25 lines


def test_without_reset_vga_the_screen_stays_as_it_was(vm_harness, tmp_path):
    r = run(vm_harness, tmp_path, reset=False)
    assert r["before"] == (720, 480) and r["after"] == (720, 480), r
    assert r["second_lines"] == "30", r  # the running kernel's screen_info, handed on
