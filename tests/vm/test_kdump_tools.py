"""Debian's own kdump-tools drives kexloader, called as /sbin/kexec (issue 13, item 5).

One QEMU run: Debian's kernel boots with crashkernel=384M; the guest holds the platform's release of Debian's
kdump-tools (kdump-config, its init script and /etc/default/kdump-tools; tools/vm/kdump_tools.py says what
else and which stand-ins) and `/sbin/kexec` is a symlink to kexloader's console script, as a package's
alternatives would make it. Stage "first" runs `kdump-config show`, `status`, `load` (which runs
`kexec -p --command-line=... --initrd=... KERNEL`), `status`, `show`, `test`, `unload` (`kexec -p -u`), then
the service's start (`/etc/init.d/kdump-tools start`, what kdump-tools.service runs) and crashes the
machine with sysrq c. The crash kernel runs what kdump-tools-dump.service runs, the same init script's
start, which sees /proc/vmcore and calls `kdump-config savecore`: makedumpfile writes the dmesg and the
compressed dump under /var/crash/STAMP/. The crash kernel then reports them, makedumpfile reads the crashed
kernel's log back out of the saved dump, and kexloader's vmcore-dmesg reads it from /proc/vmcore.
"""

from __future__ import annotations

import hashlib
import os
import shlex

import pytest

from tools.vm import REPORT, debpackage, kdump_tools, new_token
from tools.vm.kdump_tools import KDUMP_DIR

from tests.vm.conftest import _unavailable
from tests.vm.test_kdump import CRASHKERNEL, MAKEDUMPFILE_CALLER_ID, makedumpfile_files

pytestmark = pytest.mark.vm

TIMEOUT = 600  # ~2 min on 2 TCG cores (makedumpfile compresses the dump in the crash kernel); bounds a hang
# the package's default KDUMP_CMDLINE_APPEND, plus the stage the crash kernel's /init runs (last stage= wins)
CMDLINE_APPEND = ("reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb "
                  "loglevel=3 stage=dump")

FIRST = kdump_tools.SETUP + r"""
mark kexec_version "$(kexec --version 2>&1)"
mark_b64 alternatives /var/log/update-alternatives.calls
mark kexec_link "$(readlink /usr/sbin/kexec)"
mark kexec_path "$(readlink -f /sbin/kexec)"
mark kexloader_module "$(python3 -c 'import kexloader; print(kexloader.__file__)')"
mark osrelease "$(cat /proc/sys/kernel/osrelease)"
run show0 kdump-config show
run status0 kdump-config status
run load kdump-config load
mark crash_loaded1 "$(cat /sys/kernel/kexec_crash_loaded)"
run status1 kdump-config status
run show1 kdump-config show
run dry kdump-config test
run unload kdump-config unload
mark crash_loaded2 "$(cat /sys/kernel/kexec_crash_loaded)"
run status2 kdump-config status
run start /etc/init.d/kdump-tools start
mark crash_loaded3 "$(cat /sys/kernel/kexec_crash_loaded)"
mark_file kexec_cmd /var/crash/kexec_cmd
ls -l /var/lib/kdump > /tmp/links.txt 2>&1
mark_b64 links /tmp/links.txt
sync
echo c > /proc/sysrq-trigger
mark crash_returned
"""

DUMP = kdump_tools.SETUP + r"""
mark_file cmdline /proc/cmdline
rm -f /sbin/reboot && ln -s /usr/lib/kxm/reboot /sbin/reboot
run savecore /etc/init.d/kdump-tools start
(cd /var/crash && ls -l */) > /tmp/saved.txt 2>&1
mark_b64 saved /tmp/saved.txt
for f in /var/crash/2*/dmesg.*; do mark_file saved_dmesg "$f"; done
for f in /var/crash/2*/dump.*; do
    mark dump_size "$(wc -c < "$f")"
    head -c 4096 "$f" > /tmp/dump.head
    mark_b64 dump_head /tmp/dump.head
    run rearrange sh -c "makedumpfile -R /tmp/dump.kdump < $f"
    rm -f "$f"
    run dump_dmesg makedumpfile --dump-dmesg /tmp/dump.kdump /tmp/dump-dmesg.txt
    mark_file dump_dmesg_txt /tmp/dump-dmesg.txt
    rm -f /tmp/dump.kdump
done
run vmcore_dmesg sh -c 'vmcore-dmesg /proc/vmcore > /tmp/vmcore-dmesg.txt'
mark_file vmcore_dmesg_txt /tmp/vmcore-dmesg.txt
"""


