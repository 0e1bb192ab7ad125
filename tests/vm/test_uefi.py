"""UEFI machines (issue 11 items 4-7): the seed's paths with OVMF as the firmware (`firmware="ovmf"`).

Linux boots through its EFI stub (QEMU's direct kernel boot under OVMF); Xen boots as `xen.efi` from an ESP
made per run (`esp_image`). Each guest reports on the serial console what it has of EFI (`EFI_REPORT`):
/sys/firmware/efi, /sys/firmware/efi/runtime, the names in efivarfs, and the framebuffer (`-vga std`: OVMF's
GOP; the kernel's efifb registers /dev/fb0 from boot_params.screen_info).

    Linux -> Linux        the next kernel keeps EFI (same variables, runtime set) and the GOP framebuffer
    kdump Linux -> Linux  the crash kernel keeps EFI; makedumpfile and vmcore-dmesg read its vmcore
    Xen (EFI) -> Linux    Xen started by OVMF from an ESP; dom0 kexecs into Linux through the hypercall
    Xen (EFI) -> Xen      the next Xen boots through its legacy entry (item 6, docs/uefi.md)
    kdump Xen (EFI)       the crash kernel's vmcore is read (marker vm_matrix: not in a plain run)
    Linux -> Xen          (item 6) Xen and dom0 boot: kexloader writes the BIOS data area, EBDA and ACPI copies

A plain `pytest` runs these on deb12 (but the Xen kdump); deb13 and deb13-bpo are behind `-m vm_matrix`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tools.vm import new_token
from tools.vm.qemu import OVMF_FD, ovmf_args

from tests.vm.test_xen import XEN_SETUP

pytestmark = pytest.mark.vm

TIMEOUT = 600  # OVMF under TCG adds seconds per boot; this only bounds a hang
# The kernels' warnings (e.g. "clocksource: Long readout interval" on a loaded host) can land inside a long
# marker line on the shared serial console and break it: keep their consoles to errors (dmesg has everything)
QUIET = "loglevel=3"
VGA = ["-vga", "std"]  # a GOP for OVMF, so screen_info describes an EFI framebuffer

# What a guest has of EFI and of a screen; marker names start with $1 (first, second, crash, dom0, ...).
EFI_REPORT = r"""
efi_report() {
    p=$1
    if [ -f /lib/efivarfs.ko ] && ! grep -q efivarfs /proc/filesystems; then insmod /lib/efivarfs.ko; fi
    [ -d /sys/firmware/efi/efivars ] && mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
    mark $p.efi "$([ -d /sys/firmware/efi ] && echo yes || echo no)"
    mark $p.efi_runtime "$(cat /sys/firmware/efi/runtime 2>/dev/null || echo none)"
    ls /sys/firmware/efi/efivars 2>/dev/null | sort > /tmp/efivars.txt
    mark_b64 $p.efivars /tmp/efivars.txt
    mark $p.fb0 "$(cat /sys/class/graphics/fb0/name 2>/dev/null || echo none)"
    mark $p.fb0_mode "$(cat /sys/class/graphics/fb0/virtual_size 2>/dev/null) bpp=$(cat /sys/class/graphics/fb0/bits_per_pixel 2>/dev/null) stride=$(cat /sys/class/graphics/fb0/stride 2>/dev/null)"
    dmesg | grep -i -e efifb -e simpledrm -e 'frame buffer' -e 'fb0' > /tmp/fb.txt
    mark_b64 $p.fb_dmesg /tmp/fb.txt
    head -c 64 /sys/kernel/boot_params/data > /tmp/screen_info.bin 2>/dev/null
    mark_b64 $p.screen_info /tmp/screen_info.bin
}
"""


def require_ovmf() -> None:
    from tests.vm.conftest import _unavailable

    if ovmf_args() is None:
        _unavailable(f"OVMF is missing ({OVMF_FD}: apt-get install ovmf; sudo bash tools/install-deps.sh)")


def efivarfs(h) -> dict:
    """efivarfs.ko of the platform's kernel (inflated), or nothing when it is built in."""
    return h.modules({"/lib/efivarfs.ko": "kernel/fs/efivarfs/efivarfs.ko"}) if h.inputs.module(
        "kernel/fs/efivarfs/efivarfs.ko") else {}


