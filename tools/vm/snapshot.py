"""Snapshot a QEMU guest's SystemFacts: boot Debian's kernel, run `python3 -m kexloader.system save`.

    python3 -m tools.vm.snapshot fixtures/snapshots/qemu-2g.json
    python3 -m tools.vm.snapshot --memory 6144 fixtures/snapshots/qemu-6g.json
    python3 -m tools.vm.snapshot --xen --append crashkernel=256M fixtures/snapshots/xen-dom0-2g.json

The guest uses the QEMU settings of the VM tests (TCG, -cpu max, -smp 2, SeaBIOS). The JSON
comes back over the serial console as `mark_blob` markers, checked with its SHA-256.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .env import DEFAULT_PLATFORM, PLATFORMS, find_inputs
from .harness import Harness

STAGE = r"""
run save python3 -m kexloader.system save /tmp/snapshot.json
[ -f /tmp/snapshot.json ] && mark_blob snapshot /tmp/snapshot.json
run show python3 -m kexloader.system show /tmp/snapshot.json
"""


# In a Xen dom0 the facts come from hypercalls (machine map, crash area, CPU notes).
XEN_STAGE = r"""
insmod /lib/xen/xen-privcmd.ko
insmod /lib/xen/xenfs.ko
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen
""" + STAGE
XEN_ARGS = "console=com1 com1=115200,8n1 dom0_mem=512M no-real-mode"


def take(memory: int, out_dir: Path, append: str = "", xen: bool = False,
         platform: str = DEFAULT_PLATFORM) -> tuple[dict, str]:
    h = Harness(out_dir, find_inputs(platform))
    if not xen:
        guest = h.full(stages={"snapshot": STAGE}, kernel=False)
        t = h.boot(guest, f"stage=snapshot {append}".strip(), name=f"snapshot-{memory}m", memory=memory,
                   timeout=300)
    else:
        guest = h.full(stages={"snapshot": XEN_STAGE}, kernel=False,
                       files=h.modules({"/lib/xen/xen-privcmd.ko": "kernel/drivers/xen/xen-privcmd.ko",
                                        "/lib/xen/xenfs.ko": "kernel/drivers/xen/xenfs/xenfs.ko"}))
        image = h.build(guest, f"snapshot-xen-{memory}m")
        vm = h.start(f"{h.vmlinuz} console=hvc0 panic=-1 stage=snapshot,{image}", f"{XEN_ARGS} {append}".strip(),
                     kernel=h.inputs.xen_elf, base_append="", name=f"snapshot-xen-{memory}m", memory=memory,
                     cpu="Haswell-noTSX", timeout=600)
        try:
            vm.wait_for(r"KXM\|end\|", timeout=600)  # dom0's poweroff halts Xen without ending QEMU
        finally:
            vm.kill()
        t = vm.transcript()
    if t.rc("save") != 0:
        raise SystemExit(f"snapshot failed in the guest:\n{t.out('save')}\n{t.summary()}")
    return json.loads(t.blob("snapshot")), t.out("show")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tools.vm.snapshot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="where to write the snapshot JSON")
    ap.add_argument("--memory", type=int, default=2048, help="guest RAM in MiB (default 2048)")
    ap.add_argument("--append", default="", help="more kernel (or Xen) command-line words (e.g. crashkernel=256M)")
    ap.add_argument("--xen", action="store_true", help="snapshot a Xen dom0 (QEMU starts Xen with Debian's kernel)")
    ap.add_argument("--platform", choices=PLATFORMS, default=DEFAULT_PLATFORM,
                    help="whose kernel and Xen: deb12 (default), deb13, deb13-bpo")
    a = ap.parse_args(argv)
    inputs = find_inputs(a.platform)
    if inputs.missing():
        print("missing: " + "; ".join(inputs.missing()), file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kexloader-snap-") as d:
        doc, shown = take(a.memory, Path(d), a.append, xen=a.xen, platform=a.platform)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(shown)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
