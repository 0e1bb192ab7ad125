#!/usr/bin/env python3
"""Build the synthetic UEFI snapshots under fixtures/snapshots/ from the real OVMF one (deterministic).

    python3 tools/mk_uefi_snapshots.py            # rewrite them
    python3 tools/mk_uefi_snapshots.py --check    # exit 1 if one differs from what this script builds

synthetic-uefi-e820-fragmented-kdump.json: fixtures/snapshots/ovmf-2g-kdump.json (Debian 12's kernel under
OVMF, 2 GiB, crashkernel=256M) with the RAM below the crash region cut by 1-page reserved holes into 150
pieces, as firmware that reports many small reservations does: 314 e820 entries (the zero page holds 128),
and a crash kernel map of more than 128 as well (the holes are kept as reserved). /proc/iomem's System RAM
entries are cut the same way. The EFI facts are OVMF's.

The OVMF snapshots themselves come from a guest (QEMU, TCG, Debian 12's `OVMF.fd` as -bios, Debian 12's kernel by
direct kernel boot through its EFI stub, crashkernel=256M), through the VM harness:

    python3 tools/mk_uefi_snapshots.py --capture 2048 fixtures/snapshots/ovmf-2g-kdump.json   # about 15 s
    python3 tools/mk_uefi_snapshots.py --capture 6144 fixtures/snapshots/ovmf-6g-kdump.json   # RAM above 4 GiB

The dom0 of Xen started by OVMF (xen.efi from an ESP) is snapshotted by the VM test that boots it
(tests/vm/test_uefi.py::test_efi_xen_to_linux sends it with `mark_blob snapshot`); its kept console gives the file:

    python3 tools/mk_uefi_snapshots.py --from-log ~/.cache/kexloader/vm/logs/*-uefi-xen-linux.log \
        fixtures/snapshots/ovmf-xen-dom0-2g.json
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "snapshots"
BASE = ROOT / "ovmf-2g-kdump.json"
PAGE = 4096
PIECES = 150


def fragment(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    crash = next(e for e in doc["iomem"] if e[2] == "Crash kernel")
    memmap, holes = [], []
    big = max((m for m in doc["memmap"] if m[2] == 1), key=lambda m: m[1])  # the largest RAM range
    for start, size, kind in doc["memmap"]:
        end = start + size
        if [start, size, kind] != big:
            memmap.append([start, size, kind])
            continue
        top = min(end, crash[0])  # cut below the crash region only
        step = (top - start) // PIECES // PAGE * PAGE
        at = start
        for _ in range(PIECES - 1):
            hole = at + step - PAGE
            memmap += [[at, hole - at, 1], [hole, PAGE, 2]]
            holes.append(hole)
            at = hole + PAGE
        memmap.append([at, end - at, 1])
    doc["memmap"] = sorted(memmap)
    iomem = []
    for start, last, name, depth in doc["iomem"]:
        if depth == 0 and name == "System RAM":
            inside = [h for h in holes if start <= h <= last]
            at = start
            for h in inside:
                iomem.append([at, h - 1, name, depth])
                iomem.append([h, h + PAGE - 1, "Reserved", depth])
                at = h + PAGE
            iomem.append([at, last, name, depth])
        else:
            iomem.append([start, last, name, depth])
    doc["iomem"] = iomem
    return doc


OVMF = Path("/usr/share/ovmf/OVMF.fd")  # Debian's ovmf package
CAPTURE_STAGE = r"""
run save python3 -m kexloader.system save /tmp/snapshot.json
[ -f /tmp/snapshot.json ] && mark_blob snapshot /tmp/snapshot.json
run show python3 -m kexloader.system show /tmp/snapshot.json
"""


def capture(memory: int, out: Path, platform: str = "deb12") -> int:
    """Boot an OVMF guest with `memory` MiB and write its `python3 -m kexloader.system save` to `out`."""
    import tempfile

    sys.path.insert(0, str(ROOT.parent.parent))
    from tools.vm.env import find_inputs
    from tools.vm.harness import Harness

    if not OVMF.exists():
        print(f"{OVMF} is missing: apt-get install ovmf", file=sys.stderr)
        return 2
    h = Harness(Path(tempfile.mkdtemp(prefix="kexloader-uefi-snap-")), find_inputs(platform))
    guest = h.full(stages={"snapshot": CAPTURE_STAGE}, kernel=False)
    t = h.boot(guest, "stage=snapshot crashkernel=256M", name=f"ovmf-snapshot-{memory}m", memory=memory,
               timeout=500, extra_args=["-bios", str(OVMF)])
    if t.rc("save") != 0:
        print(f"snapshot failed in the guest:\n{t.out('save')}\n{t.summary()}", file=sys.stderr)
        return 1
    out.write_text(json.dumps(json.loads(t.blob("snapshot")), indent=1) + "\n")
    print(t.out("show"))
    print(f"wrote {out}")
    return 0


def from_log(log: Path, out: Path) -> int:
    """The snapshot a guest sent with `mark_blob snapshot FILE`, from its kept console log."""
    sys.path.insert(0, str(ROOT.parent.parent))
    from tools.vm.qemu import Transcript

    t = Transcript(text=log.read_text(errors="replace"), cmd=[], log_path=log)
    out.write_text(json.dumps(json.loads(t.blob("snapshot")), indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def main(argv) -> int:
    if argv[:1] == ["--capture"] and len(argv) == 3:
        return capture(int(argv[1]), Path(argv[2]))
    if argv[:1] == ["--from-log"] and len(argv) == 3:
        return from_log(Path(argv[1]), Path(argv[2]))
    out = ROOT / "synthetic-uefi-e820-fragmented-kdump.json"
    text = json.dumps(fragment(json.loads(BASE.read_text())), indent=1) + "\n"
    if "--check" in argv:
        same = out.exists() and out.read_text() == text
        print(f"{out.name}: {'ok' if same else 'differs'}")
        return 0 if same else 1
    out.write_text(text)
    print(f"wrote {out} ({len(json.loads(text)['memmap'])} e820 entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
