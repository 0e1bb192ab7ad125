"""`kexloader`, with kexec-tools' command line, messages and exit codes.

Options are parsed like kexec-tools' getopt_long: options may follow the image path, long options
take `--opt=X` or `--opt X` (the next word even if it starts with '-'), unique prefixes are accepted.
This module is the only place an exception becomes an exit code (kexec-tools' codes, listed with the cases
measured in docs/exit-codes.md): one line on stderr, whatever the exception. Called as `kexec` (argv[0]'s
basename), help, messages and --version use that name.
"""

from __future__ import annotations

import dataclasses
import enum
import getopt
import os
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import __version__, api, options
from .backends.base import Backend
from .backends.linux import FILE_FALLBACK_ERRNOS, LinuxKexecBackend
from .backends.recording import RecordingBackend
from .backends.unload import unload
from .errors import EXIT_DIE, EXIT_FAILURE, EXIT_FALLBACK, BackendError, KexloaderError, NotSupportedYet, UsageError


class _Log:
    """The "kexloader" logger, with logging imported by the first message (rare: -d's notes) instead of at start-up."""

    def debug(self, msg: str, *args: object) -> None:
        import logging
        logging.getLogger("kexloader").debug(msg, *args)


log = _Log()

# getopt's tables, from the option table; "-?" is kexec-tools' hidden usage error (the usage on stderr, exit 1)
_SHORT, LONG, _SHORT_TO_LONG = options.getopt_tables()
SHORT = _SHORT + "?"
SHORT_TO_LONG = {**_SHORT_TO_LONG, "?": "?"}
# Options refused with one line (parse_args; _refusal gives some kexec-tools' exit code once -c/-s/-a are known)
KEXEC_JUMP = ("kexec jump is not implemented by kexloader; Debian's kernels are built without CONFIG_KEXEC_JUMP, "
              "which it needs")
NOT_YET = {name: f"--{name} is not supported yet" for name in (
    "load-live-update", "exec-live-update", "real-mode", "entry-32bit")} | {
    name: f"--{name} is not supported ({KEXEC_JUMP})" for name in (
        "load-preserve-context", "load-jump-back-helper", "entry")} | {
    "reuseinitrd": "--reuseinitrd is not implemented on x86 (as in kexec-tools)",
}


def __getattr__(name: str) -> str:
    """USAGE, the help text, made when asked for (not on every start-up)."""
    if name == "USAGE":
        return options.usage("kexloader")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# What kexec-tools' image loaders parse: given with -u, -S or -e (no image to load) it is a usage error (1).
# --noefi, --pass-memmap-cmdline and --reuse-video-type sit with the x86-64 options in its help but are parsed
# by its bzImage loader (measured: `kexec -u --noefi` exits 1, `kexec -u --console-vga` 0).
LOADER_ONLY = frozenset({o.long for o in options.OPTIONS if o.group == options.Group.LOADER}
                        | {"noefi", "pass-memmap-cmdline", "reuse-video-type"})


def program_name(argv0: str) -> str:
    """"kexec" when called by that name (a symlink, or the Debian package's alternative), else "kexloader"."""
    return "kexec" if os.path.basename(argv0) == "kexec" else "kexloader"


def version_line(prog: str) -> str:
    """What --version prints. As kexec, kexec-tools' shape ("kexec-tools 2.0.32") comes first, because scripts and
    scanners read the first two words (cve-bin-tool matches "kexec-tools" and a dotted version), so they see the
    release whose command line kexloader follows; kexloader's own name and version follow in parentheses."""
    if prog == "kexec":
        return f"kexec-tools {options.KEXEC_TOOLS_VERSION} (kexloader {__version__})"
    return f"kexloader {__version__}"


class Action(enum.StrEnum):
    """-l, -e, -u, -S, -f; Options.action None: load, then shut down (kexec-tools without any of them)."""

    LOAD = "load"
    EXEC = "exec"
    UNLOAD = "unload"
    STATUS = "status"
    FORCE = "force"


