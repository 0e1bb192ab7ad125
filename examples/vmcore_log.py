"""The kernel log of a crashed kernel, read from its vmcore with kexloader.vmcore (as vmcore-dmesg).

    python3 vmcore_log.py /proc/vmcore              # in the kdump kernel
    python3 vmcore_log.py saved/vmcore --tail 20    # the last lines, where the panic is
"""

import argparse
import sys

from kexloader import vmcore


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Print a crashed kernel's log from its vmcore.")
    ap.add_argument("core", help="/proc/vmcore or a saved ELF vmcore")
    ap.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    args = ap.parse_args(argv)
    try:
        core, close = vmcore.open_core(args.core)  # mapped read-only; close() unmaps it
        try:
            log = b"".join(vmcore.dmesg(core))  # bytes: a record may hold any byte (escaped as \xNN)
        finally:
            close()
    except vmcore.VmcoreError as e:
        print(f"vmcore_log: {e}", file=sys.stderr)
        return e.exit_code  # vmcore-dmesg's exit codes
    lines = log.splitlines(keepends=True)
    sys.stdout.buffer.write(b"".join(lines[-args.tail:] if args.tail else lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
