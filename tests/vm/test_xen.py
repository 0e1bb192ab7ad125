"""The seed's Xen paths with kexloader inside the guest: Linux -> Xen (issue 6), and from a Xen dom0
through Xen's kexec hypercall: Xen -> Linux and Xen -> Xen (issue 7).

Under Xen, QEMU runs `-cpu Haswell-noTSX` (a PV dom0 dies early under `-cpu max`, VM-RECIPE.md).
Xen's console is COM1 and dom0's is hvc0, which Xen forwards there, so markers from both arrive on
the one serial console. A dom0 that powers off makes Xen halt the machine without ending QEMU:
those runs wait for the last marker and stop QEMU themselves.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

import pytest

from tools.vm import new_token

pytestmark = pytest.mark.vm

CPU = "Haswell-noTSX"
TIMEOUT = 600
XEN_ARGS = "console=com1 com1=115200,8n1 dom0_mem=512M no-real-mode"
DOM0_BASE = "console=hvc0 panic=-1 loglevel=3"  # quiet: a kernel warning can split a marker line

# Stage of a system that was kexec'd into: what it got, then power off.
REPORT = r"""
mark_file cmdline /proc/cmdline
mark hypervisor "$(cat /sys/hypervisor/type 2>/dev/null || echo none)"
mark sha256 "$(sha256 /payload.bin)"
"""

# In a dom0: the hypercall door for kexloader (interfaces.md 4.5).
XEN_SETUP = r"""
insmod /lib/xen/xen-privcmd.ko
insmod /lib/xen/xenfs.ko
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen
mark caps "$(cat /proc/xen/capabilities)"
mark hypervisor "$(cat /sys/hypervisor/type)"
"""


def xen_modules(h) -> dict:
    """The dom0 kernel's xen-privcmd and xenfs, inflated (Debian 13 ships .ko.xz)."""
    return h.modules({"/lib/xen/xen-privcmd.ko": "kernel/drivers/xen/xen-privcmd.ko",
                      "/lib/xen/xenfs.ko": "kernel/drivers/xen/xenfs/xenfs.ko"})


def full_with_xen(h, stages: dict, payload: bytes):
    leaf = h.leaf(stages={"report": REPORT}, files={"/payload.bin": payload})
    files = {"/boot/xen.gz": h.inputs.xen_gz, "/boot/xen.elf": h.inputs.xen_elf, **xen_modules(h)}
    return h.full(stages=stages, files=files, leaf=leaf)


def run_until_end(h, guest, append, *, name, kernel=None, initrd=None, end_marker_count=1):
    """Boot and wait until the final stage prints `end` (Xen does not end QEMU on dom0 poweroff)."""
    image = h.build(guest, name)
    vm = h.start(initrd or image, append, name=name, kernel=kernel, base_append="", cpu=CPU, timeout=TIMEOUT,
                 idle_timeout=240)
    try:
        vm.wait_for(r"KXM\|end\|stage=report ", timeout=TIMEOUT)
    finally:
        vm.kill()
    return vm.transcript()


def assert_reported(t, expected_cmdline: str, payload: bytes, hypervisor: str):
    assert t.timed_out is None, t.summary()
    assert t.stages()[-1] == "report", t.summary()
    assert t.b64("cmdline").decode() == expected_cmdline + "\n"
    assert t.get("sha256") == hashlib.sha256(payload).hexdigest()
    assert t.get("hypervisor") == hypervisor


# --- Linux -> Xen ----------------------------------------------------------------------------------

LINUX_TO_XEN = {
    "module-mb2": 'run load kexloader -c -l /boot/xen.gz --command-line="$XEN" --module="/boot/vmlinuz $DOM0" '
                  '--module=/leaf.img',
    "elf-mb1": 'run load kexloader -c -l /boot/xen.elf --type multiboot-x86 --command-line="$XEN" '
               '--module="/boot/vmlinuz $DOM0" --module=/leaf.img',
    "vmm": 'run load kexloader -c -l --append="$XEN -- $DOM0" --vmm=/boot/xen.gz /boot/vmlinuz --initrd=/leaf.img',
}