class Syscall(enum.StrEnum):
    """-c kexec_load (with kexloader's layout and purgatory), -s kexec_file_load, -a (the default, as kexec-tools
    2.0.27+) the file one, then -c where the kernel cannot."""

    CLASSIC = "classic"
    FILE = "file"
    AUTO = "auto"


class Show(enum.StrEnum):
    """Print something instead of acting: -h, -? (the usage on stderr, exit 1), -v."""

    HELP = "help"
    USAGE_ERROR = "usage-error"
    VERSION = "version"


@dataclass
class Options:
    action: Action | None = None
    kernel: str | None = None
    crash: bool = False
    append: str | None = None
    reuse_cmdline: bool = False
    initrd: str | None = None
    initrds: list[str] = field(default_factory=list)  # every --initrd, in order
    uki_profile: int | None = None  # --uki-profile=N
    boot_entry: str | None = None  # --boot-entry=ID|default
    boot_dir: str | None = None  # --boot-dir
    esp: str | None = None  # --esp
    list_boot_entries: bool = False
    modules: list[str] = field(default_factory=list)  # --module="FILE args", in order
    vmm: str | None = None  # the seed's --vmm=XEN_IMAGE: the positional image becomes dom0's kernel
    image_type: str | None = None
    debug: bool = False
    status_kind: Action | None = None  # -S -l: the normal image (else the crash image, as kexec-tools)
    mem_min: int = 0
    mem_max: int = api.ADDRESS_LIMIT - 1
    dry_run: bool = False
    syscall: Syscall = Syscall.AUTO
    plan_out: str | None = None
    plan_in: str | None = None
    facts: str | None = None
    purgatory: api.PurgatoryOptions = api.PurgatoryOptions()
    print_ckr_size: bool = False
    noefi: bool = False  # --noefi
    dtb: str | None = None  # --dtb=FILE
    pass_memmap: bool = False  # --pass-memmap-cmdline
    hotplug: bool = False  # --hotplug
    no_cma: bool = False  # --no-cma
    show: Show | None = None
    args_style: api.ArgsStyle | None = None  # --args-linux/--args-elf/--args-none (the last one wins)
    inspect: str | None = None  # --inspect FILE
    json: bool = False
    prog: str = "kexloader"  # the name it was called by: kexec or kexloader, for help and messages


def parse_args(argv: Sequence[str], prog: str = "kexloader") -> Options:
    longopts = [name + ("=" if arg else "") for name, arg in LONG.items()]
    try:
        pairs, rest = getopt.gnu_getopt(list(argv), SHORT, longopts)
    except getopt.GetoptError as e:
        raise UsageError(f"{e.msg}; see {prog} --help") from None
    o = Options(prog=prog)
    names = []
    for flag, value in pairs:
        name = flag.lstrip("-")
        name = SHORT_TO_LONG.get(name, name) if not flag.startswith("--") else name
        _apply(o, name, value)
        names.append(name)
    refused = [n for n in names if n in NOT_YET]
    if refused:
        raise _refusal(refused[0], o.syscall)
    misplaced = [n for n in names if n in LOADER_ONLY]
    if o.action in (Action.UNLOAD, Action.STATUS, Action.EXEC) and misplaced:
        raise UsageError(f"--{misplaced[0]} is for loading an image; {o.action.value} takes no image options",
                         hint=f"see {prog} --help")
    if len(rest) > 1:  # as kexec-tools: the first word is the image, the others are ignored
        log.debug("ignored after the image %s: %s", rest[0], " ".join(rest[1:]))
    o.kernel = rest[0] if rest else None
    return o


def _refusal(name: str, syscall: Syscall) -> NotSupportedYet:
    """The one line for an option kexloader does not implement, with kexec-tools 2.0.32's exit code where it
    refuses too (decided after the whole command line is read: -c may come after the option)."""
    if name in ("real-mode", "entry-32bit") and syscall != Syscall.CLASSIC:
        # 2.0.32's bzImage64 file loader: "Kexec2 syscall does not support 16bit or 32bit entry yet", 255
        return NotSupportedYet(f"--{name}: kexec_file_load has no 16-bit or 32-bit entry (and kexloader's "
                               "kexec_load path, -c, does not support it yet)", exit_code=EXIT_FAILURE)
    if name == "load-jump-back-helper" and syscall == Syscall.CLASSIC:
        # 2.0.32 -c refuses while an image is loaded ("There is kexec kernel loaded"), 255
        return NotSupportedYet(NOT_YET[name], exit_code=EXIT_FAILURE)
    return NotSupportedYet(NOT_YET[name])


