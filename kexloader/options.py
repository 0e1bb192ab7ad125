"""The command line as data: one row per option, from which `--help`, the getopt tables, the man page
(`python -m tools.manpages`) and the bash completion are all derived.

What an option *does* stays in `kexloader.cli`; a row only names it, says whether it takes an argument
and describes it in one line. Rows are in the order `--help` lists them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# The kexec-tools release whose command line and defaults kexloader matches; `kexec --version` reports it.
# 2.0.27 and later default to -a (kexec_file_load first), as kexloader does.
KEXEC_TOOLS_VERSION = "2.0.32"


class Group(enum.StrEnum):
    """Where an option comes from, as kexec-tools groups its own help (plus ours)."""

    GENERAL = "general"      # kexec-tools' options for every architecture
    X86_64 = "x86-64"        # kexec-tools' x86-64 architecture options
    LOADER = "loader"        # kexec-tools' image loaders' options (bzImage64, elf-x86_64, multiboot-x86)
    EXTRAS = "extras"        # kexloader's own


HEADINGS = {Group.GENERAL: "", Group.X86_64: "x86-64 options", Group.LOADER: "Loader options",
            Group.EXTRAS: "kexloader extras"}


class Arg(enum.StrEnum):
    """What an option's argument is, for completion: a file, a directory, or anything else."""

    FILE = "file"
    DIR = "dir"
    TEXT = "text"


@dataclass(frozen=True)
class Option:
    long: str                    # without the dashes
    help: str                    # one sentence or two, in kexloader's words; "" for an alias (see `alias_of`)
    group: Group = Group.GENERAL
    short: str | None = None     # the one-letter form, if any
    metavar: str | None = None   # the argument's name in help; None: the option takes no argument
    arg: Arg = Arg.TEXT
    alias_of: str | None = None  # listed together with that option and described by it

    @property
    def takes_arg(self) -> bool:
        return self.metavar is not None

    def spelling(self) -> str:
        """`--append=STR`, as help and the man page show it."""
        return f"--{self.long}" + (f"={self.metavar}" if self.metavar else "")


_G, _X, _L, _E = Group.GENERAL, Group.X86_64, Group.LOADER, Group.EXTRAS
_F, _D = Arg.FILE, Arg.DIR
NOT_YET = "Refused: not supported yet."
JUMP = "Refused with one line: kexec jump is not implemented (Debian's kernels are built without CONFIG_KEXEC_JUMP)."