def efivars(t, who: str) -> list[str]:
    return t.b64(f"{who}.efivars").decode().split()


def assert_keeps_efi(t, first: str, second: str) -> None:
    """`second` has EFI runtime services as `first` had: /sys/firmware/efi, runtime set, the same variables."""
    assert t.get(f"{first}.efi") == "yes", t.summary()
    assert len(efivars(t, first)) > 0, "the first kernel lists no EFI variables"
    assert t.get(f"{second}.efi") == "yes", f"{second}: no /sys/firmware/efi ({t.summary()})"
    assert int(t.get(f"{second}.efi_runtime"), 16) != 0
    assert efivars(t, second) == efivars(t, first)


# --- Linux -> Linux under OVMF, with a GOP framebuffer -------------------------------------------------------

LINUX_FIRST = EFI_REPORT + r"""
efi_report first
run plan kexloader -c --dry-run -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run load kexloader -c -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run exec kexloader -e
mark exec_returned
"""

LINUX_SECOND = EFI_REPORT + r"""
efi_report second
mark_file cmdline /proc/cmdline
mark sha256 "$(sha256 /payload.bin)"
"""


@pytest.fixture(scope="module")
def uefi_kexec(platform_harness):
    require_ovmf()
    h = platform_harness
    payload = os.urandom(64 * 1024)
    append = f"console=ttyS0 panic=-1 stage=second token={new_token()}"
    mods = efivarfs(h)
    leaf = h.leaf(stages={"second": LINUX_SECOND}, files={"/payload.bin": payload, **mods})
    guest = h.full(stages={"first": f"APPEND={shlex.quote(append)}\n{LINUX_FIRST}"}, leaf=leaf, files=mods)
    t = h.boot(guest, f"console=ttyS0 panic=-1 {QUIET} stage=first token={new_token()}", base_append="",
               name="uefi-kexec", firmware="ovmf", extra_args=VGA, timeout=TIMEOUT, idle_timeout=240)
    t.append, t.payload_sha256 = append, hashlib.sha256(payload).hexdigest()
    return t


def test_uefi_kexec_boots_the_next_kernel(uefi_kexec):
    t = uefi_kexec
    assert t.rc("load") == 0, t.out("load")
    assert t.timed_out is None and t.stages() == ["first", "second"], t.summary()
    assert t.b64("cmdline").decode() == t.append + "\n"
    assert t.get("sha256") == t.payload_sha256
    assert "the next kernel keeps EFI runtime services" in t.out("plan"), t.out("plan")


def test_uefi_kexec_next_kernel_keeps_efi(uefi_kexec):
    assert_keeps_efi(uefi_kexec, "first", "second")


def test_uefi_kexec_next_kernel_has_the_gop_framebuffer(uefi_kexec):
    """Item 4: the next kernel gets the screen_info of OVMF's GOP (VIDEO_TYPE_EFI) and registers efifb."""
    t = uefi_kexec
    first_si, second_si = t.b64("first.screen_info"), t.b64("second.screen_info")
    assert first_si[0x0F] == 0x70, first_si.hex()  # orig_video_isVGA: VIDEO_TYPE_EFI, from the EFI stub
    assert second_si[:0x40] == first_si[:0x40], (first_si.hex(), second_si.hex())
    assert t.get("first.fb0") == "EFI VGA", t.b64("first.fb_dmesg").decode()
    assert t.get("second.fb0") == "EFI VGA", t.b64("second.fb_dmesg").decode()
    assert t.get("second.fb0_mode") == t.get("first.fb0_mode")
    assert "efifb: probing for efifb" in t.b64("second.fb_dmesg").decode()
    assert "screen: EFI framebuffer 1280x800x32 at 0x80000000" in t.out("plan"), t.out("plan")


# --- kdump under OVMF ----------------------------------------------------------------------------------------

KDUMP_FIRST = EFI_REPORT + r"""
efi_report first
mark online "$(cat /sys/devices/system/cpu/online)"
mark osrelease "$(cat /proc/sys/kernel/osrelease)"
run plan kexloader -c --dry-run -p /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run load kexloader -c -p /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
mark crash_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
sync
echo c > /proc/sysrq-trigger
mark crash_returned
"""


