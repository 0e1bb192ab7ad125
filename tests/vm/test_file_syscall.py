"""-s / -a: kexec_file_load inside a QEMU guest (Debian's kernel has CONFIG_KEXEC_FILE): the kernel parses and
lays out the bzImage itself; kexloader hands it the files (a compressed kernel through a memfd)."""

from __future__ import annotations

import pytest

from tests.vm.test_linux_kexec import assert_second_kernel_up, run_kexec
from tools.vm import new_token

pytestmark = pytest.mark.vm

FILE_STYLE = r"""
gzip -c /boot/vmlinuz > /tmp/vmlinuz.gz
run status0 kexloader -S -l
run load1 kexloader -s -l /tmp/vmlinuz.gz --initrd=/leaf.img --append="$APPEND"
mark loaded1 "$(cat /sys/kernel/kexec_loaded)"
run unload kexloader -s -u
mark loaded2 "$(cat /sys/kernel/kexec_loaded)"
run load2 kexloader -a -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
mark loaded3 "$(cat /sys/kernel/kexec_loaded)"
run exec kexloader -e
"""


def test_kexec_file_load(platform_harness):
    append = f"console=ttyS0 panic=-1 stage=report token={new_token()}"
    run = run_kexec(platform_harness, "file-syscall", FILE_STYLE, append)
    t = run.transcript
    assert t.rc("load1") == 0, t.out("load1")
    assert t.get("loaded1") == "1"
    assert t.rc("unload") == 0 and t.get("loaded2") == "0", t.out("unload")
    assert t.rc("load2") == 0 and t.get("loaded3") == "1", t.out("load2")
    assert_second_kernel_up(run, append)