OPTIONS: tuple[Option, ...] = (
    Option("help", "Print this help.", short="h"),
    Option("version", "Print the version.", short="v"),
    Option("load", "Load the new kernel into the current kernel.", short="l"),
    Option("load-panic", "Load the new kernel for use on panic (kdump), into the crash kernel region.", short="p"),
    Option("exec", "Execute a currently loaded kernel.", short="e"),
    Option("force", "Load and execute at once (no shutdown).", short="f"),
    Option("unload", "Unload the loaded kernel (with -p: the crash kernel).", short="u"),
    Option("status", "Exit 1 if a kernel is loaded (-l: normal, default or -p: crash), else 0.", short="S"),
    Option("type", "Force the image type (bzImage64, ...).", short="t", metavar="TYPE"),
    Option("no-checks", "Skip the purgatory's SHA-256 verification.", short="i"),
    Option("no-ifdown", "Accepted (kexloader does not take interfaces down).", short="x"),
    Option("no-sync", "Accepted (kexloader always syncs before -e/-f).", short="y"),
    Option("kexec-syscall", "Use kexec_load with kexloader's own layout and purgatory (kexec-tools' default before "
           "2.0.27, Debian 12's).", short="c"),
    Option("kexec-file-syscall", "Use kexec_file_load: the kernel lays out and checks a bzImage itself (the only "
           "way under lockdown / Secure Boot).", short="s"),
    Option("kexec-syscall-auto", "kexec_file_load (the default, as kexec-tools 2.0.27+), falling back to kexec_load "
           "(-c) when the kernel answers ENOSYS, EINVAL, ENOEXEC or EOPNOTSUPP, or when the image is not a bzImage "
           "(ELF, multiboot, --module, --vmm). Under Xen: the hypercall.", short="a"),
    Option("debug", "Print the segment table and error details; ask the kernel for its debug messages "
           "(KEXEC_FILE_DEBUG with -s, Linux 6.7+) and print what it logged during the call.", short="d"),
    Option("hotplug", "With -p: let the kernel update the crash kernel's core header when CPUs or memory come and "
           "go (Linux 6.5+, CONFIG_CRASH_HOTPLUG), instead of reloading it."),
    Option("no-cma", "With -s: do not let the kernel place the image in CMA (KEXEC_FILE_NO_CMA, 6.17+)."),
    Option("mem-min", "Place segments only at or above ADDR.", metavar="ADDR"),
    Option("mem-max", "Place segments only at or below ADDR.", metavar="ADDR"),
    Option("print-ckr-size", "Print the size of the crash kernel region and exit."),
    Option("reuseinitrd", "Refused: not implemented on x86 (as in kexec-tools)."),
    Option("load-preserve-context", JUMP),
    Option("load-jump-back-helper", JUMP),
    Option("entry", JUMP, metavar="ADDR"),
    Option("load-live-update", NOT_YET),
    Option("exec-live-update", NOT_YET),
    Option("force-dtb", "Accepted; x86-64 boots without a device tree."),
    # kexec-tools' x86-64 options
    Option("console-serial", "Purgatory console output on a serial port.", _X),
    Option("serial", "The purgatory's serial port.", _X, metavar="ttySn|0xPORT"),
    Option("serial-baud", "The purgatory's serial speed.", _X, metavar="N"),
    Option("console-vga", "Purgatory console output on the VGA text screen.", _X),
    Option("reset-vga", "The purgatory puts the VGA back in text mode 3 (80x25) before the hand-off, and the "
           "next kernel's screen_info says so (kexec_load path; kexec_file_load ignores it, as kexec-tools).", _X),
    Option("elf32-core-headers", "Accepted; the kdump core header is always ELF64.", _X),
    Option("elf64-core-headers", "", _X, alias_of="elf32-core-headers"),
    Option("noefi", "Hand the new kernel no EFI state (efi_info, SETUP_EFI): it runs without EFI runtime services "
           "and finds ACPI through acpi_rsdp_addr.", _X),
    Option("pass-memmap-cmdline", "With -p, on the kexec_load path: also hand the crash kernel its memory map as "
           "memmap=exactmap memmap=SIZEK@STARTK ... on its command line (kexec_file_load ignores it, as kexec-tools).",
           _X),
    Option("reuse-video-type", "Accepted: kexloader always hands the new kernel the running kernel's boot video "
           "type (screen_info), which kexec-tools does only with this option.", _X),
    # kexec-tools' loader options
    Option("command-line", "The new kernel's command line (the last one wins).", _L, metavar="STR"),
    Option("append", "", _L, metavar="STR", alias_of="command-line"),
    Option("reuse-cmdline", "Start from the running kernel's command line (without BOOT_IMAGE=).", _L),
    Option("initrd", "The initial ramdisk; given more than once, all of them in order (one initramfs, each part "
           "padded to 4 bytes).", _L, metavar="FILE", arg=_F),
    Option("ramdisk", "", _L, metavar="FILE", arg=_F, alias_of="initrd"),
    Option("module", "A multiboot module and its command line (repeatable; Xen: dom0 kernel, initrd).", _L,
           metavar='"FILE ARGS"', arg=_F),
    Option("args-linux", "ELF kernels: pass a Linux zero page (the default for a Linux vmlinux).", _L),
    Option("args-elf", "ELF kernels: pass ELF boot notes (the default for an ELF that is not a Linux vmlinux).", _L),
    Option("args-none", "ELF kernels: jump to the entry point with no arguments.", _L),
    Option("real-mode", NOT_YET, _L),
    Option("entry-32bit", NOT_YET, _L),
    Option("dtb", "A flattened device tree for the new kernel, as SETUP_DTB setup_data (kexec_load; "
           "kexec_file_load loads without it and warns, as kexec-tools).", _L, metavar="FILE", arg=_F),
    # kexloader's own
    Option("dry-run", "Build kexloader's kexec_load plan (-c), print it, load nothing; with -s print the "
           "kexec_file_load call instead.", _E),
    Option("plan-out", "Also write plan.json and one file per segment to DIR.", _E, metavar="DIR", arg=_D),
    Option("plan-in", "Load a plan saved with --plan-out instead of reading images.", _E, metavar="DIR", arg=_D),
    Option("facts", "Plan for the machine described by a saved snapshot (with --dry-run).", _E, metavar="SNAPSHOT",
           arg=_F),
    Option("inspect", "Say what FILE is (kind, compression, version, boot protocol, headers).", _E, metavar="FILE",
           arg=_F),
    Option("json", "With --inspect: print JSON.", _E),
    Option("vmm", 'The seed\'s syntax: kexloader -l --vmm=XEN --append="XEN_ARGS -- DOM0_ARGS" DOM0', _E,
           metavar="XEN", arg=_F),
    Option("uki-profile", "Boot profile N of a multi-profile UKI (default 0, as systemd-stub).", _E, metavar="N"),
    Option("boot-entry", "Load a Boot Loader Specification entry (Type #1 .conf or Type #2 UKI).", _E,
           metavar="ID|default"),
    Option("boot-dir", "Where the entries are (default: /boot, /efi, /boot/efi).", _E, metavar="DIR", arg=_D),
    Option("esp", "", _E, metavar="DIR", arg=_D, alias_of="boot-dir"),
    Option("list-boot-entries", "Print the entries, in systemd-boot's order, the default marked.", _E),
)

