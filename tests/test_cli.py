"""kexec-tools' command line: argv -> options, exit codes, one-line errors, --dry-run and --plan-out."""

import json
from pathlib import Path

import pytest

from kexloader import cli
from kexloader.backends.recording import RecordingBackend
from kexloader.model import PurgatoryOptions

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "fixtures/bzimage/tiny.bzImage")
SNAP = str(ROOT / "fixtures/snapshots/devhost.json")


@pytest.mark.parametrize("argv, want", [
    (["-l", "K", "--append=a b"], dict(action="load", kernel="K", append="a b")),
    (["--load", "K", "--append", "a b", "--initrd", "I"], dict(action="load", kernel="K", append="a b", initrd="I")),
    (["K", "-l", "--command-line=x", "--append=y"], dict(kernel="K", append="y")),  # the last one wins
    (["-l", "K", "--ramdisk=I", "--reuse-cmdline"], dict(initrd="I", reuse_cmdline=True)),
    (["-l", "--append", "-v --weird", "K"], dict(append="-v --weird", kernel="K")),  # getopt takes the next word
    (["-lK"], None),  # -l takes no argument: K is an unknown short option
    (["--app=x", "-l", "K"], dict(append="x")),  # unique prefix, as getopt_long
    (["-e"], dict(action="exec")),
    (["-u"], dict(action="unload")),
    (["-S"], dict(action="status", status_kind=None)),
    (["-S", "-l"], dict(action="status", status_kind="load")),
    (["-l", "-S"], dict(action="status", status_kind="load")),
    (["-l", "K", "-t", "bzImage64", "-i", "-d", "-y"], dict(image_type="bzImage64", debug=True,  # -y: accepted
                                                           purgatory=PurgatoryOptions(checks=False))),
    (["-l", "K", "--console-serial", "--serial=ttyS1", "--serial-baud=9600"],
     dict(purgatory=PurgatoryOptions(console_serial=True, serial_port=0x2F8, serial_baud=9600))),
    (["-l", "K", "--mem-min=0x1000000", "--mem-max", "0x7fffffff"], dict(mem_min=0x1000000, mem_max=0x7FFFFFFF)),
    (["--", "-l"], dict(kernel="-l", action=None)),
])
def test_argv_to_options(argv, want):
    if want is None:
        with pytest.raises(cli.UsageError):
            cli.parse_args(argv)
        return
    o = cli.parse_args(argv)
    for key, value in want.items():
        assert getattr(o, key) == value, key


def run(argv, capsys, backend=None):
    backend = backend or RecordingBackend()
    code = cli.main(argv, backend_factory=lambda: backend)
    out, err = capsys.readouterr()
    return code, out, err, backend


@pytest.mark.parametrize("argv, code, words", [
    (["--bogus"], 1, "option --bogus not recognized"),
    (["-l"], 255, "no kernel image given"),  # kexec-tools: "No kernel specified", 255
    (["-l", "/nonexistent/vmlinuz"], 1, "cannot read kernel /nonexistent/vmlinuz: No such file"),
    (["-l", TINY, "--initrd=/nonexistent/initrd"], 1, "cannot read initrd"),
    (["-l", TINY, "--serial-baud=12345"], 255, "must be between 9600 and 115200"),  # kexec-tools: 255
    (["-l", TINY, "--load-preserve-context"], 1, "--load-preserve-context is not supported (kexec jump"),
    (["-l", TINY, "-t", "nonsense"], 255, "Unsupported kernel type nonsense"),  # kexec-tools: 255
    (["-l", TINY, "--append=" + "x" * 3000], 255, "3000 bytes; this kernel"),  # kexec-tools: "Cannot load", 255
    (["-e"], 1, "nothing has been loaded"),
])
def test_bad_input_gets_one_line_and_the_exit_code(argv, code, words, capsys):
    got, out, err, backend = run(argv + ["--dry-run", "--facts=" + SNAP] if "-l" in argv else argv, capsys)
    assert got == code
    assert words in err and err.count("\n") == 1 and "Traceback" not in err
    assert not backend.plans  # never a partial load