def require_kdump_tools(h) -> kdump_tools.KdumpTools:

    kt = kdump_tools.find(h.platform)
    if kt is None:
        _unavailable(f"Debian's kdump-tools for {h.platform} is not unpacked ({kdump_tools.FETCH_HINT})")
    missing = kdump_tools.missing_host_files()
    if missing:
        _unavailable(f"the kdump-tools guest needs the host's {', '.join(missing)} "
                     "(apt-get install file bsdextrautils)")
    assert kt is not None
    return kt


@pytest.fixture(scope="module")
def kdump_config(platform_harness):
    h = platform_harness
    kt = require_kdump_tools(h)
    kver = h.inputs.kernel_version
    settings = kdump_tools.settings(CMDLINE_APPEND)
    dump_tools = makedumpfile_files()
    leaf = h.leaf(stages={"dump": DUMP}, files=dump_tools)
    leaf.modes.update({path: 0o755 for path in dump_tools})
    try:
        trees = h.deb_trees()  # Python and kexloader's .deb with its dependencies, for kexec and vmcore-dmesg
    except debpackage.Unavailable as e:
        _unavailable(str(e))
    leaf.trees = list(trees)
    kdump_tools.install(leaf, kt, settings)
    crash_initrd = h.build(leaf, "kdump-tools-leaf")
    guest = h.full(stages={"first": FIRST}, kernel=False)
    guest.trees = list(trees)  # the package, not the wheel h.full() stages
    kdump_tools.install(guest, kt, settings, kernel=(kver, h.vmlinuz), crash_initrd=crash_initrd.read_bytes())
    first_line = f"console=ttyS0 panic=-1 stage=first token={new_token()}"
    t = h.boot(guest, f"{first_line} {CRASHKERNEL}", base_append="", name="kdump-tools", timeout=TIMEOUT,
               memory=1024)
    t.first_line, t.kt = first_line, kt
    return t


def test_kexec_is_kexloader_under_the_kexec_name(kdump_config):
    assert kdump_config.get("kexec_version").startswith("kexec-tools "), kdump_config.get("kexec_version")
    assert "kexloader" in kdump_config.get("kexec_version")


def test_kexec_comes_from_the_packages_own_postinst(kdump_config):
    """The .deb's postinst ran in the guest and its update-alternatives calls made the names: /sbin/kexec is
    /usr/sbin/kexec -> /etc/alternatives/kexec -> the package's /usr/sbin/kexloader."""
    t = kdump_config
    assert t.rc("postinst") == 0, t.out("postinst")
    calls = t.b64("alternatives").decode().splitlines()
    assert [c.split()[:4] for c in calls] == [
        ["--install", "/usr/sbin/kexec", "kexec", "/usr/sbin/kexloader"],
        ["--install", "/usr/sbin/vmcore-dmesg", "vmcore-dmesg", "/usr/sbin/kexloader-vmcore-dmesg"]], calls
    assert t.get("kexec_path") == "/usr/sbin/kexloader", t.get("kexec_path")
    assert t.get("kexec_link") == "/etc/alternatives/kexec", t.get("kexec_link")
    assert t.get("kexloader_module").startswith("/usr/lib/python3/dist-packages/kexloader/"), \
        t.get("kexloader_module")


