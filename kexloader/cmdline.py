"""The new kernel's command line: --reuse-cmdline, --append, and the size the kernel accepts."""

from __future__ import annotations

from .errors import UsageError


def reused(current: str, *, crash: bool) -> str:
    """The running kernel's command line minus what must not be passed on.

    BOOT_IMAGE= names the old image (kexec-tools drops it too); crashkernel= would make a
    crash kernel try to reserve memory inside its own small region."""
    drop = ("BOOT_IMAGE=",) + (("crashkernel=",) if crash else ())
    return " ".join(w for w in current.split() if not w.startswith(drop))


def compose(*parts: str | None) -> str:
    """Join the non-empty parts with single spaces, as kexec-tools' concat_cmdline does."""
    return " ".join(p.strip() for p in parts if p and p.strip())


def encode(cmdline: str, *, capacity: int, what: str = "kernel") -> bytes:
    """NUL-terminated bytes, refused before anything is placed if longer than `capacity` (without the NUL)."""
    try:
        raw = cmdline.encode("ascii")
    except UnicodeEncodeError:
        raw = cmdline.encode("utf-8")
    if b"\0" in raw:
        raise UsageError("the command line contains a NUL byte")
    if len(raw) > capacity:
        raise UsageError(f"the command line is {len(raw)} bytes; this {what} accepts at most {capacity}",
                         hint="shorten --append/--command-line")
    return raw + b"\0"