def test_uefi_kdump_crash_kernel_keeps_efi_and_dumps(platform_harness):
    from tests.vm.test_kdump import DUMP, assert_dump_is_good, crash_append, dump_leaf

    require_ovmf()
    h = platform_harness
    mods = efivarfs(h)
    append = crash_append(new_token())
    leaf = dump_leaf(h)
    leaf.stages["dump"] = EFI_REPORT + "efi_report crash\n" + DUMP
    leaf.files.update(mods)
    guest = h.full(stages={"first": f"APPEND={shlex.quote(append)}\n{KDUMP_FIRST}"}, leaf=leaf, files=mods)
    t = h.boot(guest, f"console=ttyS0 panic=-1 {QUIET} stage=first token={new_token()} crashkernel=384M", base_append="",
               name="uefi-kdump", firmware="ovmf", extra_args=VGA, timeout=TIMEOUT, idle_timeout=240)
    assert t.rc("load") == 0, t.out("load")
    assert t.get("crash_loaded") == "1"
    assert "the next kernel keeps EFI runtime services" in t.out("plan"), t.out("plan")
    assert_dump_is_good(t, append)  # makedumpfile --dump-dmesg and vmcore-dmesg read the vmcore
    assert_keeps_efi(t, "first", "crash")
    assert t.get("crash.fb0") == "EFI VGA", t.b64("crash.fb_dmesg").decode()


# --- Xen booted by UEFI: xen.efi from an ESP ---------------------------------------------------------------------

XEN_EFI_ARGS = "console=com1 com1=115200,8n1 dom0_mem=512M"
XEN_CPU = "Haswell-noTSX"  # a PV dom0 dies early under -cpu max (VM-RECIPE.md)


def esp_image(h, out: Path, *, dom0_args: str, initrd: Path, xen_args: str = XEN_EFI_ARGS) -> Path:
    """A FAT image whose EFI/BOOT/BOOTX64.EFI is the platform's xen.efi, with BOOTX64.cfg beside it (Xen reads
    `<its own name>.cfg` from its directory) naming the dom0 kernel and initrd, which sit there too."""
    found = sorted(h.inputs.xen_gz.parent.glob("xen-*.efi")) if h.inputs.xen_gz else []  # Debian: beside xen.gz
    xen_efi = found[-1] if found else None
    if not xen_efi:
        from tests.vm.conftest import _unavailable

        _unavailable(f"no xen-*.efi beside {h.inputs.xen_gz} ({h.platform}; sudo bash tools/install-deps.sh)")
    for tool in ("mkfs.fat", "mmd", "mcopy"):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            from tests.vm.conftest import _unavailable

            _unavailable(f"{tool} is missing (apt-get install dosfstools mtools)")
    cfg = (f"[global]\ndefault=xen\n\n[xen]\noptions={xen_args}\nkernel=vmlinuz {dom0_args}\n"
           f"ramdisk=initrd.img\n")
    size_kib = ((Path(xen_efi).stat().st_size + h.vmlinuz.stat().st_size + initrd.stat().st_size) >> 10) + 16384
    out.unlink(missing_ok=True)
    cfg_path = out.with_suffix(".cfg")
    cfg_path.write_text(cfg)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    mkfs = next(str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / "mkfs.fat").exists())
    steps = [[mkfs, "-C", "-F", "32", "-n", "ESP", str(out), str(size_kib)],
             ["mmd", "-i", str(out), "::/EFI", "::/EFI/BOOT"],
             ["mcopy", "-i", str(out), str(xen_efi), "::/EFI/BOOT/BOOTX64.EFI"],
             ["mcopy", "-i", str(out), str(cfg_path), "::/EFI/BOOT/BOOTX64.cfg"],
             ["mcopy", "-i", str(out), str(h.vmlinuz), "::/EFI/BOOT/vmlinuz"],
             ["mcopy", "-i", str(out), str(initrd), "::/EFI/BOOT/initrd.img"]]
    for cmd in steps:
        subprocess.run(cmd, check=True, capture_output=True, env=env)
    return out