def test_kdump_config_load_runs_kexec_p_and_says_loaded(kdump_config):
    t = kdump_config
    assert t.rc("load") == 0, t.out("load")
    assert "loaded kdump kernel" in t.out("load"), t.out("load")
    assert "failed" not in t.out("load").lower(), t.out("load")
    assert t.get("crash_loaded1") == "1"
    cmd = t.b64("kexec_cmd").decode()  # what kdump-config ran (it records the command it eval'ed)
    assert cmd.startswith("/sbin/kexec -p --command-line="), cmd
    assert f"--initrd={KDUMP_DIR}/initrd.img {KDUMP_DIR}/vmlinuz" in cmd, cmd
    assert "Traceback" not in t.out("load")


def test_kdump_config_status_and_show_follow_the_load(kdump_config):
    t = kdump_config
    for name in ("status0", "status1", "status2"):
        assert t.rc(name) == 0, t.out(name)
    assert "current state   : Not ready to kdump" in t.out("status0"), t.out("status0")
    assert "current state   : ready to kdump" in t.out("status1"), t.out("status1")
    assert "current state   : Not ready to kdump" in t.out("status2"), t.out("status2")
    assert t.rc("show1") == 0 and "current state:    ready to kdump" in t.out("show1"), t.out("show1")
    assert "/sbin/kexec -p --command-line=" in t.out("show1")  # the recorded kexec command
    assert "current state:    Not ready to kdump" in t.out("show0"), t.out("show0")
    assert t.rc("dry") == 0 and "/sbin/kexec -p " in t.out("dry"), t.out("dry")


def test_kdump_config_unload_runs_kexec_p_u(kdump_config):
    t = kdump_config
    assert t.rc("unload") == 0, t.out("unload")
    assert "unloaded kdump kernel" in t.out("unload"), t.out("unload")
    assert t.get("crash_loaded2") == "0"


def test_the_service_start_loads_again(kdump_config):
    t = kdump_config
    assert t.rc("start") == 0, t.out("start")
    assert "loaded kdump kernel" in t.out("start"), t.out("start")
    assert t.get("crash_loaded3") == "1"


def test_sysrq_c_boots_the_crash_kernel_with_kdump_configs_command_line(kdump_config):
    t = kdump_config
    assert t.timed_out is None, t.summary()
    assert t.stages() == ["first", "dump"], f"the crash kernel did not reach /init: {t.summary()}"
    assert not t.has("crash_returned")
    # kdump-config's line: the first kernel's without crashkernel=, then KDUMP_CMDLINE_APPEND
    # With the default -a the kernel's own loader (kexec_file_load) puts elfcorehdr= first; kexloader's
    # kexec_load path (-c) puts it last. Either way it is there once, and the rest is kdump-config's line.
    cmdline = t.b64("cmdline").decode().split()
    core = [i for i, w in enumerate(cmdline) if w.startswith("elfcorehdr=")]
    assert len(core) == 1 and core[0] in (0, len(cmdline) - 1), cmdline
    words = cmdline[:core[0]] + cmdline[core[0] + 1:]
    assert words[:len(t.first_line.split()) + len(CMDLINE_APPEND.split())] == \
        t.first_line.split() + CMDLINE_APPEND.split(), cmdline
    assert not any(w.startswith("crashkernel=") for w in cmdline), cmdline


def test_kdump_config_savecore_writes_the_dmesg_and_the_dump(kdump_config):
    t = kdump_config
    assert t.rc("savecore") == 0, t.out("savecore")
    assert "saved vmcore in /var/crash/" in t.out("savecore"), t.out("savecore")
    assert "saved dmesg content in /var/crash/" in t.out("savecore"), t.out("savecore")
    assert t.get("reboot_called") == "-f"  # the init script's next step
    saved = t.b64("saved_dmesg").decode(errors="replace")
    assert "sysrq: Trigger a crash" in saved, saved[-2000:]
    assert f"Linux version {t.get('osrelease')} " in saved.splitlines()[0], saved.splitlines()[:2]
    # MAKEDUMP_ARGS "-F -c -d 31": the flattened format (makedumpfile's own header), zlib pages inside
    assert t.b64("dump_head").startswith(b"makedumpfile\0"), t.b64("dump_head")[:32]
    assert int(t.get("dump_size")) > 1 << 20