def test_extra_images_are_ignored_as_kexec_tools_does(capsys):
    code, out, err, _ = run(["--dry-run", "-l", TINY, "--facts", SNAP, "/nonexistent/K2", "K3"], capsys)
    assert code == 0 and not err and str(Path(TINY).name) in out


@pytest.mark.parametrize("argv", [["-u", "--initrd=x"], ["-S", "--append=x"], ["-u", "--reuse-cmdline"],
                                  ["-S", "--noefi"], ["-u", "--module=x"], ["-e", "--command-line=x"]])
def test_image_options_without_a_load_are_usage_errors(argv, capsys):
    """kexec-tools 2.0.25 prints its usage and exits 1 (tools/kexec_tools_exit_codes.py records two of them)."""
    code, out, err, backend = run(argv, capsys)
    assert code == 1 and "takes no image options" in err and err.count("\n") == 1
    assert not backend.plans


@pytest.mark.parametrize("argv", [["-u", "--console-vga"], ["-u", "--serial=ttyS0"], ["-u", "-i"]])
def test_architecture_options_with_unload_are_accepted(argv, capsys):
    assert run(argv, capsys)[0] == 0


def test_load_records_the_plan_and_status_follows(capsys):
    backend = RecordingBackend()
    assert run(["-S", "-l"], capsys, backend)[0] == 0
    # --facts needs --dry-run; load with the live facts of this host into the recorder
    code, out, err, _ = run(["-c", "-l", TINY, "--append=hello"], capsys, backend)
    assert code == 0, err
    assert backend.plans[False].linux is not None
    assert run(["-S", "-l"], capsys, backend)[0] == 1
    assert run(["-S"], capsys, backend)[0] == 0  # without -l, -S asks about the crash image (kexec-tools)
    assert run(["-u"], capsys, backend)[0] == 0
    assert run(["-S", "-l"], capsys, backend)[0] == 0


def test_dry_run_prints_the_table_and_plan_out_matches(tmp_path, capsys):
    out_dir = tmp_path / "plan"
    code, out, err, backend = run(["--dry-run", "-l", TINY, "--initrd", TINY, "--append", "a=1",
                                   "--facts", SNAP, "--plan-out", str(out_dir)], capsys)
    assert code == 0, err
    assert not backend.plans
    for role in ("kernel", "initrd", "cmdline", "boot-params", "purgatory"):
        assert role in out
    doc = json.loads((out_dir / "plan.json").read_text())
    assert isinstance(doc["entry"], int) and doc["flags"] == 62 << 16
    roles = {s["role"] for s in doc["segments"]} - {"setup-data"}  # the RNG seed, when the pool is ready
    assert roles == {"kernel", "initrd", "cmdline", "boot-params", "purgatory"}
    for s in doc["segments"]:
        data = (out_dir / s["file"]).read_bytes()
        assert len(data) == s["bufsz"] <= s["memsz"] and s["memsz"] % 4096 == 0
        assert f"{s['mem']:#018x}" in out
    assert doc["linux"]["kernel_entry"] == next(s["mem"] for s in doc["segments"] if s["role"] == "kernel") + 0x200
    cmd = next(s for s in doc["segments"] if s["role"] == "cmdline")
    assert (out_dir / cmd["file"]).read_bytes() == b"a=1\0"


def test_plan_in_loads_a_saved_plan(tmp_path, capsys):
    # made for this machine (its live facts), as --plan-in checks the plan against the machine it loads on
    run(["--dry-run", "-l", TINY, "--plan-out", str(tmp_path / "p")], capsys)
    backend = RecordingBackend()
    code, out, err, _ = run(["-l", "--plan-in", str(tmp_path / "p")], capsys, backend)
    assert code == 0, err
    saved = json.loads((tmp_path / "p/plan.json").read_text())
    assert backend.plans[False].entry == saved["entry"]
    seg = tmp_path / "p" / saved["segments"][0]["file"]
    seg.write_bytes(bytes([seg.read_bytes()[0] ^ 1]) + seg.read_bytes()[1:])  # same size, one bit flipped
    code, out, err, _ = run(["-l", "--plan-in", str(tmp_path / "p")], capsys, RecordingBackend())
    assert code == 1 and "does not match its sha256" in err


