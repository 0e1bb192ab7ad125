"""Every script in examples/ runs, as a user would run it, on fixtures: plan offline from a snapshot, verify the
saved plan, load it (dry run), inspect an image, read a vmcore's log.

Each runs in a subprocess behind the same guard as tests/conftest.py: a real kexec, reboot or hypercall
ends it with an error instead of reaching this host."""

import json
import re
import subprocess
import sys
from pathlib import Path

from test_vmcore import core_file, filled_ring, lockless_machine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIX = ROOT / "fixtures"
SNAP_2G = FIX / "snapshots/qemu-2g.json"
SNAP_KDUMP = FIX / "snapshots/qemu-debian12-kdump-384m.json"
KERNEL = FIX / "bzimage/tiny.bzImage"

GUARD = """\
import runpy, sys
def forbidden(*args, **kwargs):
    sys.exit(f"an example reached a real kernel or hypervisor call {args[:1]}")
from kexloader.backends import linux
linux.raw_syscall = forbidden
from kexloader import hypercall
hypercall.raw_hypercall = forbidden
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

TESTED = {"plan_offline.py", "verify_plan.py", "load_plan.py", "inspect_image.py", "vmcore_log.py"}


def run(script, *args, cwd):
    r = subprocess.run([sys.executable, "-c", GUARD, str(EXAMPLES / script), *map(str, args)], cwd=cwd,
                       capture_output=True)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def test_every_example_is_tested_and_described():
    assert {p.name for p in EXAMPLES.glob("*.py")} == TESTED
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in TESTED)


def plan_for_device(tmp_path, out="plan", *extra, snapshot=SNAP_2G):
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"initrd" * 1000)
    rc, stdout, err = run("plan_offline.py", snapshot, KERNEL, out, "--initrd", initrd,
                          "--append", "console=ttyS0 root=/dev/vda", *extra, cwd=tmp_path)
    assert (rc, err) == (0, "")
    return stdout


def test_plan_verify_load_in_the_offline_workflow(tmp_path):
    out = plan_for_device(tmp_path)
    assert "boot-params" in out and "wrote plan.json and 5 segment files to plan" in out
    doc = json.loads((tmp_path / "plan/plan.json").read_text())
    assert sorted(s["role"] for s in doc["segments"]) == ["boot-params", "cmdline", "initrd", "kernel", "purgatory"]
    assert f"facts: snapshot {SNAP_2G}" in doc["notes"]

    rc, out, err = run("verify_plan.py", "plan", SNAP_2G, cwd=tmp_path)
    assert (rc, err) == (0, "")
    assert out.startswith(f"plan: a kernel plan of 5 segments, entry {doc['entry']:#x}, fits snapshot ")
    assert len(out.splitlines()) == 6 and "initrd.img" in out

    rc, out, err = run("load_plan.py", "plan", cwd=tmp_path)
    assert (rc, err) == (0, "")
    assert out.startswith("dry run: a kernel of 5 segments") and "loaded: True" in out


def test_offline_plans_are_reproducible(tmp_path):
    plan_for_device(tmp_path, "a")
    plan_for_device(tmp_path, "b")
    assert (tmp_path / "a/plan.json").read_bytes() == (tmp_path / "b/plan.json").read_bytes()


def test_the_device_command_line_is_reused_from_its_snapshot(tmp_path):
    """--reuse-cmdline composes from the snapshot's line (the device's), never this host's /proc/cmdline."""
    plan_for_device(tmp_path, "plan", "--reuse-cmdline", "--crash", snapshot=SNAP_KDUMP)
    doc = json.loads((tmp_path / "plan/plan.json").read_text())
    (cmdline_seg,) = [s for s in doc["segments"] if s["role"] == "cmdline"]
    line = (tmp_path / "plan" / cmdline_seg["file"]).read_bytes().rstrip(b"\0").decode()
    device = json.loads(SNAP_KDUMP.read_text())["cmdline"]
    kept = " ".join(w for w in device.split() if not w.startswith(("BOOT_IMAGE=", "crashkernel=")))
    assert line.startswith(f"{kept} console=ttyS0 root=/dev/vda"), line
    assert "crashkernel=" in device and "crashkernel=" not in line


def test_a_crash_plan_fits_only_a_machine_with_a_crash_region(tmp_path):
    plan_for_device(tmp_path, "crash", "--crash", snapshot=SNAP_KDUMP)
    rc, out, err = run("verify_plan.py", "crash", SNAP_KDUMP, cwd=tmp_path)
    assert (rc, err) == (0, "") and out.startswith("crash: a crash kernel plan of 6 segments") and "elfcorehdr" in out
    rc, out, err = run("verify_plan.py", "crash", SNAP_2G, cwd=tmp_path)
    assert (rc, out) == (1, "") and err.startswith("verify_plan: no crash kernel region is reserved")
    rc, out, err = run("load_plan.py", "crash", cwd=tmp_path)
    assert (rc, err) == (0, "") and out.startswith("dry run: a crash kernel of 6 segments")