def test_the_saved_dump_holds_the_crashed_kernels_log(kdump_config):
    t = kdump_config
    assert t.rc("rearrange") == 0, t.out("rearrange")
    assert t.rc("dump_dmesg") == 0, t.out("dump_dmesg")
    from_dump = t.b64("dump_dmesg_txt").decode(errors="replace")
    assert "sysrq: Trigger a crash" in from_dump
    assert from_dump == t.b64("saved_dmesg").decode(errors="replace")  # the same log as savecore's copy


def test_vmcore_dmesg_reads_the_same_log_from_proc_vmcore(kdump_config):
    t = kdump_config
    assert t.rc("vmcore_dmesg") == 0 and t.out("vmcore_dmesg") == "", t.out("vmcore_dmesg")
    lines = [line.strip() for line in t.b64("vmcore_dmesg_txt").decode(errors="replace").splitlines()]
    assert any("sysrq: Trigger a crash" in line for line in lines), lines[-20:]
    # makedumpfile's copy, as test_kdump compares them: stripped, without the caller ids newer releases print
    saved = [MAKEDUMPFILE_CALLER_ID.sub(r"\1", line).strip()
             for line in t.b64("saved_dmesg").decode(errors="replace").splitlines()]
    assert lines == saved


# --- item 5's other shapes, through the package's kexec name -----------------------------------------
# Debian's kexec-tools init script (/etc/init.d/kexec-load: `kexec -l KERNEL --initrd=INITRD --append="..."`,
# then `kexec -e` on the way down) and systemd's (`systemctl kexec` runs `kexec --load KERNEL --append CMDLINE
# --initrd INITRD`, separate words, then reboots with LINUX_REBOOT_CMD_KEXEC itself, the call `kexec -e` makes).
SHAPES = {
    "debian-kexec-load": 'run load kexec -l /boot/vmlinuz --initrd=/leaf.img --append="$APPEND"\nrun exec kexec -e\n',
    "systemd": 'run load kexec --load /boot/vmlinuz --append "$APPEND" --initrd /leaf.img\nrun exec kexec -e\n',
}


@pytest.mark.parametrize("shape", SHAPES)
def test_distro_load_and_exec_shapes_through_the_packages_kexec(platform_harness, shape):
    """The .deb configured by its postinst, as in the kdump-tools guest; the second kernel must come up with
    the command line asked for (a fresh token) and the leaf initrd (its payload's SHA-256)."""
    h = platform_harness
    try:
        trees = h.deb_trees()
    except debpackage.Unavailable as e:
        _unavailable(str(e))
    payload = os.urandom(64 * 1024)
    leaf = h.leaf(stages={"report": REPORT}, files={"/payload.bin": payload})
    append = f"console=ttyS0 panic=-1 stage=report token={new_token()}"
    script = debpackage.CONFIGURE + f"APPEND={shlex.quote(append)}\n" + SHAPES[shape] + "mark exec_returned\n"
    guest = h.full(stages={"first": script}, leaf=leaf)
    guest.trees = list(trees)
    t = h.boot(guest, f"console=ttyS0 panic=-1 stage=first token={new_token()}", base_append="",
               name=f"kexec-name-{shape}", timeout=420)
    assert t.rc("postinst") == 0, t.out("postinst")
    assert t.rc("load") == 0 and "Traceback" not in t.out("load"), t.out("load")
    assert t.stages() == ["first", "report"], f"the second kernel did not reach /init: {t.summary()}"
    assert t.b64("cmdline").decode() == append + "\n"
    assert t.get("sha256:/payload.bin") == hashlib.sha256(payload).hexdigest()
    assert not t.has("exec_returned")