def test_plan_in_refuses_a_segment_without_sha256(tmp_path, capsys):
    run(["--dry-run", "-l", TINY, "--facts", SNAP, "--plan-out", str(tmp_path / "p")], capsys)
    doc = json.loads((tmp_path / "p/plan.json").read_text())
    del doc["segments"][1]["sha256"]
    (tmp_path / "p/plan.json").write_text(json.dumps(doc))
    backend = RecordingBackend()
    code, out, err, _ = run(["-l", "--plan-in", str(tmp_path / "p")], capsys, backend)
    assert code == 1 and not backend.plans
    assert "not a usable saved plan: plan.json: segments[1].sha256: missing" in err


def test_reuse_cmdline_with_append(tmp_path, capsys):
    code, out, err, _ = run(["--dry-run", "-l", TINY, "--reuse-cmdline", "--append=extra=1", "--facts", SNAP,
                             "--plan-out", str(tmp_path)], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "plan.json").read_text())
    cmd = next(s for s in doc["segments"] if s["role"] == "cmdline")
    line = (tmp_path / cmd["file"]).read_bytes().rstrip(b"\0").decode()
    assert line.endswith(" extra=1") and line.startswith("mitigations=auto") and "BOOT_IMAGE" not in line


def test_help_and_version(capsys):
    assert run(["-h"], capsys)[0] == 0
    code, out, _, _ = run(["-v"], capsys)
    assert code == 0 and out.startswith("kexloader ")
    assert run(["-?"], capsys)[0] == 1


class FileLoadBackend(RecordingBackend):
    """A recorder whose kexec_file_load answers like a kernel that refuses (errno) or accepts (None)."""

    def __init__(self, refuse=None):
        super().__init__()
        self.refuse = refuse

    def load_file(self, kernel_fd, initrd_fd, cmdline, crash, *, no_cma=False):
        import os
        from kexloader.errors import BackendError
        if self.refuse:
            raise BackendError("kexec_file_load: refused", errno=self.refuse)
        assert cmdline.endswith(b"\0")  # as the kernel takes it
        self.file_loads.append((os.fstat(kernel_fd).st_size, initrd_fd, cmdline[:-1].decode(), crash))

    def unload_file(self, crash):
        from kexloader.errors import BackendError
        if self.refuse:
            raise BackendError("kexec_file_load (unload): refused", errno=self.refuse)
        self.file_loads.append(("unload", crash))


def test_s_uses_kexec_file_load_with_the_files(capsys):
    backend = FileLoadBackend()
    code, out, err, _ = run(["-s", "-l", TINY, "--initrd", TINY, "--append=a b"], capsys, backend)
    assert code == 0, err
    (size, initrd_fd, line, crash), = backend.file_loads
    assert size == Path(TINY).stat().st_size and initrd_fd >= 0 and line == "a b" and not crash
    assert not backend.plans  # the kernel lays it out: no plan of ours


def test_s_inflates_a_compressed_kernel_into_a_memfd(tmp_path, capsys):
    import gzip
    packed = tmp_path / "vmlinuz.gz"
    packed.write_bytes(gzip.compress(Path(TINY).read_bytes()))
    backend = FileLoadBackend()
    assert run(["-s", "-l", str(packed)], capsys, backend)[0] == 0
    assert backend.file_loads[0][0] == Path(TINY).stat().st_size and backend.file_loads[0][1] == -1


@pytest.mark.parametrize("errno_name", ["ENOEXEC", "ENOSYS", "EINVAL", "EOPNOTSUPP"])
def test_s_gives_up_with_253_and_a_falls_back(errno_name, capsys):
    import errno
    code, out, err, backend = run(["-s", "-l", TINY], capsys, FileLoadBackend(getattr(errno, errno_name)))
    assert code == 253 and "kexec_file_load not available" in err and err.count("\n") == 1
    code, out, err, backend = run(["-a", "-l", TINY], capsys, FileLoadBackend(getattr(errno, errno_name)))
    assert code == 0 and backend.plans[False].linux is not None  # fell back to our own layout