def _apply(o: Options, name: str, value: str) -> None:
    if name in NOT_YET:
        return  # refused by parse_args, once -c/-s/-a are known
    if name == "help":
        o.show = Show.HELP
    elif name == "?":
        o.show = Show.USAGE_ERROR
    elif name == "version":
        o.show = Show.VERSION
    elif name in ("load", "exec", "unload", "force"):
        if name == "load":
            o.status_kind = Action.LOAD
        if o.action != Action.STATUS:  # -S suppresses every other action
            o.action = Action(name)
    elif name == "status":
        o.action = Action.STATUS
    elif name == "debug":
        o.debug = True
    elif name == "no-sync":
        pass  # accepted as kexec-tools does; nothing to turn off: the backends always sync before -e/-f
    elif name == "load-panic":
        o.crash = True  # kexec-tools: -p loads (into the crash region); with -u it unloads, with -S asks
        if o.action in (None, Action.EXEC, Action.FORCE):
            o.action = Action.LOAD
    elif name == "noefi":
        o.noefi = True
    elif name == "dtb":
        o.dtb = value
    elif name == "pass-memmap-cmdline":
        o.pass_memmap = True
    elif name == "reuse-video-type":
        pass  # kexloader always hands on the running kernel's boot screen_info, video type included
    elif name in ("kexec-syscall", "kexec-file-syscall", "kexec-syscall-auto"):
        o.syscall = {"kexec-syscall": Syscall.CLASSIC, "kexec-file-syscall": Syscall.FILE,
                     "kexec-syscall-auto": Syscall.AUTO}[name]
    elif name == "hotplug":
        o.hotplug = True
    elif name == "no-cma":
        o.no_cma = True  # kexec_file_load only, as kexec-tools: kexec_load never puts segments in CMA
    elif name in ("no-ifdown", "noefi", "force-dtb",
                  "elf32-core-headers", "elf64-core-headers"):
        pass  # accepted; see USAGE for what each means here (core headers: always ELF64, as x86-64 kexec-tools)
    elif name == "no-checks":
        o.purgatory = dataclasses.replace(o.purgatory, checks=False)
    elif name in ("append", "command-line"):
        o.append = value  # the last one wins, as in kexec-tools
    elif name == "reuse-cmdline":
        o.reuse_cmdline = True
    elif name in ("initrd", "ramdisk"):
        o.initrd = value
        o.initrds.append(value)
    elif name == "uki-profile":
        o.uki_profile = _number(name, value)
        if o.uki_profile < 0:
            raise UsageError(f"--uki-profile={value}: a profile is a number from 0")
    elif name in ("boot-entry", "boot-dir", "esp"):
        setattr(o, name.replace("-", "_"), value)
    elif name == "list-boot-entries":
        o.list_boot_entries = True
    elif name == "module":
        if not value.split():
            raise UsageError("--module needs a file name")
        o.modules.append(value)
    elif name == "vmm":
        o.vmm = value
    elif name == "type":
        o.image_type = value
    elif name in ("mem-min", "mem-max"):
        setattr(o, name.replace("-", "_"), _number(name, value))
    elif name == "console-serial":
        o.purgatory = dataclasses.replace(o.purgatory, console_serial=True)
    elif name == "console-vga":
        o.purgatory = dataclasses.replace(o.purgatory, console_vga=True)
    elif name == "reset-vga":
        o.purgatory = dataclasses.replace(o.purgatory, reset_vga=True)
    elif name == "serial":
        o.purgatory = dataclasses.replace(o.purgatory, serial_port=_serial_port(value))
    elif name == "serial-baud":
        baud = _number(name, value, EXIT_FAILURE)  # kexec-tools divides by it: SIGFPE on a word
        if not 9600 <= baud <= 115200 or 115200 % baud:  # kexec-tools: "Bad serial port baud rate", 255
            raise UsageError(f"--serial-baud={value}: must be between 9600 and 115200 and divide 115200",
                             exit_code=EXIT_FAILURE)
        o.purgatory = dataclasses.replace(o.purgatory, serial_baud=baud)
    elif name == "print-ckr-size":
        o.print_ckr_size = True
    elif name == "dry-run":
        o.dry_run = True
    elif name == "plan-out":
        o.plan_out = value
    elif name == "plan-in":
        o.plan_in = value
    elif name == "facts":
        o.facts = value
    elif name in ("args-linux", "args-elf", "args-none"):
        o.args_style = api.ArgsStyle(name.removeprefix("args-"))
    elif name == "inspect":
        o.inspect = value
    elif name == "json":
        o.json = True
    else:  # a name in LONG with no branch here is a kexloader bug
        raise NotSupportedYet(f"--{name} is not supported yet")


