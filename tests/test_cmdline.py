from kexloader import cmdline

import pytest

from kexloader.errors import UsageError


def test_reuse_drops_boot_image_and_for_crash_crashkernel():
    now = "BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 crashkernel=384M quiet"
    assert cmdline.reused(now, crash=False) == "root=/dev/sda1 crashkernel=384M quiet"
    assert cmdline.reused(now, crash=True) == "root=/dev/sda1 quiet"


def test_compose_joins_what_is_there():
    assert cmdline.compose("a b", None, "  c ") == "a b c"
    assert cmdline.compose(None, "") == ""


def test_encode_checks_capacity_before_anything():
    assert cmdline.encode("x" * 2047, capacity=2047).endswith(b"x\0")
    with pytest.raises(UsageError, match="2048 bytes; this kernel accepts at most 2047"):
        cmdline.encode("x" * 2048, capacity=2047)
    with pytest.raises(UsageError, match="NUL"):
        cmdline.encode("a\0b", capacity=100)