BY_LONG = {o.long: o for o in OPTIONS}


def getopt_tables() -> tuple[str, dict[str, bool], dict[str, str]]:
    """(short option string, long name -> takes an argument, short letter -> long name), for `getopt`."""
    short = "".join(o.short + (":" if o.takes_arg else "") for o in OPTIONS if o.short)
    return (short, {o.long: o.takes_arg for o in OPTIONS},
            {o.short: o.long for o in OPTIONS if o.short})


def entries(group: Group) -> list[tuple[list[Option], str]]:
    """The group's help entries: each option with its aliases, and the text that describes them all."""
    out: list[tuple[list[Option], str]] = []
    for o in OPTIONS:
        if o.group == group and o.alias_of is None:
            out.append(([o, *(a for a in OPTIONS if a.alias_of == o.long)], o.help))
    return out


def left_column(opts: list[Option]) -> str:
    """` -t, --type=TYPE` or `     --command-line=STR, --append=STR`."""
    first = opts[0]
    lead = f" -{first.short}, " if first.short else "     "
    return lead + ", ".join(o.spelling() for o in opts)


DESCRIPTION = "Load a new kernel or hypervisor and start it (a drop-in for kexec-tools' kexec)."
_COLUMN = 26  # where descriptions start
_WIDTH = 112


def usage(prog: str) -> str:
    """The `--help` text, naming the program as it was called (kexloader or kexec)."""
    import textwrap  # (and re, which it needs): for --help only, not at every start-up
    lines = [f"Usage: {prog} [OPTION]... [kernel]", DESCRIPTION, ""]
    for group in Group:
        if HEADINGS[group]:
            lines.append(f" {HEADINGS[group]}:")
        for opts, text in entries(group):
            left = left_column(opts)
            indent = " " * _COLUMN
            if len(left) < _COLUMN:
                first = left.ljust(_COLUMN)
            else:
                lines.append(left)
                first = indent
            lines.extend(textwrap.wrap(text, _WIDTH, initial_indent=first, subsequent_indent=indent,
                                       break_on_hyphens=False))
    return "\n".join(lines) + "\n"
