"""The new kernel's command line: one value type, built once, checked when words go in, and the only encoder.

Bytes: the text as UTF-8 (ASCII unchanged; undecodable argv bytes pass through as they came, as kexec-tools
passes argv), never a NUL inside (the loaded system reads a NUL-terminated string: the Linux boot protocol,
Documentation/arch/x86/boot.rst "The kernel command line"; the Multiboot specification, "Boot information
format", cmdline). Capacity (without the NUL) is the target's: a bzImage's hdr.cmdline_size, the synthetic
header's for an ELF vmlinux; None where the format sets no limit (Multiboot, ELF boot notes) or the kernel
checks it itself (kexec_file_load).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class Cmdline:
    """A command line: the user's part and, kept apart for the error message, the words a loader added
    (kdump's elfcorehdr=, ...). Immutable: append and add return a new value."""

    text: str = ""
    added: tuple[str, ...] = ()  # appended by the loader, after `text`
    added_by: str = ""  # who added them ("kdump"), for the message when the line is too long

    def __post_init__(self) -> None:
        for part in (self.text, *self.added):
            if "\0" in part:
                raise UsageError("the command line contains a NUL byte")

    @classmethod
    def reused(cls, current: str, *, crash: bool) -> Cmdline:
        """The running kernel's command line minus what must not be passed on.

        BOOT_IMAGE= names the old image (kexec-tools drops it too); crashkernel= would make a
        crash kernel try to reserve memory inside its own small region."""
        return cls(reused(current, crash=crash))

    def append(self, *parts: str | None) -> Cmdline:
        """The user's parts joined after this one with single spaces (kexec-tools' concat_cmdline)."""
        return Cmdline(compose(self.text, *parts), self.added, self.added_by)

    def add(self, words: tuple[str, ...], by: str) -> Cmdline:
        """The loader's own words (`by`: "kdump") after everything the user gave."""
        return Cmdline(self.text, self.added + tuple(words), by)

    def __str__(self) -> str:
        return compose(self.text, *self.added)

    def check(self, capacity: int | None, *, what: str = "kernel") -> None:
        """Refuse a line too long for the target before anything is placed (what encode would say)."""
        self.encode(capacity, what=what)

    def encode(self, capacity: int | None, *, what: str = "kernel") -> bytes:
        """NUL-terminated bytes; refused (before anything is placed) when longer than `capacity` bytes
        without the NUL. capacity None: no limit."""
        raw = str(self).encode("utf-8", "surrogateescape")
        if capacity is not None and len(raw) > capacity:
            if self.added:
                raise UsageError(f"the command line is {len(raw)} bytes with {self.added_by}'s "
                                 f"\"{' '.join(self.added)}\"; {what} accepts at most {capacity}",
                                 hint="shorten --append/--command-line")
            raise UsageError(f"the command line is {len(raw)} bytes; this {what} accepts at most {capacity}",
                             hint="shorten --append/--command-line")
        return raw + b"\0"


def reused(current: str, *, crash: bool) -> str:
    """The running kernel's command line minus BOOT_IMAGE= (and for a crash kernel crashkernel=)."""
    drop = ("BOOT_IMAGE=",) + (("crashkernel=",) if crash else ())
    return " ".join(w for w in current.split() if not w.startswith(drop))


def compose(*parts: str | None) -> str:
    """Join the non-empty parts with single spaces, as kexec-tools' concat_cmdline does."""
    return " ".join(p.strip() for p in parts if p and p.strip())


def encode(cmdline: str, *, capacity: int | None, what: str = "kernel") -> bytes:
    """Cmdline(cmdline).encode(capacity, what=what)."""
    return Cmdline(cmdline).encode(capacity, what=what)
