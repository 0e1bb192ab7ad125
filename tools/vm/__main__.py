"""python3 -m tools.vm {smoke,shell,build,sizes} — the VM harness by hand (run from the repo root)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import pyruntime
from .env import DEFAULT_PLATFORM, PLATFORMS, find_inputs, work_dir
from .harness import REPORT, Harness

SHELL = r"""
echo "kexloader guest: /boot/vmlinuz, /leaf.img (its stage: report); 'poweroff -f' ends QEMU"
setsid cttyhack sh -l
"""

SMOKE = r"""
run imports python3 -c "import kexloader, kexloader.formats, construct, elftools, lz4.frame, zstandard; print('ok')"
run version kexloader --version
mark_file cmdline /proc/cmdline
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tools.vm", description=__doc__)
    ap.add_argument("command", choices=["smoke", "shell", "build", "sizes"])
    ap.add_argument("--out", type=Path, default=None,
                    help="where images go (default: a temp dir, removed afterwards except for 'build')")
    ap.add_argument("--platform", choices=PLATFORMS, default=DEFAULT_PLATFORM,
                    help="whose kernel boots: deb12 (6.1, default), deb13 (6.12), deb13-bpo (7.x)")
    ap.add_argument("--memory", type=int, default=2048)
    ap.add_argument("--append", default="", help="more kernel command-line words")
    a = ap.parse_args(argv)

    inputs = find_inputs(a.platform)
    if inputs.missing():
        print("missing: " + "; ".join(inputs.missing()), file=sys.stderr)
        return 2
    if a.out is None and a.command != "build":
        with tempfile.TemporaryDirectory(prefix="kexloader-vm-") as d:
            return run(a, inputs, Path(d))
    return run(a, inputs, a.out or Path(tempfile.mkdtemp(prefix="kexloader-vm-")))


def run(a, inputs, out: Path) -> int:
    h = Harness(out, inputs)
    t0 = time.monotonic()
    leaf = h.leaf(files={"/payload.bin": b"kexloader\n"})
    stages = {"smoke": SMOKE, "shell": SHELL, "report": REPORT}
    full = h.full(stages=stages, leaf=leaf)
    img = h.build(full, "full")
    leaf_img = out / "leaf.img"
    built = time.monotonic() - t0
    if a.command in ("build", "sizes"):
        rt, pk = h.python_trees()
        rows = [
            ("python runtime (staged)", pyruntime.tree_size(rt)),
            ("wheel + dependencies (staged)", pyruntime.tree_size(pk)),
            ("leaf initrd (gzip)", leaf_img.stat().st_size),
            ("full initrd (cpio, uncompressed)", img.stat().st_size),
            ("kernel", inputs.vmlinuz.stat().st_size),
        ]
        for name, size in rows:
            print(f"{name:<36} {size / 1e6:8.1f} MB")
        for k, v in h.timings.items():
            print(f"{k:<36} {v:8.1f} s")
        print(f"{'build images (total)':<36} {built:8.1f} s")
        print(img)
        return 0
    if a.command == "smoke":
        t = h.boot(img, f"stage=smoke {a.append}", name="smoke", memory=a.memory, timeout=300)
        print(t.text.replace("\r", ""))
        print(f"# {t.summary()}; /init reached at {t.uptimes()}")
        return 0 if t.get("imports.rc") == "0" and t.returncode == 0 else 1
    # shell: interactive, QEMU's monitor multiplexed on stdio (Ctrl-a x quits QEMU).
    from .qemu import qemu_command

    cmd = qemu_command(inputs.vmlinuz, img, f"console=ttyS0 panic=-1 stage=shell {a.append}", memory=a.memory)
    cmd = [x for x in cmd if x not in ("-monitor", "none")]
    cmd[cmd.index("-serial") + 1] = "mon:stdio"
    print("$ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
