"""The screen after kexec (issue 11 item 4): the next kernel gets the running kernel's boot screen_info, and the
plan says which framebuffer that is. The bytes are the first 0x40 of /sys/kernel/boot_params/data of Debian 12's
6.1 booted by OVMF with `-vga std` (tests/vm/test_uefi.py measured them: GOP 1280x800x32 at 0x80000000)."""

import dataclasses
import struct
from pathlib import Path

from kexloader import api, bootparams, system
from kexloader.model import LoadRequest

ROOT = Path(__file__).resolve().parent.parent
OVMF = system.load_snapshot(ROOT / "fixtures/snapshots/ovmf-2g-kdump.json")
GOP = bytes.fromhex("0000000000000000000000000000007000000005200320000000008000803e00000000000014081008080800081800"
                    "0000000100000001000000000000000000")
TINY = (ROOT / "fixtures/bzimage/tiny.bzImage").read_bytes()


def with_screen(screen: bytes):
    page = bytearray(OVMF.boot_params)
    page[:len(screen)] = screen
    return dataclasses.replace(OVMF, boot_params=bytes(page))


def test_the_gop_framebuffer_is_described():
    assert bootparams.describe_screen(GOP.ljust(4096, b"\0")) == (
        "screen: EFI framebuffer 1280x800x32 at 0x80000000, 5120 bytes a line (the running kernel's boot "
        "screen_info): the next kernel's efifb or simpledrm takes it over")


def test_a_framebuffer_above_4g_uses_ext_lfb_base():
    raw = bytearray(GOP.ljust(0x40, b"\0"))
    struct.pack_into("<II", raw, 0x36, 1 << 1, 0x38)  # VIDEO_CAPABILITY_64BIT_BASE, ext_lfb_base
    assert "at 0x3880000000," in bootparams.describe_screen(bytes(raw))


def test_text_mode_or_nothing_says_nothing():
    assert bootparams.describe_screen(None) is None
    assert bootparams.describe_screen(bytes(4096)) is None
    assert bootparams.describe_screen(bootparams.SCREEN_INFO_DEFAULT) is None  # VGA text (isVGA 1)


def test_the_next_kernel_gets_the_screen_info_and_the_plan_says_so():
    facts = with_screen(GOP)
    p = api.make_plan(LoadRequest(kernel=TINY, kernel_name="tiny", cmdline="console=ttyS0"), facts)
    (zp,) = [s for s in p.segments if s.role == "boot-params"]
    assert bytes(zp.data)[:len(GOP)] == GOP
    assert any(n.startswith("screen: EFI framebuffer 1280x800x32 at 0x80000000") for n in p.notes)


def test_reset_vga_hands_over_the_mode_the_purgatory_sets():
    """--reset-vga: the purgatory leaves VGA text mode 3, so the next kernel's screen_info is 80x25 VGA text
    (not the running kernel's framebuffer), and the plan says so instead of describing the framebuffer."""
    from kexloader.model import PurgatoryOptions

    facts = with_screen(GOP)
    req = LoadRequest(kernel=TINY, kernel_name="tiny", cmdline="console=ttyS0",
                      purgatory=PurgatoryOptions(reset_vga=True))
    p = api.make_plan(req, facts)
    (zp,) = [s for s in p.segments if s.role == "boot-params"]
    screen = bytes(zp.data)[:0x40]
    assert screen == bootparams.SCREEN_INFO_DEFAULT
    assert (screen[0x07], screen[0x0E], screen[0x0F]) == (80, 25, 1)  # orig_video_cols, _lines, _isVGA
    assert any(n.startswith("--reset-vga: the purgatory sets VGA text mode 3") for n in p.notes)
    assert not any(n.startswith("screen:") for n in p.notes)
    assert bytes(zp.data)[0x40:] == bytes(api.make_plan(
        LoadRequest(kernel=TINY, kernel_name="tiny", cmdline="console=ttyS0"), facts).segments[
            [s.role for s in p.segments].index("boot-params")].data)[0x40:]  # nothing else changes