def test_a_changed_segment_is_refused(tmp_path):
    plan_for_device(tmp_path)
    initrd = next((tmp_path / "plan").glob("*-initrd-*.bin"))
    initrd.write_bytes(initrd.read_bytes() + b"x")
    for script, args in (("verify_plan.py", [SNAP_2G]), ("load_plan.py", [])):
        rc, out, err = run(script, "plan", *args, cwd=tmp_path)
        assert (rc, out) == (1, ""), script
        assert err.startswith(f"{script[:-3]}: plan: not a usable saved plan: ") and "sha256" in err


def test_a_plan_outside_the_machine_is_refused(tmp_path):
    plan_for_device(tmp_path, snapshot=FIX / "snapshots/qemu-6g.json")
    doc = json.loads((tmp_path / "plan/plan.json").read_text())
    assert any(s["mem"] >= 2 << 30 for s in doc["segments"])  # the kernel goes high on a 6 GiB machine
    rc, out, err = run("verify_plan.py", "plan", SNAP_2G, cwd=tmp_path)
    assert (rc, out) == (1, "") and "is not inside usable memory" in err
    rc, out, err = run("load_plan.py", "plan", "--facts", SNAP_2G, cwd=tmp_path)  # the check --really-load makes
    assert (rc, out) == (1, "") and err.startswith("load_plan: ") and "is not inside usable memory" in err
    rc, out, err = run("load_plan.py", "plan", "--facts", FIX / "snapshots/qemu-6g.json", cwd=tmp_path)
    assert (rc, err) == (0, "") and out.startswith("dry run: a kernel of")


def test_inspect_image(tmp_path):
    rc, out, err = run("inspect_image.py", FIX / "probes/bzprobe.bzImage", cwd=tmp_path)
    assert (rc, err) == (0, "")
    assert out.splitlines() == ["kind:        bzImage64 (loadable: yes)", "version:     kexloader bzImage probe 1",
                                "compression: none", "sections:    bzimage"]
    rc, out, err = run("inspect_image.py", FIX / "multiboot/tiny-mb12.elf", cwd=tmp_path)
    assert (rc, err) == (0, "")
    assert "kind:        multiboot2-x86 (loadable: yes)" in out and "sections:    elf, multiboot1, multiboot2" in out
    (tmp_path / "junk").write_bytes(b"\0" * 4096)
    rc, out, err = run("inspect_image.py", tmp_path / "junk", cwd=tmp_path)
    assert rc == 1 and "kind:        unknown" in out and "error:       no image kind claims this file" in out


def test_vmcore_log(tmp_path):
    ring = filled_ring()
    m = lockless_machine(ring)
    (tmp_path / "vmcore").write_bytes(core_file(bytes(m.ram), m.info))
    rc, out, err = run("vmcore_log.py", "vmcore", cwd=tmp_path)
    assert (rc, err) == (0, "")
    assert out.encode() == ring.expected()
    rc, out, err = run("vmcore_log.py", "vmcore", "--tail", "2", cwd=tmp_path)
    assert (rc, err) == (0, "")
    assert out.splitlines()[-1].endswith("Kernel panic - not syncing: sysrq triggered crash")
    assert len(out.splitlines()) == 2
    rc, out, err = run("vmcore_log.py", "missing", cwd=tmp_path)
    assert rc != 0 and out == "" and err.startswith("vmcore_log: cannot open missing")


def test_the_readme_snippet_runs(tmp_path):
    """README's "Use as a library" code, on fixtures: the offline workflow writes a plan the CLI can read."""
    code = re.search(r"## Use as a library.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "initrd.img").write_bytes(b"initrd" * 100)
    code = code.replace('"target.json"', repr(str(SNAP_2G))).replace('"vmlinuz"', repr(str(KERNEL)))
    subprocess.run([sys.executable, "-c", GUARD.replace("runpy.run_path(sys.argv[0], run_name=\"__main__\")",
                                                        code)], cwd=tmp_path, check=True)
    doc = json.loads((tmp_path / "out/plan.json").read_text())
    roles = {s["role"] for s in doc["segments"]}  # setup-data: the RNG seed read_request adds
    assert roles == {"boot-params", "cmdline", "initrd", "kernel", "purgatory", "setup-data"}