@pytest.mark.parametrize("style", list(LINUX_TO_XEN))
def test_linux_to_xen(platform_harness, platform_xen_inputs, style):
    h = platform_harness
    payload = os.urandom(64 * 1024)
    dom0 = f"{DOM0_BASE} stage=report token={new_token()}"
    script = (f"XEN={shlex.quote(XEN_ARGS)}\nDOM0={shlex.quote(dom0)}\n" + LINUX_TO_XEN[style]
              + "\nrun exec kexloader -e\nmark exec_returned\n")
    guest = full_with_xen(h, {"first": script}, payload)
    t = run_until_end(h, guest, f"console=ttyS0 panic=-1 stage=first token={new_token()}", name=f"linux-xen-{style}")
    assert t.rc("load") == 0, t.out("load")
    # Xen drops the first word of each module's command line (the file name kexloader puts there).
    assert_reported(t, dom0, payload, "xen")
    assert f"Xen version {h.inputs.xen_version}" in t.text


# --- from a Xen dom0 -------------------------------------------------------------------------------

def boot_xen_dom0(h, script: str, payload: bytes, name: str):
    """QEMU's multiboot loader starts Xen with Debian's kernel as dom0 and our full initrd."""
    guest = full_with_xen(h, {"dom0": XEN_SETUP + script + "\nmark exec_returned\n"}, payload)
    image = h.build(guest, name)
    dom0 = f"{DOM0_BASE} stage=dom0 token={new_token()}"
    modules = f"{h.vmlinuz} {dom0},{image}"
    return run_until_end(h, guest, XEN_ARGS, name=name, kernel=h.inputs.xen_elf, initrd=modules)


XEN_TO_LINUX = r"""
run status0 kexloader -S -l
run load1 kexloader -c -d -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run status1 kexloader -S -l
run unload kexloader -c -u
run status2 kexloader -S -l
run load2 kexloader -c -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run exec kexloader -e
"""


def test_xen_to_linux(platform_harness, platform_xen_inputs):
    h = platform_harness
    payload = os.urandom(64 * 1024)
    append = f"console=ttyS0 panic=-1 stage=report token={new_token()}"
    t = boot_xen_dom0(h, f"APPEND={shlex.quote(append)}\n" + XEN_TO_LINUX, payload, "xen-linux")
    assert "control_d" in t.get("caps")
    assert t.rc("status0") == 0 and t.rc("load1") == 0, t.out("load1")
    assert "Xen dom0" in t.out("load1") or "xen" in t.out("load1").lower()
    assert t.rc("status1") == 1 and t.rc("unload") == 0 and t.rc("status2") == 0, t.out("status2")
    assert t.rc("load2") == 0, t.out("load2")
    # Exactly what was asked: no stray kexec_jump_back_entry= (kexec-tools adds one on this path).
    assert_reported(t, append, payload, "none")


XEN_TO_XEN = {
    "vmm": 'run load kexloader -c -l --append="$XEN -- $DOM0" --vmm=/boot/xen.gz /boot/vmlinuz --initrd=/leaf.img',
    "module": 'run load kexloader -c -l /boot/xen.gz --command-line="$XEN" --module="/boot/vmlinuz $DOM0" '
              '--module=/leaf.img',
}


@pytest.mark.parametrize("style", list(XEN_TO_XEN))
def test_xen_to_xen(platform_harness, platform_xen_inputs, style):
    h = platform_harness
    payload = os.urandom(64 * 1024)
    dom0 = f"{DOM0_BASE} stage=report token={new_token()}"
    script = (f"XEN={shlex.quote(XEN_ARGS)}\nDOM0={shlex.quote(dom0)}\n" + XEN_TO_XEN[style]
              + "\nrun exec kexloader -e\n")
    t = boot_xen_dom0(h, script, payload, f"xen-xen-{style}")
    assert t.rc("load") == 0, t.out("load")
    assert t.text.count(f"Xen version {h.inputs.xen_version}") >= 2, "the second Xen did not start"
    assert_reported(t, dom0, payload, "xen")