def _number(name: str, value: str, exit_code: int = EXIT_DIE) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f"--{name}={value}: not a number", exit_code=exit_code) from None


def _serial_port(value: str) -> int:
    """ttyS0-3 or an I/O port; anything else exits 255, as kexec-tools' "Bad serial port base"."""
    ports = {"ttyS0": 0x3F8, "ttyS1": 0x2F8, "ttyS2": 0x3E8, "ttyS3": 0x2E8}
    if value in ports:
        return ports[value]
    port = _number("serial", value, EXIT_FAILURE)
    if not 0 < port < 0x10000:
        raise UsageError(f"--serial={value}: not an I/O port", exit_code=EXIT_FAILURE)
    return port


def intent(o: Options) -> api.LoadIntent:
    """What the options ask to load, in the library's terms."""
    return api.LoadIntent(
        kernel=o.kernel, initrds=tuple(o.initrds), append=o.append, reuse_cmdline=o.reuse_cmdline, vmm=o.vmm,
        modules=tuple(o.modules), crash=o.crash, hotplug=o.hotplug, image_type=o.image_type,
        args_style=o.args_style, purgatory=o.purgatory, uki_profile=o.uki_profile,
        noefi=o.noefi, window=api.Range.between(o.mem_min, o.mem_max + 1), boot_entry=o.boot_entry, esp=o.esp,
        boot_dir=o.boot_dir, dtb=o.dtb, pass_memmap=o.pass_memmap)