def test_s_hard_failures_are_not_fallbacks(capsys):
    import errno
    code, out, err, backend = run(["-a", "-l", TINY], capsys, FileLoadBackend(errno.EKEYREJECTED))
    assert code == 255 and not backend.plans


def test_s_unload_and_fallback(capsys):
    import errno
    backend = FileLoadBackend()
    assert run(["-s", "-u", "-p"], capsys, backend)[0] == 0 and backend.file_loads == [("unload", True)]
    assert run(["-s", "-u"], capsys, FileLoadBackend(errno.ENOSYS))[0] == 253
    assert run(["-a", "-u"], capsys, FileLoadBackend(errno.ENOSYS))[0] == 0


@pytest.mark.parametrize("flag", [[], ["-a"]], ids=["default", "-a"])
def test_the_default_is_a_file_load_first(flag, capsys):
    """kexec-tools 2.0.27+: kexec_file_load first; kexec_load only after ENOSYS/EINVAL/ENOEXEC/EOPNOTSUPP."""
    import errno
    code, out, err, backend = run(flag + ["-l", TINY, "--append=a b"], capsys, FileLoadBackend())
    assert code == 0 and [f[2] for f in backend.file_loads] == ["a b"] and not backend.plans
    code, out, err, backend = run(flag + ["-l", TINY], capsys, FileLoadBackend(errno.EINVAL))
    assert code == 0 and backend.plans[False].linux is not None
    code, out, err, backend = run(flag + ["-l", TINY], capsys, FileLoadBackend(errno.EPERM))  # lockdown: no fallback
    assert code == 255 and "kexec_file_load" in err and err.count("\n") == 1 and not backend.plans
    assert run(flag + ["-u"], capsys, backend := FileLoadBackend())[0] == 0 and backend.file_loads == [("unload", False)]
    code, out, err, backend = run(flag + ["-u"], capsys, FileLoadBackend(errno.EINVAL))  # unload: only ENOSYS falls back
    assert code == 255 and "unload" in err


@pytest.mark.parametrize("image", ["elf/tiny-vmlinux.elf"])
def test_the_default_loads_what_kexec_file_load_cannot_through_kexec_load(image, capsys):
    backend = FileLoadBackend()
    code, out, err, _ = run(["-l", str(ROOT / "fixtures" / image)], capsys, backend)
    assert not backend.file_loads and (code != 0 or backend.plans)  # never handed to kexec_file_load


def test_dry_run_plans_for_kexec_load_unless_s(capsys):
    code, out, err, backend = run(["--dry-run", "-l", TINY, "--facts", SNAP], capsys)
    assert code == 0 and not err and "a real load without -c tries kexec_file_load first" in out.splitlines()[-1]
    code, out, err, backend = run(["-c", "--dry-run", "-l", TINY, "--facts", SNAP], capsys)
    assert code == 0 and "kexec_file_load" not in out
    code, out, err, backend = run(["-s", "--dry-run", "-l", TINY, "--append=x"], capsys)
    assert code == 0 and out.startswith("kexec_file_load(kernel=") and not backend.plans


@pytest.mark.parametrize("argv, code", [
    (["--real-mode", "-l", TINY], 255),  # kexec-tools 2.0.32's file loader: no 16/32-bit entry, 255
    (["-l", TINY, "--entry-32bit", "-s"], 255),
    (["--real-mode", "-l", TINY, "-c"], 1),  # -c after the option: kexec-tools loads, kexloader cannot yet
    (["--load-jump-back-helper", "--entry=0x1000"], 1),  # 2.0.32: "not supported with kexec_file_load", 1
    (["-c", "--load-jump-back-helper", "--entry=0x1000"], 255),  # 2.0.32 -c: "There is kexec kernel loaded", 255
    (["--load-preserve-context", "-l", TINY], 1),
])
def test_refusals_take_kexec_tools_exit_code_once_the_syscall_is_known(argv, code, capsys):
    got, out, err, backend = run(argv, capsys, FileLoadBackend())
    assert got == code and err.count("\n") == 1 and not backend.file_loads and not backend.plans


