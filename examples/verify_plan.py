"""Check a saved plan before shipping or loading it, and print its segments.

    python3 verify_plan.py out/ device.json    # against the device's snapshot (in the pipeline)
    python3 verify_plan.py out/                # against the running system (on the device)

Exit status 0 when the plan is whole and fits the machine, 1 with one line saying why not.
"""

import argparse
import sys

from kexloader import crash, memory, plan, system
from kexloader.errors import KexloaderError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Verify a saved kexec plan.")
    ap.add_argument("plan_dir")
    ap.add_argument("snapshot", nargs="?", help="the target's facts; default: this system's")
    args = ap.parse_args(argv)
    try:
        p = plan.read_dir(args.plan_dir)  # every segment file must match its SHA-256 in plan.json
        facts = system.load_snapshot(args.snapshot) if args.snapshot else system.read_facts()
        # Where the segments may lie: RAM, or for a kdump kernel the crash region (what -p plans into).
        usable = crash.usable(facts, memory.EVERYWHERE) if p.crash else facts.ram()
        memory.validate(p, usable)  # page alignment, no overlaps, inside usable memory, entry in a segment
    except KexloaderError as e:
        print(f"verify_plan: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return 1
    kind = "crash kernel" if p.crash else "kernel"
    print(f"{args.plan_dir}: a {kind} plan of {len(p.segments)} segments, entry {p.entry:#x}, fits {facts.source}")
    for seg in sorted(p.segments, key=lambda s: s.mem):
        print(f"  {seg.role:<12} {seg.mem:#014x}-{seg.mem + seg.memsz:#014x} {seg.bufsz:>#10x} bytes  {seg.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