def run(o: Options, backend: Backend, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if o.show == Show.HELP:
        out.write(options.usage(o.prog))
        return 0
    if o.show == Show.VERSION:
        out.write(version_line(o.prog) + "\n")
        return 0
    if o.show == Show.USAGE_ERROR:
        sys.stderr.write(options.usage(o.prog))
        return EXIT_DIE
    if o.inspect is not None:
        return api.inspect_file(o.inspect, as_json=o.json, out=out)
    if o.print_ckr_size:
        out.write(f"{api.load_facts().crash_size()}\n")
        return 0
    if o.list_boot_entries:  # Boot Loader Specification entries
        return api.list_boot_entries(o.esp, o.boot_dir, out)
    what = api.resolve_boot_entry(intent(o))  # --boot-entry: its kernel, initrds and (unless given) options
    if o.action == Action.STATUS:
        kind = o.crash or o.status_kind != Action.LOAD
        return 1 if backend.loaded(kind) else 0
    if o.action == Action.UNLOAD:
        unload(backend, o.crash, file_first=_file_syscall(o, backend), file_only=o.syscall == Syscall.FILE)
        return 0
    if o.action == Action.EXEC:
        if not backend.loaded(False):
            raise KexloaderError("nothing has been loaded", hint="load a kernel with -l first")
        backend.execute()
        return 0
    # load (-l), force (-f), or no action: load then shut down, as kexec-tools
    if _file_syscall(o, backend) and _load_with_file_syscall(o, what, backend, out):
        return _after_load(o, backend)
    the_plan = _build_plan(o, what)
    if o.debug or o.dry_run:
        print(api.describe_plan(the_plan), file=out if o.dry_run else sys.stderr)
    if o.dry_run and o.syscall == Syscall.AUTO and backend.has_file_load:  # part of the output, not an error
        print("note: this is kexloader's own kexec_load plan (-c); a real load without -c tries kexec_file_load "
              "first (-s prints that call)", file=out)
    if o.plan_out:
        api.write_plan(the_plan, o.plan_out)
    if o.dry_run:
        return 0
    backend.load(the_plan)
    return _after_load(o, backend)


def _after_load(o: Options, backend: Backend) -> int:
    if o.dry_run:
        return 0
    if o.hotplug and o.crash and backend.hotplug_active() is False:
        raise KexloaderError("the crash kernel is loaded, but the kernel says it will not update it on CPU or "
                             "memory hotplug (/sys/devices/system/{cpu,memory}/crash_hotplug read 0)",
                             hint="reload the crash kernel after CPUs or memory change")
    if o.action == Action.FORCE:
        backend.execute()
    elif o.action is None:
        _shutdown_reboot(o.prog)
    return 0


def _file_syscall(o: Options, backend: Backend) -> bool:
    """-s, or -a (the default), where there is a kexec_file_load (not under Xen: the hypercall loads there).
    --dry-run, --plan-out, --plan-in and --facts are about kexloader's own plans: under -a they plan for
    kexec_load (-c); with -s, --dry-run prints the kexec_file_load call instead."""
    if not backend.has_file_load or o.plan_in:
        return False
    if o.syscall == Syscall.AUTO:
        return not (o.dry_run or o.plan_out or o.facts)
    return o.syscall == Syscall.FILE


def _load_with_file_syscall(o: Options, what: api.LoadIntent, backend: Backend, out: TextIO) -> bool:
    """kexec_file_load of the kernel and initrd; False when -a should fall back to kexec_load."""
    try:
        api.check_file_load(what, o.facts)
    except api.FileLoadRefused:
        if o.syscall == Syscall.AUTO:
            return False
        raise
    if o.no_cma and backend.supports("file-no-cma") is False:
        if o.syscall == Syscall.AUTO:
            log.debug("the kernel has no KEXEC_FILE_NO_CMA: falling back to kexec_load, which never uses CMA")
            return False
        raise BackendError("--no-cma: this kernel has no KEXEC_FILE_NO_CMA (Linux 6.17+); syscall kexec_file_load "
                           "not available", hint="leave out --no-cma (older kernels never place kexec images in "
                           "CMA), or use -c", exit_code=EXIT_FALLBACK)
    with api.open_file_load(what, o.facts) as f:
        if o.dry_run or o.debug:
            print(f"kexec_file_load(kernel={f.kernel_what}, initrd={f.initrd_what or 'none'}, cmdline={f.cmdline!r}, "
                  f"{'crash' if o.crash else 'normal'})", file=out if o.dry_run else sys.stderr)
        try:
            backend.load_file(f.kernel_fd, f.initrd_fd, f.cmdline_bytes, o.crash, no_cma=o.no_cma)
        except BackendError as e:
            if e.errno not in FILE_FALLBACK_ERRNOS:
                raise
            if o.syscall == Syscall.AUTO:
                log.debug("kexec_file_load refused (%s): falling back to kexec_load", e)
                return False
            raise BackendError(f"{e}; syscall kexec_file_load not available", exit_code=EXIT_FALLBACK) from None
    if o.dtb is not None:  # loaded without it, as kexec-tools' bzImage64 file loader ("unrecognized option")
        print(f"{o.prog}: warning: --dtb ignored: kexec_file_load takes no device tree (-c passes it as SETUP_DTB)",
              file=sys.stderr)
    return True


def _build_plan(o: Options, what: api.LoadIntent) -> api.Plan:
    if o.facts and not o.dry_run:
        raise UsageError("--facts describes another machine: use it with --dry-run")
    if o.plan_in:  # checked as a plan made here would be, for this machine (or the --facts one)
        return api.read_plan(o.plan_in, api.load_facts(o.facts))
    if not what.kernel:
        raise api.no_kernel(f"{o.prog} -l")
    return api.plan_intent(what, api.load_facts(o.facts, kdump=what.crash))


def _shutdown_reboot(prog: str) -> None:
    """kexec-tools without -l/-e/-f: load, then let init shut down and kexec (shutdown -r now)."""
    for path in ("/sbin/shutdown", "/etc/shutdown", "/bin/shutdown"):
        if os.access(path, os.X_OK):
            try:
                os.execv(path, [path, "-r", "now"])
            except OSError as e:  # kexec-tools: "shutdown: <strerror>", 255
                raise KexloaderError(f"shutdown: {e.strerror}", exit_code=EXIT_FAILURE) from None
    raise KexloaderError("loaded, but no shutdown command was found to reboot into it",
                         hint=f"run {prog} -e to start the new kernel")


def default_backend() -> Backend:
    """kexec_load on Linux; Xen's kexec hypercall in a Xen PV dom0 (the dom0 kernel's kexec is the wrong door)."""
    role = api.xen_role()
    if role == "dom0":
        from .backends.xen import XenKexecBackend
        log.debug("running in a Xen dom0: images go to Xen through its kexec hypercall")
        return XenKexecBackend()
    if role == "domU":
        raise KexloaderError("kexec does not work from a Xen domU (only from dom0)")
    return LinuxKexecBackend()


def main(argv: Sequence[str] | None = None, backend_factory: Callable[[], Backend] = default_backend,
         prog: str | None = None) -> int:
    """Run the command line `argv` (default: sys.argv's); `prog` (default: from sys.argv[0]) names the program."""
    argv = sys.argv[1:] if argv is None else argv
    prog = prog or program_name(sys.argv[0] if sys.argv else "")
    debug = any(a in ("-d", "--debug") for a in argv)
    if debug:  # without -d nothing is logged: logging is not even imported
        import logging
        logging.basicConfig(level=logging.DEBUG, format=f"{prog}: %(message)s")
    try:
        o = parse_args(argv, prog)
        backend = RecordingBackend() if o.dry_run else backend_factory()
        if o.debug:
            backend.debug = True  # the backends' -d: kernel debug flags where they exist, the kernel's log
        return run(o, backend)
    except KexloaderError as e:
        hint = f"; {e.hint}" if e.hint else ""
        return _fail(prog, f"{e}{hint}", e.exit_code, debug)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 -- the last guard: one line, never a traceback (unless -d)
        message, code = escaped(e)
        return _fail(prog, message, code, debug)


def escaped(e: BaseException) -> tuple[str, int]:
    """The line and exit code for an exception that is not a KexloaderError (the library let it through:
    a bug worth a report, except the system's own errors, which say what is wrong by themselves)."""
    report = "please report this as a kexloader bug, with the command line (-d shows where it happened)"
    if isinstance(e, MemoryError):
        return "out of memory", EXIT_FAILURE
    if isinstance(e, OSError):  # a file or a device: kexec-tools' "Cannot open"/"Cannot read", exit 1
        where = f"{os.fsencode(e.filename).decode('utf-8', 'backslashreplace')}: " if e.filename else ""
        return f"{where}{e.strerror or e}", EXIT_DIE
    if isinstance(e, UnicodeError):
        return f"text that is not UTF-8 ({e}); {report}", EXIT_DIE
    construct = any(c.__module__.split(".")[0] == "construct" for c in type(e).__mro__)
    if construct or isinstance(e, (struct.error, OverflowError, RecursionError, ValueError, IndexError,
                                   KeyError, TypeError, AssertionError, ZeroDivisionError)):
        # what a malformed input makes a parser raise where no check caught it: an image failure, 255
        return f"cannot use this input ({type(e).__name__}: {_first_line(e)}); {report}", EXIT_FAILURE
    return f"unexpected {type(e).__name__}: {_first_line(e)}; {report}", EXIT_FAILURE


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no message"


def _fail(prog: str, message: str, code: int, debug: bool) -> int:
    if debug:
        import traceback
        traceback.print_exc()
    print(f"{prog}: {_printable(' '.join(message.splitlines()))}", file=sys.stderr)
    return code


def _printable(text: str) -> str:
    """Argv's bytes that are not UTF-8 (surrogate escapes) shown as \\xNN, whatever stderr's encoding."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte became
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")

