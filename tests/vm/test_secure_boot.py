"""kexloader on a Secure Boot machine whose kernel locks itself down (issue 13, "must show").

The firmware is OVMF's Secure Boot build on q35 with SMM, with variables that trust the signer of Debian's
kernel (tools/vm/secureboot.py: the certificate comes out of the kernel's own Authenticode signature and
virt-fw-vars enrolls it in db). OVMF starts the kernel given with -kernel only because db trusts it; the
kernel sees Secure Boot on and locks itself down, so kexec_load (-c, kexloader's own layout) is refused with
EPERM and only kexec_file_load (-s), which checks the next kernel's signature, works.

One QEMU run, three kernels:

    first   lockdown and Secure Boot as the kernel reports them; -c -l and -c -p refused; the plain forms
            (-l, -u, -p, -p -u: the default -a, kexec_file_load); -s -p and -s -p -u; Debian's kdump-config
            load and unload (it adds -s when efivarfs says Secure Boot is on); -s -l, then -e
    second  (kexec'd by -s) what it has of lockdown and EFI; -s -p, then sysrq c
    dump    the crash kernel: its command line and /proc/vmcore's ELF header
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tools.vm import debpackage, kdump_tools, new_token, secureboot

from tests.vm.test_kdump import CRASHKERNEL, crash_append
from tests.vm.test_kdump_tools import require_kdump_tools
from tests.vm.test_uefi import EFI_REPORT, QUIET, efivarfs

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 900  # ~4 min on 2 TCG cores: OVMF, three kernels, kexloader's imports; this only bounds a hang
SB_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

SB_REPORT = EFI_REPORT + rf"""
sb_report() {{
    p=$1
    efi_report $p
    mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
    mark $p.lockdown "$(cat /sys/kernel/security/lockdown 2>/dev/null || echo none)"
    mark $p.secureboot_var "$(od -A n -t u1 {SB_VAR} 2>/dev/null | tr -s ' ')"
    dmesg | grep -i -e 'secure boot' -e lockdown -e 'locked down' -e 'X.509' -e keyring > /tmp/sb.txt
    mark_b64 $p.sb_dmesg /tmp/sb.txt
}}
"""

FIRST = SB_REPORT + r"""
sb_report first
L="/boot/vmlinuz --initrd=/second.img"
P="/boot/vmlinuz --initrd=/leaf.img"
run c_load kexloader -c -l $L --append="$SECOND_APPEND"
mark c_loaded "$(cat /sys/kernel/kexec_loaded)"
run c_p kexloader -c -p $P --append="$CRASH_APPEND"
mark c_p_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
run plain_load kexloader -l $L --append="$SECOND_APPEND"
mark plain_loaded "$(cat /sys/kernel/kexec_loaded)"
run plain_unload kexloader -u
mark plain_unloaded "$(cat /sys/kernel/kexec_loaded)"
run plain_p kexloader -p $P --append="$CRASH_APPEND"
mark plain_p_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
run plain_pu kexloader -p -u
mark plain_pu_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
run s_p kexloader -s -p $P --append="$CRASH_APPEND"
mark s_p_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
run s_pu kexloader -s -p -u
mark s_pu_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
# Debian's kdump-config sees SecureBoot=1, SetupMode=0 in efivarfs and adds -s itself
""" + kdump_tools.SETUP + r"""
run kc_load kdump-config load
mark kc_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
mark_file kc_cmd /var/crash/kexec_cmd
run kc_unload kdump-config unload
mark kc_unloaded "$(cat /sys/kernel/kexec_crash_loaded)"
run s_load kexloader -s -l $L --append="$SECOND_APPEND"
mark s_loaded "$(cat /sys/kernel/kexec_loaded)"
run exec kexloader -e
mark exec_returned
"""

SECOND = SB_REPORT + r"""
sb_report second
mark_file second.cmdline /proc/cmdline
run s_p2 kexloader -s -p /boot/vmlinuz --initrd=/leaf.img --append="$CRASH_APPEND"
mark s_p2_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
sync
echo c > /proc/sysrq-trigger
mark crash_returned
"""

DUMP = r"""
mark_file dump.cmdline /proc/cmdline
head -c 64 /proc/vmcore > /tmp/vmcore.head 2>/dev/null
mark_file dump.vmcore_head /tmp/vmcore.head
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mark dump.lockdown "$(cat /sys/kernel/security/lockdown 2>/dev/null || echo none)"
"""


def require_secure_boot() -> None:
    from tests.vm.conftest import _unavailable

    missing = secureboot.missing()
    if missing:
        _unavailable("the Secure Boot VM test needs: " + "; ".join(missing))


def selected(lockdown: str) -> str:
    """The bracketed mode of /sys/kernel/security/lockdown ("none [integrity] confidentiality")."""
    m = re.search(r"\[(\w+)\]", lockdown)
    return m.group(1) if m else ""


def default_syscall() -> str:
    """Which of -c, -s, -a kexloader's --help calls the default (the tree's kexloader, as in the guest's wheel)."""
    help_text = subprocess.run([sys.executable, "-m", "kexloader", "--help"], capture_output=True, text=True,
                               cwd=REPO).stdout
    found = [opt for opt in ("-c", "-s", "-a")
             if re.search(rf"^\s*{opt}, --kexec-[\w-]+\s.*\(the default", help_text, re.M)]
    assert len(found) == 1, f"--help names {found or 'no'} default syscall:\n{help_text}"
    return found[0]


