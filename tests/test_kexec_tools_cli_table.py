"""kexloader's command line against kexec-tools', row by row (issue 13 item 1).

fixtures/kexec-tools-cli/<version>.json holds what kexec-tools 2.0.25 (Debian 12) and 2.0.32 (upstream) did for
every x86-64 option and distro command shape in four worlds (tools/kexec_tools_cli.py, behind the capture shim):
the exit code, the kexec_load / kexec_file_load / reboot calls with their flags, and stderr. Here kexloader's
CLI runs each row in-process against the same world: its real kexec_load backend with raw_syscall answered as the
world answers (nothing reaches the kernel), a snapshot of a machine with a crash region, and a refused shutdown.

A row passes when the exit code, the calls (name and flags; kexec_file_load's command line too) and the message
class match. Rows that differ today are in DIFFERENCES with the reason: that table is what remains to do, and a
row that starts to match must leave it. kexloader follows 2.0.32; rows where 2.0.25 and 2.0.32 agree must match
2.0.25 too, and the rows where the two releases differ are pinned in RELEASE_CHANGES.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kexloader import api, cli, system
from kexloader.backends import linux
from kexloader.backends.linux import LinuxKexecBackend
from kexloader.model import KexecSysfs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import kexec_tools_cli as recorder  # noqa: E402

RECORDS = ROOT / "fixtures" / "kexec-tools-cli"
SNAPSHOT = ROOT / "fixtures" / "snapshots" / "ovmf-6g-kdump.json"  # a crash region, RAM above 4 GiB
NO_CRASH_REGION = ROOT / "fixtures" / "snapshots" / "qemu-6g.json"  # for rows recorded without one
TARGET = "2.0.32"
SYSCALLS = {246: "kexec_load", 320: "kexec_file_load", 169: "reboot"}

DEBUG_FLAG = ("-d: kexec-tools 2.0.32 adds KEXEC_FILE_DEBUG (0x8) to kexec_file_load whatever the kernel; kexloader only "
              "where the kernel has it (6.7+; these worlds are a 6.1, which answers EINVAL to the flag)")
NOT_BUILT = "not built in kexloader (refused with one line, exit 1) where kexec-tools {}"
JUMP = NOT_BUILT.format("implements kexec jump") + " (issue 13: --load-preserve-context, --load-jump-back-helper, --entry)"
WARNS_AND_LOADS = "kexec-tools' bzImage64 loader does not know {}: it warns 'unrecognized option' and loads anyway; kexloader {}"
CMDLINE_BUG = ("kexec-tools bug (issue 13), on both of its paths: its bzImage64 loaders drop the command line when {} comes "
               "after --append (they load an empty one); kexloader keeps it, deliberately")

# Rows where kexloader differs from kexec-tools 2.0.32 today: row name, or (row name, world), -> why. This is what
# remains to do for issue 13 item 1 (or a deliberate difference, which docs/kexec-tools-differences.md lists).
DIFFERENCES: dict[str | tuple[str, str], str] = {
    **dict.fromkeys(["debug", "debug-long", "cluster", "fedora-kdumpctl-load"], DEBUG_FLAG),
    ("mem-min-4g", "no-file"): ("--mem-min at or above 4 GiB, after the fallback to kexec_load: kexloader keeps its small "
                                "segments below 4 GiB and refuses (exit 1); kexec-tools 2.0.32 loads"),
    "entry": JUMP + "; kexec-tools 2.0.32 ignores --entry on the kexec_file_load path",
    "load-preserve-context-c": JUMP + "; kexec-tools 2.0.32 did not finish in 10 s (recorded as a hang)",
    **dict.fromkeys(["append-then-noefi", "append-then-noefi-c"], CMDLINE_BUG.format("--noefi")),
    **dict.fromkeys(["append-then-pass-memmap-cmdline", "append-then-pass-memmap-cmdline-c"],
                    CMDLINE_BUG.format("--pass-memmap-cmdline")),
    **dict.fromkeys(["append-then-reuse-video-type", "append-then-reuse-video-type-c"],
                    CMDLINE_BUG.format("--reuse-video-type")),
    **{(name, world): WARNS_AND_LOADS.format("--args-*", "accepts them silently (they apply to ELF images)")
       for name in ("args-elf", "args-linux", "args-none") for world in ("file-ok", "lockdown", "no-file")},
    "module": (WARNS_AND_LOADS.format("--module", "refuses it for a bzImage (exit 1): a --module means a multiboot "
                                      "image, which kexec_file_load cannot load, so -a goes to kexec_load")),
    **dict.fromkeys([("dtb", "no-file"), ("petitboot-load", "no-file")],
                    "after the fallback to kexec_load kexloader hands the device tree over as SETUP_DTB, silently; "
                    "kexec-tools' bzImage64 loader warns 'unrecognized option' and loads without it"),
    "elf-args-linux": ("a bare x86-64 ELF: kexec_file_load cannot load an ELF, so kexloader's -a goes to kexec_load, "
                       "whose vmlinux loader places it; kexec-tools 2.0.32 runs its ELF loader in file mode, which "
                       "refuses the address (exit 1)"),
    "no-cma": ("kexloader's --no-cma (kexec-tools after 2.0.32) on a kernel without KEXEC_FILE_NO_CMA: exit 253; "
               "2.0.32 does not know the option (exit 1)"),
    "force-dtb": "kexloader accepts --force-dtb (kexec-tools after 2.0.32) and ignores it on x86; 2.0.32: unknown option",
    "dry-run": "kexloader's own --dry-run; kexec-tools: unknown option",
}

# Rows where kexec-tools 2.0.25 and 2.0.32 behave differently: row name, or (row name, world), -> why.
RELEASE_CHANGES: dict[str | tuple[str, str], str] = {
    **dict.fromkeys([
        "load", "load-initrd-append", "panic", "panic-long", "unload", "unload-panic", "unload-long", "force",
        "force-long", "no-action", "no-sync-load", "no-sync-long", "no-ifdown-long", "no-checks", "no-checks-long",
        "type-bzImage64", "type-bzImage", "mem-min", "mem-max", "mem-min-4g", "entry", "reset-vga", "serial",
        "serial-port", "serial-baud", "console-vga", "console-serial", "elf32-core-headers", "elf64-core-headers",
        "pass-memmap-cmdline", "noefi", "reuse-video-type", "append-then-noefi", "append-then-pass-memmap-cmdline",
        "append-then-reuse-video-type", "command-line", "append-twice", "reuse-cmdline", "reuse-cmdline-append",
        "ramdisk", "args-elf", "args-linux", "args-none", "module", "two-kernels", "prefix", "separate-arguments",
        "permutation", "double-dash", "debian-kdump-tools-load", "debian-kdump-tools-unload",
        "debian-kexec-load-init", "fedora-kdumpctl-load-c", "fedora-kdumpctl-unload", "suse-kdump-load",
        "suse-kdump-unload", "systemd-load", "systemd-reuse-cmdline", "unload-panic-no-crash-region"],
        "the default became -a (2.0.27): kexec_file_load first, then kexec_load"),
    **dict.fromkeys(["debug", "debug-long", "cluster", "fedora-kdumpctl-load"],
                    "-d also sets KEXEC_FILE_DEBUG (2.0.28), and the default became -a"),
    **dict.fromkeys(["type-elf", "type-multiboot", "type-bogus"],
                    "with the -a default --type is only checked after a fallback to kexec_load"),
    "hotplug": "--hotplug is new in 2.0.28 (2.0.25: unrecognized option, exit 1)",
    "load-preserve-context": ("2.0.32 refuses kexec jump with kexec_file_load (its default), exit 1; 2.0.25 did not "
                              "finish in 10 s"),
    "load-jump-back-helper": "2.0.32 refuses kexec jump with kexec_file_load (its default), exit 1",
    **dict.fromkeys(["real-mode", "entry-32bit"],
                    "with the -a default the bzImage64 file loader refuses 16/32-bit entry (exit 255)"),
    **dict.fromkeys(["dtb", "petitboot-load"],
                    "--dtb is new in 2.0.32's option table (2.0.25: unrecognized option, exit 1); its bzImage64 "
                    "file loader still warns about it and loads"),
    "elf-args-linux": ("the default became -a: 2.0.32 runs its ELF loader on the kexec_file_load path, which "
                       "refuses this tiny ELF's segment (exit 1, no call); 2.0.25's kexec_load path loaded it"),
}


def _load(version: str) -> dict[str, Any]:
    path = RECORDS / f"{version}.json"
    if not path.exists():
        pytest.skip(f"{path} is missing: python3 tools/kexec_tools_cli.py")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _runs(version: str) -> list[dict[str, Any]]:
    path = RECORDS / f"{version}.json"
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _errno(value: str) -> int:
    return int(value) if value.isdigit() else int(getattr(errno, value))


def _message_class(exit_code: object, stdout_lines: int, stderr_lines: int) -> str:
    """Loosely what the user sees: something on stderr (an error, a warning, -d's log; or, with a failure, the
    usage, which kexec-tools prints on stdout), other output on stdout (help, version), or nothing."""
    if stderr_lines or (exit_code != 0 and stdout_lines):
        return "stderr"
    return "stdout" if stdout_lines else "silent"


@dataclass
class Outcome:
    exit: object
    calls: list[dict[str, Any]]
    message: str
    stderr: list[str] = field(default_factory=list)

    def comparable(self, with_cmdline: bool) -> tuple[object, list[tuple[Any, ...]], str]:
        calls = [(c["call"], c["flags"], _given(c.get("cmdline")) if with_cmdline else None) for c in self.calls]
        return self.exit, calls, self.message


# What a loader adds to a crash kernel's command line from the machine (addresses that differ between the recording
# host and the snapshot); docs/kexec-tools-differences.md says where the two loaders differ in them.
MACHINE_PARAMETERS = ("elfcorehdr=", "acpi_rsdp=", "memmap=", "disable_cpu_apicid=")


def _given(cmdline: str | None) -> str | None:
    """The command line without what the loader adds from the machine."""
    if cmdline is None:
        return None
    return " ".join(w for w in cmdline.split() if not w.startswith(MACHINE_PARAMETERS))


def recorded(run: dict[str, Any]) -> Outcome:
    calls = [{k: v for k, v in c.items() if k in ("call", "flags", "cmdline")} for c in run["calls"]]
    return Outcome(run["exit"], calls, _message_class(run["exit"], run["stdout"]["lines"], len(run["stderr"])),
                   run["stderr"])


class WorldBackend(LinuxKexecBackend):
    """kexloader's own kexec_load backend, on a kernel like Debian 12's 6.1: no kexec debug flags, no
    KEXEC_FILE_NO_CMA (the recorded releases send neither)."""

    def supports(self, feature: str) -> bool | None:
        return False


@dataclass
class World:
    """Answers the kexec syscalls as a recorded world did (shim.c's KT_LOAD_ERRNO / KT_FILE_ERRNO; reboot is
    always refused with EPERM there) and keeps each call."""

    answers: dict[str, int]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def raw_syscall(self, nr: int, *args: Any) -> int:
        name = SYSCALLS[nr]
        flags = args[{"kexec_load": 3, "kexec_file_load": 4, "reboot": 2}[name]]
        call: dict[str, Any] = {"call": name, "flags": int(getattr(flags, "value", flags))}
        if name == "kexec_file_load":
            raw = getattr(args[3], "value", None)
            call["cmdline"] = raw.rstrip(b"\0").decode(errors="replace") if raw is not None else None
        elif name == "kexec_load" and args[1] and not self.answers[name]:
            # a load that succeeds (the shim captures only those): the command line its zero page points to
            segments = [(s.mem or 0, ctypes.string_at(s.buf, s.bufsz) if s.buf else b"") for s in args[2][:args[1]]]
            call["cmdline"] = recorder.zero_page_cmdline(segments)
        self.calls.append(call)
        err = self.answers[name]
        return -err if err else 0


def inputs(tmp: Path) -> dict[str, str]:
    """The recorded placeholders, for kexloader: its own small bzImage stands in for Debian's kernel (the rows
    are about the command line, not the image); the initrd, device tree and ELF are the recorder's."""
    initrd = tmp / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 64)
    dtb = tmp / "tiny.dtb"
    dtb.write_bytes(recorder.minimal_fdt())
    elf = tmp / "vmlinux"
    elf.write_bytes(recorder.minimal_elf())
    return {"KERNEL": str(ROOT / "fixtures/bzimage/tiny.bzImage"), "INITRD": str(initrd), "DTB": str(dtb),
            "ELF": str(elf), "MISSING": str(tmp / "no-such-kernel")}