# --- kdump under Xen: the crash kernel goes into Xen's crash area ------------------------------------

XEN_KDUMP = r"""
run ckr kexloader --print-ckr-size
run status0 kexloader -S -p
run load kexloader -c -d -p /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run status1 kexloader -S -p
mark armed yes
"""


@pytest.mark.parametrize("trigger", ["sysrq", "xen-console"])
def test_xen_kdump(platform_harness, platform_xen_inputs, trigger):
    from tests.vm.test_kdump import Core, crash_append, dump_leaf  # the Linux kdump scenario's crash initrd

    h = platform_harness
    append = crash_append(new_token())
    script = f"APPEND={shlex.quote(append)}\n" + XEN_KDUMP
    if trigger == "sysrq":
        script += "echo c > /proc/sysrq-trigger\nmark crash_returned\n"
    else:
        script += "sleep 600\n"  # the host presses Ctrl-a x3 then C on Xen's console
    files = {"/boot/xen.gz": h.inputs.xen_gz, **xen_modules(h)}
    guest = h.full(stages={"dom0": XEN_SETUP + script}, files=files, leaf=dump_leaf(h))
    name = f"xen-kdump-{trigger}"
    image = h.build(guest, name)
    dom0 = f"{DOM0_BASE} stage=dom0 token={new_token()}"
    vm = h.start(f"{h.vmlinuz} {dom0},{image}", f"{XEN_ARGS} crashkernel=256M", name=name,
                 kernel=h.inputs.xen_elf, base_append="", cpu=CPU, timeout=TIMEOUT, idle_timeout=240)
    try:
        vm.wait_for_marker("armed", timeout=TIMEOUT)
        if trigger == "xen-console":
            vm.send(b"\x01\x01\x01")  # switch the serial input to Xen
            vm.wait_for(r"\(XEN\) \*\*\* Serial input to Xen", timeout=60)
            vm.send(b"C")  # debug key 'C': trigger a crash dump
        vm.wait_for(r"KXM\|end\|stage=dump ", timeout=TIMEOUT)
    finally:
        vm.kill()
    t = vm.transcript()
    assert t.rc("load") == 0, t.out("load")
    assert t.rc("status0") == 0 and t.rc("status1") == 1, (t.out("status0"), t.out("status1"))
    assert int(t.out("ckr").strip()) == 256 << 20
    assert t.stages()[-1] == "dump", t.summary()
    cmdline = t.b64("cmdline").decode()
    assert cmdline.startswith(append + " ") and "elfcorehdr=" in cmdline
    core = Core(t.b64("vmcore_head"))
    names = {n.name for n in core.notes}
    assert b"CORE" in names and b"Xen" in names, names  # Xen's per-CPU PRSTATUS and crash registers
    assert b"VMCOREINFO_XEN" in names, names
    # dom0's own VMCOREINFO (kexloader adds it; kexec-tools does not): vmcore-dmesg reads dom0's log through
    # the p2m of Xen's crash-info note
    assert b"VMCOREINFO" in names, names
    assert t.rc("vmcore_dmesg") == 0, t.out("vmcore_dmesg")
    log = t.b64("vmcore_dmesg_txt").decode(errors="replace")
    assert "] Linux version " in log, log[-2000:]
    if trigger == "sysrq":
        assert "sysrq: Trigger a crash" in log, log[-2000:]
    # with dom0's VMCOREINFO in the dump, makedumpfile finds dom0's log too (before: "Can't find some symbols
    # for log_buf"); the same records (it indents continuation lines)
    assert t.rc("dmesg") == 0, t.out("dmesg")
    from tests.vm.test_kdump import makedumpfile_lines
    assert [line.strip() for line in log.splitlines()] == makedumpfile_lines(t)