def boot_efi_xen(h, guest, name: str, *, end: str, dom0_extra: str = "", xen_args: str = XEN_EFI_ARGS,
                 arm=None):
    """OVMF starts xen.efi from a fresh ESP; dom0 (Debian's kernel) runs stage dom0 of `guest`. Waits for the
    console regex `end` (a dom0 that powers off halts Xen without ending QEMU), then stops QEMU."""
    image = h.build(guest, name)
    dom0 = f"console=hvc0 panic=-1 {QUIET} stage=dom0 token={new_token()} {dom0_extra}".strip()
    esp = esp_image(h, h.out_dir / f"{name}-esp.img", dom0_args=dom0, initrd=image, xen_args=xen_args)
    image.unlink(missing_ok=True)
    vm = h.start(None, "", name=name, kernel=False, base_append="", firmware="ovmf", cpu=XEN_CPU,
                 extra_args=["-drive", f"file={esp},format=raw,if=ide"], timeout=TIMEOUT, idle_timeout=300)
    try:
        if arm:
            arm(vm)
        vm.wait_for(end, timeout=TIMEOUT)
    except AssertionError:
        pass  # the transcript says how it ended; the caller's checks fail with it
    finally:
        vm.kill()
        esp.unlink(missing_ok=True)
    return vm.transcript()


XEN_DOM0_SETUP = EFI_REPORT + XEN_SETUP + "efi_report dom0\n"  # the BIOS dom0's set-up, then its EFI report

XEN_NEXT_REPORT = EFI_REPORT + r"""
efi_report next
mark_file cmdline /proc/cmdline
mark hypervisor "$(cat /sys/hypervisor/type 2>/dev/null || echo none)"
mark sha256 "$(sha256 /payload.bin)"
"""

EFI_XEN_TO_LINUX = r"""
run save python3 -m kexloader.system save /tmp/snapshot.json
[ -f /tmp/snapshot.json ] && mark_blob snapshot /tmp/snapshot.json
run plan kexloader -c --dry-run -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run load kexloader -c -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run exec kexloader -e
mark exec_returned
"""


def xen_guest(h, stage: str, leaf):
    from tests.vm.test_xen import xen_modules

    files = {"/boot/xen.gz": h.inputs.xen_gz, **xen_modules(h), **efivarfs(h)}
    return h.full(stages={"dom0": XEN_DOM0_SETUP + stage}, files=files, leaf=leaf)


def test_efi_xen_to_linux(platform_harness, platform_xen_inputs):
    """Item 5: Xen started by OVMF (xen.efi from an ESP); dom0 kexecs into Linux through Xen's kexec hypercall."""
    require_ovmf()
    h = platform_harness
    payload = os.urandom(64 * 1024)
    append = f"console=ttyS0 panic=-1 stage=next token={new_token()}"
    leaf = h.leaf(stages={"next": XEN_NEXT_REPORT}, files={"/payload.bin": payload, **efivarfs(h)})
    guest = xen_guest(h, f"APPEND={shlex.quote(append)}\n{EFI_XEN_TO_LINUX}", leaf)
    t = boot_efi_xen(h, guest, "uefi-xen-linux", end=r"KXM\|end\|stage=next ")
    assert f"Xen version {h.inputs.xen_version}" in t.text, t.summary()
    assert t.values("hypervisor")[0] == "xen" and "control_d" in t.get("caps"), t.summary()
    # dom0 of an EFI-booted Xen has /sys/firmware/efi and EFI variables (through Xen's runtime-services
    # hypercalls), but no runtime map and no /sys/firmware/efi/runtime: Xen owns the runtime services
    assert t.get("dom0.efi") == "yes" and len(efivars(t, "dom0")) > 0, t.summary()
    assert t.rc("load") == 0, t.out("load")
    assert t.stages()[-1] == "next", t.summary()
    assert t.b64("cmdline").decode() == append + "\n"
    assert t.get("sha256") == hashlib.sha256(payload).hexdigest()
    assert t.values("hypervisor")[-1] == "none"
    # The Linux that Xen -> Linux starts keeps EFI runtime services (docs/uefi.md): dom0 learns the firmware's
    # system table and runtime regions from Xen (XEN_FW_EFI_INFO) and /dev/mem, and the plan hands them on
    # with the runtime regions 1:1, as Xen runs the firmware.
    plan = t.out("plan")
    assert "the next kernel keeps EFI runtime services" in plan, plan
    facts = json.loads(t.blob("snapshot"))["efi"]
    assert facts["runtime_map"] and all(r[1] == r[2] for r in facts["runtime_map"]), facts
    assert_keeps_efi(t, "dom0", "next")
    assert int(t.get("next.efi_runtime"), 16) == facts["runtime"]  # physical: the firmware runs 1:1


