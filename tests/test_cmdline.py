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


# --- the Cmdline value type ------------------------------------------------------------------------------

def test_a_nul_is_refused_when_it_goes_in():
    from kexloader.cmdline import Cmdline
    for make in (lambda: Cmdline("a\0b"), lambda: Cmdline("a").append("b\0"),
                 lambda: Cmdline("a").add(("x=\0",), "kdump")):
        with pytest.raises(UsageError, match="the command line contains a NUL byte"):
            make()


@pytest.mark.parametrize("capacity, fits", [(None, True), (255, True), (2047, True), (10, False)])
def test_capacity_is_the_targets(capacity, fits):
    """bzImage: hdr.cmdline_size; a synthetic ELF header: 2047; multiboot, ELF boot notes: None (no limit)."""
    from kexloader.cmdline import Cmdline
    line = Cmdline("console=ttyS0,115200")
    if fits:
        assert line.encode(capacity) == b"console=ttyS0,115200\0"
    else:
        with pytest.raises(UsageError, match="20 bytes; this kernel accepts at most 10"):
            line.encode(capacity)


def test_additions_are_appended_and_named_when_too_long():
    from kexloader.cmdline import Cmdline
    user = Cmdline.reused("BOOT_IMAGE=/vmlinuz root=/dev/sda1 crashkernel=256M", crash=True).append("irqpoll")
    full = user.add(("elfcorehdr=1024K",), "kdump")
    assert str(user) == "root=/dev/sda1 irqpoll" and user.added == ()
    assert full.encode(100) == b"root=/dev/sda1 irqpoll elfcorehdr=1024K\0"
    with pytest.raises(UsageError, match='39 bytes with kdump\'s "elfcorehdr=1024K"; kernel \\(k\\) accepts at most 30'):
        full.encode(30, what="kernel (k)")
    user.check(30)  # the user's part alone fits


def test_bytes_argv_could_not_decode_pass_through():
    """Python decodes undecodable argv bytes as surrogates; they go to the kernel as they came (kexec-tools)."""
    from kexloader.cmdline import Cmdline
    assert Cmdline(b"a=\xff".decode("utf-8", "surrogateescape")).encode(None) == b"a=\xff\0"
