"""The harness itself: Debian's kernel boots our initramfs, Python runs, kexloader imports from its wheel.

If this fails, the VM scenarios' failures say nothing about the loader.
"""

import pytest

from tools.vm import new_token, pyruntime

pytestmark = pytest.mark.vm

SMOKE = r"""
run imports python3 -c "import kexloader, kexloader.formats, construct, elftools, lz4.frame, zstandard, sys; print('IMPORTS-OK', kexloader.__file__, kexloader.formats.__file__, sys.version.split()[0])"
run version kexloader --version
run module python3 -m kexloader --help
mark_file cmdline /proc/cmdline
mark kexec_loaded "$(cat /sys/kernel/kexec_loaded)"
mark sha256:/boot/vmlinuz "$(sha256 /boot/vmlinuz)"
"""


@pytest.fixture(scope="module")
def smoke(platform_harness):
    token = new_token()
    guest = platform_harness.full(stages={"smoke": SMOKE})
    t = platform_harness.boot(guest, f"stage=smoke token={token}", name="smoke", timeout=300)
    t.token = token
    return t


def test_guest_boots_and_powers_off(smoke):
    assert smoke.timed_out is None, smoke.summary()
    assert smoke.returncode == 0, smoke.summary()
    assert smoke.stages() == ["smoke"]
    assert smoke.get("end").startswith("stage=smoke rc=0")


def test_kernel_got_our_command_line(smoke):
    assert smoke.b64("cmdline").decode() == f"console=ttyS0 panic=-1 stage=smoke token={smoke.token}\n"


def test_python_imports_kexloader_from_the_wheel(smoke):
    assert smoke.rc("imports") == 0, smoke.out("imports")
    out = smoke.out("imports")
    assert "IMPORTS-OK /usr/lib/python3/dist-packages/kexloader/__init__.py" in out
    assert "/usr/lib/python3/dist-packages/kexloader/formats/__init__.py" in out
    assert f" {pyruntime.PYVER}." in out  # the host release's interpreter (3.11 on Debian 12, 3.13 on 13)


def test_console_script_and_module_entry_points_run(smoke):
    assert smoke.rc("version") == 0, smoke.out("version")
    assert smoke.rc("module") == 0, smoke.out("module")
    assert "Traceback" not in smoke.out("version") + smoke.out("module")


def test_kernel_file_in_guest_is_intact(smoke, platform_harness):
    import hashlib

    assert smoke.get("sha256:/boot/vmlinuz") == hashlib.sha256(platform_harness.vmlinuz.read_bytes()).hexdigest()
    assert smoke.get("kexec_loaded") == "0"