class NoFileLoad(FileLoadBackend):
    """A backend without kexec_file_load (Xen's): has_file_load False, load_file refuses if called."""

    has_file_load = False

    def load_file(self, *a, **k):
        raise AssertionError("the CLI asked a backend without kexec_file_load to file-load")

    unload_file = load_file


@pytest.mark.parametrize("flag", [["-s"], ["-a"], []], ids=["-s", "-a", "default"])
def test_s_without_kexec_file_load_loads_through_load(flag, capsys):
    code, out, err, backend = run(flag + ["-l", TINY], capsys, NoFileLoad())
    assert code == 0, err
    assert backend.plans[False].linux is not None and not backend.file_loads
    code, out, err, backend = run(flag + ["-l", TINY, "--module=x"], capsys, NoFileLoad())
    assert "kexec_file_load" not in err  # not the file-load refusal: kexec_load's path answers
    assert run(flag + ["-u"], capsys, NoFileLoad())[0] == 0


def test_xen_backend_has_no_file_load():
    import errno
    from kexloader.backends.xen import XenKexecBackend
    from kexloader.errors import BackendError
    backend = XenKexecBackend()
    assert backend.has_file_load is False and backend.supports("file-no-cma") is None
    for call in (lambda: backend.load_file(3, -1, b"\0", False), lambda: backend.unload_file(True)):
        with pytest.raises(BackendError) as e:
            call()
        assert str(e.value) == "syscall kexec_file_load not available"  # kexec-tools' words
        assert e.value.exit_code == 253 and e.value.errno == errno.ENOSYS


def test_s_refuses_multiboot(capsys):
    code, out, err, _ = run(["-s", "-l", TINY, "--module=x"], capsys, FileLoadBackend())
    assert code == 253 and "multiboot" in err


@pytest.mark.parametrize("argv0, prog", [("/sbin/kexec", "kexec"), ("kexec", "kexec"), ("kexloader", "kexloader"),
                                         ("/usr/bin/kexloader", "kexloader"), ("/x/kexloader/__main__.py", "kexloader"),
                                         ("/sbin/kexec.orig", "kexloader")])