@pytest.fixture(scope="module")
def secure_boot(platform_harness):
    require_secure_boot()
    h = platform_harness
    mods = efivarfs(h)
    vars_file = secureboot.secure_boot_vars(h.vmlinuz, h.out_dir)
    crash = crash_append(new_token())
    second_append = f"console=ttyS0 panic=-1 {QUIET} stage=second {CRASHKERNEL} token={new_token()}"
    env = f"SECOND_APPEND={shlex.quote(second_append)}\nCRASH_APPEND={shlex.quote(crash)}\n"
    kt = require_kdump_tools(h)
    leaf = h.build(h.leaf(stages={"dump": DUMP}), "secure-boot-leaf")
    second = h.full(stages={"second": env + SECOND}, leaf=leaf, files=mods)
    second_img = h.build(second, "secure-boot-second", compress="gzip")
    first = h.full(stages={"first": env + FIRST}, leaf=leaf, files={**mods, "/second.img": second_img.read_bytes()})
    try:  # kdump_tools.SETUP configures kexloader's .deb: kexec is the package's, as in test_kdump_tools
        first.trees = list(h.deb_trees())
    except debpackage.Unavailable as e:
        from tests.vm.conftest import _unavailable
        _unavailable(str(e))
    kdump_tools.install(first, kt, kdump_tools.settings(f"{QUIET} stage=dump"),
                        kernel=(h.inputs.kernel_version, h.vmlinuz), crash_initrd=leaf.read_bytes())
    second_img.unlink()
    t = h.boot(first, f"console=ttyS0 panic=-1 {QUIET} stage=first {CRASHKERNEL} token={new_token()}",
               base_append="", name="secure-boot", firmware="bios", extra_args=secureboot.qemu_args(vars_file),
               timeout=TIMEOUT, idle_timeout=300)
    t.second_append, t.crash_append = second_append, crash
    return t


def test_the_kernel_boots_with_secure_boot_on_and_locks_itself_down(secure_boot):
    t = secure_boot
    assert t.get("first.efi") == "yes", t.summary()
    assert t.get("first.secureboot_var").split()[-1] == "1", t.get("first.secureboot_var")  # attributes, then 1
    dmesg = t.b64("first.sb_dmesg").decode()
    assert "Secure boot enabled" in dmesg, dmesg
    assert selected(t.get("first.lockdown")) in ("integrity", "confidentiality"), t.get("first.lockdown")


def test_c_is_refused_in_one_line_with_exit_255(secure_boot):
    t = secure_boot
    for name in ("c_load", "c_p"):
        out = t.out(name).strip().splitlines()
        assert t.rc(name) == 255, (name, t.out(name))
        assert len(out) == 1 and "Traceback" not in out[0], (name, out)
        assert "the kernel is locked down (lockdown=" in out[0], (name, out)  # says why, and what to do instead
    assert t.get("c_loaded") == "0" and t.get("c_p_loaded") == "0"


def test_plain_forms_load_through_kexec_file_load(secure_boot):
    """Plain -l, -u, -p, -p -u: the default is -a (kexec-tools 2.0.27+'s), so under lockdown they load and
    unload through kexec_file_load, as kexec-tools 2.0.32 does."""
    t = secure_boot
    assert default_syscall() == "-a"
    for name in ("plain_load", "plain_unload", "plain_p", "plain_pu"):
        assert t.rc(name) == 0, (name, t.out(name))
    assert t.get("plain_loaded") == "1" and t.get("plain_unloaded") == "0"
    assert t.get("plain_p_loaded") == "1" and t.get("plain_pu_loaded") == "0"


def test_s_p_loads_and_s_p_u_unloads(secure_boot):
    t = secure_boot
    assert t.rc("s_p") == 0, t.out("s_p")
    assert t.get("s_p_loaded") == "1"
    assert t.rc("s_pu") == 0, t.out("s_pu")
    assert t.get("s_pu_loaded") == "0"


def test_kdump_config_adds_s_itself_under_secure_boot(secure_boot):
    t = secure_boot
    assert t.rc("kc_load") == 0 and "loaded kdump kernel" in t.out("kc_load"), t.out("kc_load")
    assert t.get("kc_loaded") == "1"
    assert t.b64("kc_cmd").decode().startswith("/sbin/kexec -p -s --command-line="), t.b64("kc_cmd")
    assert t.rc("kc_unload") == 0 and "unloaded kdump kernel" in t.out("kc_unload"), t.out("kc_unload")
    assert t.get("kc_unloaded") == "0"


def test_s_l_and_e_boot_the_next_kernel(secure_boot):
    t = secure_boot
    assert t.rc("s_load") == 0, t.out("s_load")
    assert t.get("s_loaded") == "1"
    assert t.stages()[:2] == ["first", "second"], t.summary()
    assert not t.has("exec_returned")
    assert t.b64("second.cmdline").decode() == t.second_append + "\n"
    assert t.get("second.efi") == "yes"


def test_s_p_and_sysrq_c_boot_the_crash_kernel(secure_boot):
    t = secure_boot
    assert t.rc("s_p2") == 0, t.out("s_p2")
    assert t.get("s_p2_loaded") == "1"
    assert t.timed_out is None and t.stages() == ["first", "second", "dump"], t.summary()
    assert not t.has("crash_returned")
    # the kernel's own bzImage loader (kexec_file_load) puts elfcorehdr= first
    words = t.b64("dump.cmdline").decode().split()
    assert [w for w in words if not w.startswith("elfcorehdr=")] == t.crash_append.split(), words
    assert sum(w.startswith("elfcorehdr=") for w in words) == 1, words
    assert t.b64("dump.vmcore_head")[:4] == b"\x7fELF"