# --- item 6: kexec into Xen on a UEFI machine ---------------------------------------------------------------------

LINUX_TO_XEN = {  # kexloader's arguments, as tests/vm/test_xen.py's Linux -> Xen styles
    "module-mb2": '-l /boot/xen.gz --command-line="$XEN" --module="/boot/vmlinuz $DOM0" --module=/leaf.img',
    "elf-mb1": '-l /boot/xen.elf --type multiboot-x86 --command-line="$XEN" --module="/boot/vmlinuz $DOM0" '
               '--module=/leaf.img',
}


def linux_to_xen_stage(args: str) -> str:
    return (f"run plan kexloader -c --dry-run {args}\nrun load kexloader -c {args}\nrun exec kexloader -e\n"
            "mark exec_returned\n")


XEN_REPORT = r"""
mark_file cmdline /proc/cmdline
mark hypervisor "$(cat /sys/hypervisor/type 2>/dev/null || echo none)"
mark sha256 "$(sha256 /payload.bin)"
dmesg | grep -i -e 'ACPI: RSDP' -e 'ACPI: XSDT' > /tmp/acpi.txt
mark_b64 acpi /tmp/acpi.txt
"""


@pytest.mark.parametrize("style", ["module-mb2", pytest.param("elf-mb1", marks=pytest.mark.vm_matrix)])
def test_uefi_linux_to_xen(platform_harness, platform_xen_inputs, style):
    """Item 6: from a Linux that OVMF booted, kexloader -l xen.gz + -e boots Xen and its dom0: kexloader writes
    the BIOS data area (EBDA, RSDP copy) Xen's legacy entry reads, and adds no-real-mode (docs/uefi.md)."""
    from tests.vm.test_xen import xen_modules

    require_ovmf()
    h = platform_harness
    payload = os.urandom(64 * 1024)
    xen_args = "console=com1 com1=115200,8n1 dom0_mem=512M"
    dom0 = f"console=hvc0 panic=-1 {QUIET} stage=report token={new_token()}"
    leaf = h.leaf(stages={"report": XEN_REPORT}, files={"/payload.bin": payload})
    files = {"/boot/xen.gz": h.inputs.xen_gz, **xen_modules(h)}
    if style == "elf-mb1":
        files["/boot/xen.elf"] = h.inputs.xen_elf
    stage = linux_to_xen_stage(LINUX_TO_XEN[style])
    script = f"XEN={shlex.quote(xen_args)}\nDOM0={shlex.quote(dom0)}\n{stage}"
    guest = h.full(stages={"first": script}, files=files, leaf=leaf)
    vm = h.start(guest, f"console=ttyS0 panic=-1 {QUIET} stage=first token={new_token()}", base_append="",
                 name=f"uefi-linux-xen-{style}", firmware="ovmf", cpu=XEN_CPU, timeout=TIMEOUT, idle_timeout=240)
    try:
        vm.wait_for(r"KXM\|end\|stage=report ", timeout=TIMEOUT)
    except AssertionError:
        pass
    finally:
        vm.kill()
    t = vm.transcript()
    assert t.rc("load") == 0, t.out("load")
    plan = t.out("plan")
    assert "BIOS data area" in plan and "RSDP" in plan and "no-real-mode" in plan, plan
    assert f"Xen version {h.inputs.xen_version}" in t.text, f"Xen did not start: {t.summary()}"
    assert t.stages()[-1] == "report", t.summary()
    assert t.b64("cmdline").decode() == dom0 + "\n"
    assert t.get("sha256") == hashlib.sha256(payload).hexdigest()
    assert t.get("hypervisor") == "xen"
    # Xen and its dom0 found ACPI through the RSDP kexloader put in the EBDA
    assert "(XEN) ACPI: RSDP 0009FC10" in t.text.replace("\r", "")
    assert "ACPI: RSDP 0x000000000009FC10" in t.b64("acpi").decode(), t.b64("acpi").decode()