def test_the_name_it_is_called_by(argv0, prog, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", [argv0, "--version"])
    assert cli.main(backend_factory=RecordingBackend) == 0
    out = capsys.readouterr().out
    if prog == "kexec":  # kexec-tools' shape first: "kexec-tools X.Y.Z", then who answers
        assert out == f"kexec-tools {cli.options.KEXEC_TOOLS_VERSION} (kexloader {cli.__version__})\n"
        word, version = out.split()[:2]
        assert word == "kexec-tools" and tuple(map(int, version.split("."))) >= (2, 0, 25)
    else:
        assert out == f"kexloader {cli.__version__}\n"  # unchanged
    monkeypatch.setattr("sys.argv", [argv0, "-h"])
    assert cli.main(backend_factory=RecordingBackend) == 0
    assert capsys.readouterr().out.startswith(f"Usage: {prog} [OPTION]... [kernel]\n")
    for argv, words, code in ((["--bogus"], "option --bogus not recognized; see PROG --help", 1),
                              (["-l", "--dry-run"], "no kernel image given; PROG -l KERNEL", 255)):
        monkeypatch.setattr("sys.argv", [argv0, *argv])
        assert cli.main(backend_factory=RecordingBackend) == code
        err = capsys.readouterr().err
        assert err.startswith(f"{prog}: {words.replace('PROG', prog)}") and err.count("\n") == 1


def test_a_kexec_symlink_to_the_script(tmp_path):
    """Through a real symlink named kexec to the installed console script (only --version, --help, -?)."""
    import shutil
    import subprocess
    import sys
    script = Path(sys.executable).parent / "kexloader"
    if not script.exists():
        pytest.skip("no kexloader console script next to this Python")
    link = tmp_path / "kexec"
    link.symlink_to(script)
    r = subprocess.run([str(link), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("kexec-tools ") and "(kexloader " in r.stdout
    r = subprocess.run([str(link), "-?"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("Usage: kexec ") and not r.stdout
    r = subprocess.run([shutil.which("kexloader", path=str(script.parent)), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("Usage: kexloader ")


@pytest.mark.parametrize("exc, code, words", [
    (OverflowError("int too big to convert"), 255, "cannot use this input (OverflowError: int too big"),
    (RecursionError("maximum recursion depth exceeded"), 255, "cannot use this input (RecursionError"),
    (__import__("struct").error("unpack requires a buffer of 8 bytes"), 255, "cannot use this input (error"),
    (__import__("construct").ConstError("parsing expected b'HdrS'\nbut parsed b'\\0'"), 255,
     "cannot use this input (ConstError: parsing expected"),
    (MemoryError(), 255, "out of memory"),
    (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), 1, "text that is not UTF-8"),
    (OSError(28, "No space left on device", "/tmp/x"), 1, "/tmp/x: No space left on device"),
    (RuntimeError("something new"), 255, "unexpected RuntimeError: something new"),
])
def test_anything_that_escapes_is_one_line(exc, code, words, capsys, monkeypatch):
    def boom(*a, **k):
        raise exc
    monkeypatch.setattr(cli.api, "plan_intent", boom)
    got, out, err, backend = run(["--dry-run", "-l", TINY, "--facts", SNAP], capsys)
    assert got == code and err.count("\n") == 1 and words in err and "Traceback" not in err, err
    assert ("please report" in err) == (not isinstance(exc, (MemoryError, OSError)))
    got, out, err, backend = run(["--dry-run", "-d", "-l", TINY, "--facts", SNAP], capsys)
    assert got == code and "Traceback" in err and words in err.splitlines()[-1]  # -d: the traceback, then the line


def test_sigint_is_130(capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.api, "plan_intent", interrupted)
    assert run(["--dry-run", "-l", TINY, "--facts", SNAP], capsys)[0] == 130


@pytest.mark.parametrize("lockdown, words", [
    ("none [integrity] confidentiality\n", "the kernel is locked down (lockdown=integrity"),
    ("none integrity [confidentiality]\n", "(lockdown=confidentiality"),
    ("[none] integrity confidentiality\n", "the kernel refused"),
    (None, "the kernel refused"),  # no securityfs: the generic EPERM line
])
@pytest.mark.parametrize("err", ["EPERM", "EACCES"])  # Debian 12's 6.1 under Secure Boot answers EACCES
def test_c_under_lockdown_says_lockdown_is_why(lockdown, words, err, tmp_path, monkeypatch, capsys):
    import errno
    from kexloader.backends import linux
    if err == "EACCES" and words == "the kernel refused":  # not locked down: the kernel's own words
        words = "kexec_load (unload) failed: Permission denied"
    if lockdown is not None:
        (tmp_path / "sys/kernel/security").mkdir(parents=True)
        (tmp_path / "sys/kernel/security/lockdown").write_text(lockdown)
    monkeypatch.setattr(linux, "raw_syscall", lambda *a: -getattr(errno, err))
    backend = linux.LinuxKexecBackend(root=tmp_path, kmsg=tmp_path / "no-kmsg")
    code = cli.main(["-c", "-u"], backend_factory=lambda: backend)
    err = capsys.readouterr().err
    assert code == 255 and words in err and err.count("\n") == 1


# ---- --pass-memmap-cmdline, --reuse-video-type, --dtb (kexec_load path; kexec_file_load ignores them)

KDUMP_SNAP = str(ROOT / "fixtures/snapshots/ovmf-6g-kdump.json")


def _plan(monkeypatch, **intent):
    from kexloader import api
    monkeypatch.setattr(api, "rng_seed", lambda: bytes(32))  # the one random input: fixed, so plans compare
    return api.plan_intent(api.LoadIntent(kernel=TINY, append="quiet", **intent), api.load_facts(KDUMP_SNAP))


def _segment(plan, role):
    from kexloader.model import Role
    seg, = [s for s in plan.segments if s.role == Role(role)]
    return bytes(seg.data)


def test_memmap_parameters_follow_kexec_tools_shape():
    from kexloader.crash import memmap_parameters
    from kexloader.model import E820_ACPI, E820_NVS, E820_RAM, E820_RESERVED, MemRegion, Range
    got = memmap_parameters([
        MemRegion(Range(0x1000, 0x9E000), E820_RAM),  # 4 KiB .. 636 KiB
        MemRegion(Range(0x100000, 0x10000), E820_RAM),  # 64 KiB of RAM: too small to spend the command line on
        MemRegion(Range(0xBFFD0A00, 0x1000), E820_ACPI),  # not KiB-aligned: rounded outwards
        MemRegion(Range(0xBFFE0000, 0x20000), E820_NVS),
        MemRegion(Range(0xFEC00000, 0x1000), E820_RESERVED),  # not passed, as kexec-tools
    ])
    assert got == ("memmap=exactmap", "memmap=632K@4K", f"memmap=5K#{0xBFFD0A00 // 1024}K",
                   f"memmap=128K#{0xBFFE0000 // 1024}K")


def test_pass_memmap_cmdline_gives_the_crash_kernel_its_map(monkeypatch):
    from kexloader import api, crash
    plain = _segment(_plan(monkeypatch, crash=True), "cmdline").rstrip(b"\0").decode()
    plan = _plan(monkeypatch, crash=True, pass_memmap=True)
    line = _segment(plan, "cmdline").rstrip(b"\0").decode()
    added = line.split()[len(plain.split()):]
    assert line.startswith(plain) and added[0] == "memmap=exactmap" and len(added) > 1
    regions = api.load_facts(KDUMP_SNAP).crash_regions()
    for word in added[1:]:  # every RAM entry lies in the crash region or the first MiB the crash kernel is given
        size, sep, start = word.removeprefix("memmap=").removesuffix("K").partition("K@")
        if sep:
            lo, hi = int(start) * 1024, (int(start) + int(size)) * 1024
            assert hi <= 0x100000 or any(r.start <= lo and hi <= r.end for r in regions), word
    assert crash.memmap_parameters  # the same function the docs name
    # not a crash load: kexec-tools passes nothing, and the plan is the same with or without it
    assert _segment(_plan(monkeypatch, pass_memmap=True), "cmdline") == _segment(_plan(monkeypatch), "cmdline")


def test_reuse_video_type_is_what_kexloader_always_does(monkeypatch, capsys):
    from kexloader import api
    running = api.load_facts(KDUMP_SNAP).boot_params
    zero = _segment(_plan(monkeypatch), "boot-params")
    assert running and zero[0x0F] == running[0x0F]  # screen_info.orig_video_isVGA: the running kernel's
    code, out, err, _ = run(["-c", "--dry-run", "-l", TINY, "--facts", KDUMP_SNAP, "--reuse-video-type"], capsys)
    assert code == 0 and not err


def test_dtb_goes_in_setup_data_on_the_kexec_load_path(tmp_path, monkeypatch, capsys):
    import struct
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    import kexec_tools_cli
    dtb = tmp_path / "tiny.dtb"
    dtb.write_bytes(kexec_tools_cli.minimal_fdt())
    chain = _segment(_plan(monkeypatch, dtb=str(dtb)), "setup-data")
    found, at = [], 0
    while True:  # walk the chain inside the one segment: next is a physical address, so follow by offsets
        nxt, kind, length = struct.unpack_from("<QII", chain, at)
        found.append((kind, chain[at + 16:at + 16 + length]))
        if not nxt:
            break
        at = (at + 16 + length + 7) & ~7
    assert (2, dtb.read_bytes()) in found and found[-1][0] == 2  # SETUP_DTB, last
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"not a device tree" * 4)
    code, out, err, backend = run(["-c", "-l", TINY, f"--dtb={bad}"], capsys)
    assert code == 255 and "not a flattened device tree" in err and err.count("\n") == 1 and not backend.plans
    code, out, err, backend = run(["-l", TINY, f"--dtb={dtb}"], capsys, FileLoadBackend())
    assert code == 0 and len(backend.file_loads) == 1 and "--dtb ignored" in err and err.count("\n") == 1
