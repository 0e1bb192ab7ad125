"""Load a saved plan on the target, the last step of the offline-plan workflow.

    python3 load_plan.py out/                  # dry run: the plan goes to a recording backend, nothing is loaded
    python3 load_plan.py out/ --facts dev.json # dry run, the plan also checked against the device's snapshot
    python3 load_plan.py out/ --really-load    # on the device, as root: checked against this machine, then
                                               # kexec_load (or Xen's hypercall in a dom0)

After a real load, `kexloader -e` (or `systemctl kexec`) starts the new kernel; a crash plan waits for a panic.
"""

import argparse
import sys

from kexloader import api, system
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import KexloaderError


def real_backend():
    """The backend the device needs. Imported here so a dry run never even loads the syscall code."""
    if system.xen_role() == "dom0":  # a dom0 kernel's kexec_load is the wrong door: Xen loads the image
        from kexloader.backends.xen import XenKexecBackend
        return XenKexecBackend()
    from kexloader.backends.linux import LinuxKexecBackend
    return LinuxKexecBackend()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Load a saved kexec plan (a dry run unless --really-load).")
    ap.add_argument("plan_dir")
    ap.add_argument("--really-load", action="store_true", help="call kexec_load on this machine (root)")
    ap.add_argument("--facts", help="a snapshot of the device to check the plan against (default with "
                                    "--really-load: this machine)")
    args = ap.parse_args(argv)
    try:
        # the machine the plan must fit: a plan made for another device must not reach this one's kexec_load
        facts = api.load_facts(args.facts) if args.facts or args.really_load else None
        p = api.read_plan(args.plan_dir, facts)  # refuses a segment that does not match its SHA-256
        backend = real_backend() if args.really_load else RecordingBackend()
        backend.load(p)  # replaces a loaded image of the same kind (normal or crash)
    except KexloaderError as e:
        print(f"load_plan: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return 1
    kind = "crash kernel" if p.crash else "kernel"
    if args.really_load:
        print(f"loaded a {kind} of {len(p.segments)} segments through {backend.name}")
    else:
        print(f"dry run: a {kind} of {len(p.segments)} segments, entry {p.entry:#x}, recorded by "
              f"{backend.name}; loaded: {backend.loaded(p.crash)}; nothing reached the kernel "
              "(--really-load on the device)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
