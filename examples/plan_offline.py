"""Build a kexec plan in a build pipeline, for a device described by a saved snapshot.

On the device, once:   python3 -m kexloader.system save device.json
In the pipeline:       python3 plan_offline.py device.json vmlinuz out/ --initrd initrd.img --append "console=ttyS0"
Then ship out/ to the device and load it there with load_plan.py (or kexloader -l --plan-in out/).
"""

import argparse
import dataclasses
import sys

from kexloader import api
from kexloader.errors import KexloaderError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Plan a kexec for a device described by a snapshot.")
    ap.add_argument("snapshot", help="the device's facts (python3 -m kexloader.system save FILE)")
    ap.add_argument("kernel", help="bzImage, vmlinux or multiboot image, compressed or not")
    ap.add_argument("out", help="the plan directory to write")
    ap.add_argument("--initrd", action="append", default=[], help="an initrd (several: one initramfs, in order)")
    ap.add_argument("--append", help="the new kernel's command line")
    ap.add_argument("--reuse-cmdline", action="store_true", help="start from the device's own command line")
    ap.add_argument("--crash", action="store_true", help="a kdump kernel, placed in the device's crash region")
    args = ap.parse_args(argv)
    try:
        facts = api.load_facts(args.snapshot)  # the device's memory map and firmware, never this host's
        # What a user would give `kexloader -l`/`-p`, in the same terms; build_request reads the files,
        # checks the crash region and composes the command line as the command does.
        intent = api.LoadIntent(kernel=args.kernel, initrds=tuple(args.initrd), append=args.append,
                                reuse_cmdline=args.reuse_cmdline, crash=args.crash)
        req = api.build_request(intent, facts)
        # A plan shipped to many devices must not carry one random seed for all of them (SETUP_RNG_SEED);
        # without it the plan is also reproducible: the same inputs give the same bytes.
        req = dataclasses.replace(req, rng_seed=None)
        p = api.make_plan(req, facts, window=intent.window)  # pure: detect the image kind, place every segment
        api.write_plan(p, args.out)  # plan.json plus one file per segment, each with its SHA-256
    except KexloaderError as e:
        print(f"plan_offline: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return 1
    print(api.describe_plan(p))
    print(f"wrote plan.json and {len(p.segments)} segment files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