EFI_XEN_TO_XEN = r"""
run plan kexloader -c --dry-run -l /boot/xen.gz --command-line="$XEN" --module="/boot/vmlinuz $DOM0" --module=/leaf.img
run load kexloader -c -l /boot/xen.gz --command-line="$XEN" --module="/boot/vmlinuz $DOM0" --module=/leaf.img
run exec kexloader -e
mark exec_returned
"""


def test_efi_xen_to_xen(platform_harness, platform_xen_inputs):
    """Items 5 and 6: from the dom0 of an EFI-booted Xen, Xen -> Xen boots the next Xen (through its legacy entry,
    with kexloader's BIOS data area and ACPI copies) and its dom0."""
    require_ovmf()
    h = platform_harness
    payload = os.urandom(64 * 1024)
    dom0 = f"console=hvc0 panic=-1 {QUIET} stage=report token={new_token()}"
    leaf = h.leaf(stages={"report": XEN_REPORT}, files={"/payload.bin": payload})
    script = f"XEN={shlex.quote(XEN_EFI_ARGS)}\nDOM0={shlex.quote(dom0)}\n{EFI_XEN_TO_XEN}"
    t = boot_efi_xen(h, xen_guest(h, script, leaf), "uefi-xen-xen", end=r"KXM\|end\|stage=report ")
    assert t.rc("load") == 0, t.out("load")
    plan = t.out("plan")
    assert "BIOS data area" in plan and "an RSDP in the EBDA" in plan and "no-real-mode" in plan, plan
    assert t.text.count(f"Xen version {h.inputs.xen_version}") >= 2, f"the second Xen did not start: {t.summary()}"
    assert "(XEN) ACPI: RSDP 0009FC10" in t.text.replace("\r", "")
    assert t.stages()[-1] == "report", t.summary()
    assert t.b64("cmdline").decode() == dom0 + "\n"
    assert t.get("sha256") == hashlib.sha256(payload).hexdigest()
    assert t.values("hypervisor")[-1] == "xen"
    assert "ACPI: RSDP 0x000000000009FC10" in t.b64("acpi").decode(), t.b64("acpi").decode()


EFI_XEN_KDUMP = r"""
run load kexloader -c -p /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"
run status kexloader -S -p
mark armed yes
echo c > /proc/sysrq-trigger
mark crash_returned
"""


@pytest.mark.vm_matrix  # not in a plain run (CI): Xen kdump is proven on BIOS there; `pytest -m vm_matrix` runs it
def test_efi_xen_kdump(platform_harness, platform_xen_inputs):
    """Item 5: kdump from the dom0 of an EFI-booted Xen (crashkernel= on Xen's line): sysrq c in dom0 makes Xen
    start the crash kernel, whose vmcore makedumpfile and vmcore-dmesg read."""
    from tests.vm.test_kdump import DUMP, crash_append, dump_leaf

    require_ovmf()
    h = platform_harness
    append = crash_append(new_token())
    leaf = dump_leaf(h)
    leaf.stages["dump"] = EFI_REPORT + "efi_report crash\n" + DUMP
    leaf.files.update(efivarfs(h))
    guest = xen_guest(h, f"APPEND={shlex.quote(append)}\n{EFI_XEN_KDUMP}", leaf)
    t = boot_efi_xen(h, guest, "uefi-xen-kdump", end=r"KXM\|end\|stage=dump ",
                     xen_args=f"{XEN_EFI_ARGS} crashkernel=256M")
    assert t.rc("load") == 0, t.out("load")
    assert t.rc("status") == 1, t.out("status")
    assert t.stages()[-1] == "dump", t.summary()
    cmdline = t.b64("cmdline").decode()
    assert cmdline.startswith(append + " ") and "elfcorehdr=" in cmdline
    assert t.rc("dmesg") == 0, t.out("dmesg")
    assert t.rc("vmcore_dmesg") == 0, t.out("vmcore_dmesg")
    log = t.b64("vmcore_dmesg_txt").decode(errors="replace")
    assert "sysrq: Trigger a crash" in log, log[-2000:]
    # the crash kernel keeps EFI runtime services as the Linux of Xen -> Linux does (kexloader/xenefi.py)
    assert_keeps_efi(t, "dom0", "crash")
