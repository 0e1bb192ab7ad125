"""The `kexloader` (and `kexec`) command: `-S` answered from sysfs before the loader is imported; every other
command line goes to kexloader.cli.main.

`kexec -S` is what scripts poll (kdump services at start-up, health checks), so it should cost Python's start-up
and one sysfs read, not the imports of the loader (kexloader.cli brings the planning modules, ~25 ms). Only the
plain shapes are answered here, and only where Linux's own kexec is the door (not in a Xen PV domain, where Xen's
hypercall answers) and the kernel's file is there; anything else, or any doubt, takes the full path, which gives
the same answer or the error line.
"""

from __future__ import annotations

import os
import sys

# argv of a bare status query -> whether it asks about the crash image (kexec-tools: unless -l, the crash image)
STATUS_QUERIES = {
    **dict.fromkeys([("-S",), ("--status",), ("-S", "-p"), ("-p", "-S"), ("--status", "--load-panic"),
                     ("--load-panic", "--status"), ("-S", "--load-panic"), ("-p", "--status")], True),
    **dict.fromkeys([("-S", "-l"), ("-l", "-S"), ("--status", "--load"), ("--load", "--status"), ("-S", "--load"),
                     ("-l", "--status")], False),
}


def quick_status(argv: list[str], root: str = "/") -> int | None:
    """The exit code of a bare `-S` (1: an image is loaded, 0: none, as kexec-tools), or None: use kexloader.cli."""
    crash = STATUS_QUERIES.get(tuple(argv))
    if crash is None or os.path.exists(os.path.join(root, "sys/hypervisor/type")):
        return None  # another command line, or a hypervisor to ask about (kexloader.system.xen_role decides)
    from .kexec_sysfs import loaded_flag
    try:
        flag = loaded_flag(root, crash)
    except OSError:
        return None
    return None if flag is None else int(flag)


def entry_point() -> None:
    code = quick_status(sys.argv[1:])
    if code is None:
        from .cli import main
        code = main()
    sys.exit(code)