def expand(argv: list[str], names: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for name, path in names.items():
            a = a.replace("{" + name + "}", path)
        out.append(a)
    return out


def run_kexloader(run: dict[str, Any], worlds: dict[str, dict[str, str]], tmp: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Outcome:
    answers = worlds[run["world"]]
    world = World({"kexec_load": _errno(answers["KT_LOAD_ERRNO"]), "kexec_file_load": _errno(answers["KT_FILE_ERRNO"]),
                   "reboot": errno.EPERM})
    monkeypatch.setattr(linux, "raw_syscall", world.raw_syscall)
    facts = api.load_facts(SNAPSHOT if run.get("crash_region", True) else NO_CRASH_REGION)
    # as recorded: an image of each kind is loaded, and a kernel with CONFIG_CRASH_HOTPLUG
    facts = dataclasses.replace(facts, kexec=dataclasses.replace(
        facts.kexec or KexecSysfs(), loaded=True, crash_loaded=True, crash_elfcorehdr_size=4096, cpu_crash_hotplug=1,
        memory_crash_hotplug=1))
    monkeypatch.setattr(api, "load_facts", lambda snapshot=None, **_: facts)
    monkeypatch.setattr(system, "read_cmdline", lambda *a, **k: facts.cmdline)

    def refused_exec(path: str, args: list[str]) -> None:  # the shim's seccomp filter refuses execve
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)

    real_access = os.access

    def shutdown_is_there(path: str, mode: int) -> bool:  # as on the recording host, whatever this one has
        return True if path in ("/sbin/shutdown", "/etc/shutdown", "/bin/shutdown") else real_access(path, mode)

    monkeypatch.setattr(cli.os, "execv", refused_exec)
    monkeypatch.setattr(cli.os, "access", shutdown_is_there)
    sysroot = tmp / "root"
    (sysroot / "sys/kernel").mkdir(parents=True, exist_ok=True)
    for name in ("kernel/kexec_loaded", "kernel/kexec_crash_loaded", "devices/system/cpu/crash_hotplug",
                 "devices/system/memory/crash_hotplug"):
        (sysroot / "sys" / name).parent.mkdir(parents=True, exist_ok=True)
        (sysroot / "sys" / name).write_text("1\n")
    backend = WorldBackend(root=sysroot, kmsg=tmp / "no-kmsg")
    argv = expand(run["argv"], inputs(tmp))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: object = cli.main(argv, backend_factory=lambda: backend, prog="kexec")
        except SystemExit as e:
            code = e.code
        except Exception as e:  # noqa: BLE001 - a traceback is an outcome to record, not to hide
            code = f"traceback: {type(e).__name__}"
    stderr = [line for line in err.getvalue().splitlines() if line.strip()]
    return Outcome(code, world.calls, _message_class(code, len(out.getvalue().splitlines()), len(stderr)), stderr)


def _known(table: dict[str | tuple[str, str], str], run: dict[str, Any]) -> str | None:
    return table.get((run["name"], run["world"])) or table.get(run["name"])


def _same(a: Outcome, b: Outcome, run: dict[str, Any]) -> bool:
    with_cmdline = "--reuse-cmdline" not in run["argv"]  # the recorded one is the recording host's
    return a.comparable(with_cmdline) == b.comparable(with_cmdline)


def _ids(runs: list[dict[str, Any]]) -> list[str]:
    return [f"{r['name']}@{r['world']}" for r in runs]


TARGET_RUNS = _runs(TARGET)


@pytest.mark.parametrize("run", TARGET_RUNS, ids=_ids(TARGET_RUNS))
def test_row_matches_kexec_tools(run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worlds = _load(TARGET)["worlds"]
    want = recorded(run)
    got = run_kexloader(run, worlds, tmp_path, monkeypatch)
    reason = _known(DIFFERENCES, run)
    if _same(want, got, run):
        assert reason is None, f"{run['name']}@{run['world']} matches kexec-tools now: remove it from DIFFERENCES"
    else:
        assert reason is not None, (f"{run['name']}@{run['world']} {run['argv']}: kexec-tools {TARGET} "
                                    f"{want.comparable(True)} {want.stderr[:2]}, kexloader {got.comparable(True)} "
                                    f"{got.stderr[:2]}")


def test_every_difference_is_a_recorded_row() -> None:
    names = {r["name"] for r in TARGET_RUNS} | {(r["name"], r["world"]) for r in TARGET_RUNS}
    if not TARGET_RUNS:
        pytest.skip("no recording")
    assert [k for k in DIFFERENCES if k not in names] == []


def test_the_documented_table_has_every_row() -> None:
    """docs/kexec-tools-differences.md carries the table (python3 tests/test_kexec_tools_cli_table.py): one line
    per recorded row, none of them unexplained."""
    if not TARGET_RUNS:
        pytest.skip("no recording")
    doc = (ROOT / "docs" / "kexec-tools-differences.md").read_text()
    doc = doc[doc.index(f"| row | arguments | worlds | kexec-tools {TARGET} |"):]
    missing = sorted({r["name"] for r in TARGET_RUNS if f"| `{r['name']}` |" not in doc})
    assert missing == [] and "UNEXPLAINED" not in doc, "regenerate the table: python3 tests/test_kexec_tools_cli_table.py"


def _release_differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return bool(recorded(old).comparable(True) != recorded(new).comparable(True))


def test_release_changes_are_pinned() -> None:
    """The rows where 2.0.25 and 2.0.32 differ are exactly RELEASE_CHANGES (a re-recording that changes them is
    noticed); every other row of 2.0.25 is covered by the 2.0.32 comparison."""
    old = {(r["name"], r["world"]): r for r in _load("2.0.25")["rows"]}
    new = {(r["name"], r["world"]): r for r in _load(TARGET)["rows"]}
    assert set(old) == set(new)
    changed = sorted(key for key in new if _release_differs(old[key], new[key]))
    unexplained = [key for key in changed if _known(RELEASE_CHANGES, new[key]) is None]
    assert unexplained == [], "rows where 2.0.25 and 2.0.32 differ, without a reason in RELEASE_CHANGES"
    stale = [k for k in RELEASE_CHANGES if not any(k in (key, key[0]) for key in changed)]
    assert stale == [], "RELEASE_CHANGES entries whose rows no longer differ"


def test_the_recording_covers_every_option_of_both_releases() -> None:
    """Every long option of kexec-tools' x86-64 tables (kexec.h, arch/x86_64/include/arch/options.h) appears in
    some row, so a new option in a re-recorded release cannot go unnoticed."""
    options = {
        "help", "version", "force", "no-checks", "no-ifdown", "no-sync", "load", "unload", "exec", "exec-live-update",
        "load-preserve-context", "load-jump-back-helper", "load-live-update", "entry", "type", "load-panic",
        "mem-min", "mem-max", "reuseinitrd", "kexec-file-syscall", "kexec-syscall", "kexec-syscall-auto", "debug",
        "status", "print-ckr-size", "hotplug", "reset-vga", "serial", "serial-baud", "console-vga",
        "console-serial", "elf32-core-headers", "elf64-core-headers", "pass-memmap-cmdline", "noefi",
        "reuse-video-type", "command-line", "append", "reuse-cmdline", "initrd", "ramdisk", "args-elf", "args-linux",
        "args-none", "module", "real-mode", "entry-32bit", "dtb"}
    shorts = set("h?vdfixyluetpscaS")
    used_long = {a[2:].split("=", 1)[0] for r in TARGET_RUNS for a in r["argv"] if a.startswith("--")}
    used_short = {c for r in TARGET_RUNS for a in r["argv"] if a.startswith("-") and not a.startswith("--")
                  for c in a[1:]}
    if not TARGET_RUNS:
        pytest.skip("no recording")
    assert sorted(options - used_long) == [] and sorted(shorts - used_short) == []


def _short(o: Outcome) -> str:
    """"exit calls": F0x2 = kexec_file_load with flags 0x2, L0x3e0001 = kexec_load, R = reboot."""
    letters = {"kexec_file_load": "F", "kexec_load": "L", "reboot": "R"}
    calls = " ".join(letters[c["call"]] + (f"{c['flags']:#x}" if c["call"] != "reboot" else "") for c in o.calls)
    return f"{o.exit} {calls}".strip()


def _cell(outcomes: list[str]) -> str:
    return outcomes[0] if len(set(outcomes)) == 1 else " / ".join(outcomes)


def table() -> str:
    """The markdown table of docs/kexec-tools-differences.md: per row, kexec-tools 2.0.32's and kexloader's exit
    code and calls in each world (one cell when all worlds agree), and why they differ.

        python3 tests/test_kexec_tools_cli_table.py > /tmp/table.md
    """
    data = json.loads((RECORDS / f"{TARGET}.json").read_text())
    rows: dict[str, list[tuple[dict[str, Any], Outcome, Outcome]]] = {}
    for run in data["rows"]:
        with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
            got = run_kexloader(run, data["worlds"], Path(tmp), mp)
        rows.setdefault(run["name"], []).append((run, recorded(run), got))
    reasons: list[str] = []
    lines = [f"| row | arguments | worlds | kexec-tools {TARGET} | kexloader | differs |", "|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        why = sorted({_known(DIFFERENCES, run) or "UNEXPLAINED" for run, want, got in runs if not _same(want, got, run)})
        marks = []
        for reason in why:
            if reason not in reasons:
                reasons.append(reason)
            marks.append(f"[{reasons.index(reason) + 1}]")
        args = " ".join(runs[0][0]["argv"]).replace("|", "\\|")
        worlds = "all" if len(runs) == len(data["worlds"]) else " / ".join(run["world"] for run, _, _ in runs)
        lines.append(f"| `{name}` | `{args}` | {worlds} | {_cell([_short(w) for _, w, _ in runs])} | "
                     f"{_cell([_short(g) for _, _, g in runs])} | {' '.join(marks)} |")
    lines.append("")
    lines += [f"{i}. {reason}" for i, reason in enumerate(reasons, 1)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
