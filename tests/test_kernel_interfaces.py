"""The kernel's newer kexec interfaces, each detected at run time (issue 10 item 4):

* /sys/kernel/kexec/* (6.19+) for -S, -S -p and --print-ckr-size, with the old /sys/kernel/kexec_* as fallback;
* -d: KEXEC_FILE_DEBUG with -s where the kernel has it (there is no kexec_load debug flag in 7.3), and the
  kernel's log of the call on stderr;
* --hotplug: KEXEC_UPDATE_ELFCOREHDR, an elfcorehdr segment with room for the kernel's header, left out of the
  purgatory's digest; refused in one line (exit 1, as kexec-tools) without CONFIG_CRASH_HOTPLUG;
* crashkernel=...,cma: the CMA ranges out of the dump, RAM for the crash kernel (as kexec_file_load does);
* --no-cma: KEXEC_FILE_NO_CMA with -s; refused in one line (exit 253) by a kernel without it.

Fake kernels here are a fake /sys tree, the RecordingBackend, or a fake raw_syscall that checks flags the
way kernel/kexec.c and kernel/kexec_file.c do; nothing reaches the host's kernel.
"""

from __future__ import annotations

import dataclasses
import errno
import io
from pathlib import Path

import pytest

from kexloader import api, cli, system
from kexloader.backends import linux
from kexloader.backends.linux import LinuxKexecBackend, kernel_log, kexec_loaded, parse_kmsg
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import BackendError
from kexloader.formats import elfcore
from kexloader.kexec_sysfs import KEXEC_SYSFS_FILES
from kexloader.kexec_abi import KEXEC_UPDATE_ELFCOREHDR
from kexloader.model import E820_RAM, KexecSysfs, LoadRequest, MiB, Range

ROOT = Path(__file__).resolve().parent.parent
TINY_PATH = ROOT / "fixtures/bzimage/tiny.bzImage"
TINY = TINY_PATH.read_bytes()
QEMU_SNAP = ROOT / "fixtures/snapshots/qemu-debian12-kdump-384m.json"
QEMU = system.load_snapshot(QEMU_SNAP)  # Debian 12's 6.1 in QEMU: no kexec facts in the snapshot

ELFCOREHDR_SIZE_73 = 917616  # /sys/kernel/kexec/crash_elfcorehdr_size on Debian's 7.3.4 (measured in QEMU)
CMA = Range(0x69000000, 0x4000000)  # crash_cma_ranges "69000000-6cffffff" (measured: crashkernel=64M,cma)
CMA_QEMU = Range(0x41000000, 0x4000000)  # a CMA range outside the QEMU snapshot's crash region
KEXEC_73 = KexecSysfs(directory="/sys/kernel/kexec", loaded=False, crash_loaded=False, crash_size=384 * MiB,
                      crash_elfcorehdr_size=ELFCOREHDR_SIZE_73, cpu_crash_hotplug=0, memory_crash_hotplug=0)
KEXEC_61 = KexecSysfs(directory="/sys/kernel", loaded=False, crash_loaded=False, crash_size=384 * MiB)
FACTS_73 = dataclasses.replace(QEMU, kexec=KEXEC_73)
FACTS_61 = dataclasses.replace(QEMU, kexec=KEXEC_61)


def run(argv, capsys, backend=None):
    backend = backend or RecordingBackend()
    code = cli.main(argv, backend_factory=lambda: backend)
    out, err = capsys.readouterr()
    return code, out, err, backend


def snapshot(tmp_path, facts, name="facts.json") -> str:
    path = tmp_path / name
    system.save_snapshot(facts, path)
    return str(path)


# ------------------------------------------------------------------------------ the sysfs files

def sys_tree(root: Path, layout: str, values: dict[str, str]) -> Path:
    """A fake /sys/kernel. layout "new": files in kexec/ plus the old names as symlinks (6.19+, as measured on
    7.3.4); "old": only /sys/kernel/kexec_* (6.1)."""
    kernel = root / "sys/kernel"
    kernel.mkdir(parents=True)
    for attribute, text in values.items():
        new, old = KEXEC_SYSFS_FILES[attribute]
        if layout == "new":
            (kernel / "kexec").mkdir(exist_ok=True)
            (kernel / "kexec" / new).write_text(text)
            (kernel / old).symlink_to(f"kexec/{new}")
        else:
            (kernel / old).write_text(text)
    return root


@pytest.mark.parametrize("layout, directory", [("new", "/sys/kernel/kexec"), ("old", "/sys/kernel")])
def test_kexec_sysfs_new_directory_then_old_names(tmp_path, layout, directory):
    root = sys_tree(tmp_path, layout, {"loaded": "1\n", "crash_loaded": "0\n", "crash_size": "402653184\n",
                                       "crash_elfcorehdr_size": "917616\n",
                                       "crash_cma_ranges": "69000000-6cffffff\n100000000-10fffffff\n"})
    hp = tmp_path / "sys/devices/system"
    for kind, value in (("cpu", "1"), ("memory", "0")):
        (hp / kind).mkdir(parents=True)
        (hp / kind / "crash_hotplug").write_text(value + "\n")
    k = system.read_kexec_sysfs(root)
    assert k.directory == directory
    assert (k.loaded, k.crash_loaded, k.crash_size, k.crash_elfcorehdr_size) == (True, False, 384 * MiB, 917616)
    assert k.crash_cma_ranges == (CMA, Range(0x100000000, 0x10000000))
    assert (k.cpu_crash_hotplug, k.memory_crash_hotplug) == (1, 0) and k.hotplug_capable
    assert kexec_loaded(root, crash=False) and not kexec_loaded(root, crash=True)


def test_the_new_directory_wins_when_both_exist(tmp_path):
    """6.19+ keeps the old names as symlinks; were they ever plain files, the new directory is the source."""
    root = sys_tree(tmp_path, "old", {"loaded": "0\n"})
    (root / "sys/kernel/kexec").mkdir()
    (root / "sys/kernel/kexec/loaded").write_text("1\n")
    assert kexec_loaded(root, False) is True


def test_a_kernel_without_kexec_files(tmp_path):
    (tmp_path / "sys/kernel").mkdir(parents=True)
    k = system.read_kexec_sysfs(tmp_path)
    assert k == KexecSysfs() and not k.hotplug_capable
    with pytest.raises(BackendError, match="kexec_crash_loaded"):
        kexec_loaded(tmp_path, crash=True)


def test_61_has_no_hotplug_files(tmp_path):
    root = sys_tree(tmp_path, "old", {"loaded": "0\n", "crash_loaded": "0\n", "crash_size": "0\n"})
    assert not system.read_kexec_sysfs(root).hotplug_capable


@pytest.mark.parametrize("text, want", [
    ("", ()), ("69000000-6cffffff\n", (CMA,)), ("bogus\n6cffffff-69000000\n", ()),
    ("100000000-10c7fffff\n69000000-6cffffff\n", (CMA, Range(0x100000000, 0xC800000)))])
def test_parse_cma_ranges(text, want):
    assert system.parse_cma_ranges(text) == want


def test_snapshot_keeps_the_kexec_facts(tmp_path):
    facts = dataclasses.replace(FACTS_73, kexec=dataclasses.replace(KEXEC_73, crash_cma_ranges=(CMA,)))
    back = system.load_snapshot(Path(snapshot(tmp_path, facts)))
    assert back.kexec == facts.kexec and back.crash_cma_ranges() == (CMA,)
    assert system.load_snapshot(QEMU_SNAP).kexec is None  # older snapshots: unknown, not "absent"


@pytest.mark.parametrize("layout", ["new", "old"])
def test_status_reads_the_files_of_either_kernel(tmp_path, capsys, layout):
    root = sys_tree(tmp_path, layout, {"loaded": "0\n", "crash_loaded": "1\n"})
    backend = LinuxKexecBackend(root=root)
    assert run(["-S"], capsys, backend)[0] == 1  # kexec-tools: -S alone asks about the crash image
    assert run(["-S", "-p"], capsys, backend)[0] == 1
    assert run(["-S", "-l"], capsys, backend)[0] == 0
    (root / "sys/kernel" / ("kexec/crash_loaded" if layout == "new" else "kexec_crash_loaded")).write_text("0\n")
    assert run(["-S", "-p"], capsys, backend)[0] == 0


def test_status_without_kexec_is_one_line(tmp_path, capsys):
    (tmp_path / "sys/kernel").mkdir(parents=True)
    code, out, err, _ = run(["-S", "-p"], capsys, LinuxKexecBackend(root=tmp_path))
    assert code == 255 and err.count("\n") == 1 and "CONFIG_KEXEC" in err


def test_print_ckr_size_falls_back_to_the_sysfs_size(capsys, monkeypatch):
    """Without a readable /proc/iomem (not root: zeros), the kernel's crash_size answers."""
    no_iomem = dataclasses.replace(FACTS_73, iomem=())
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: no_iomem)
    assert run(["--print-ckr-size"], capsys)[:2] == (0, f"{384 * MiB}\n")
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: FACTS_73)  # iomem: its region, as kexec-tools
    assert run(["--print-ckr-size"], capsys)[:2] == (0, f"{QEMU.crash_regions()[-1].size}\n")
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: dataclasses.replace(no_iomem, kexec=None))
    assert run(["--print-ckr-size"], capsys)[:2] == (0, "0\n")


# --------------------------------------------------------------------- a fake kernel for the flags

class FakeKernel:
    """raw_syscall for kexec_load / kexec_file_load that checks flags first, as the kernel does."""

    def __init__(self, load_flags=0x1 | 0x2 | 0x4 | 0x8, file_flags=0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20,
                 log: Path | None = None):
        self.load_flags, self.file_flags, self.log = load_flags, file_flags, log
        self.calls = []

    def __call__(self, nr, *args):
        self.calls.append((nr, args))
        if nr == linux.SYS_KEXEC_LOAD:
            entry, count, segs, flags = args
            if flags & 0xFFFF & ~self.load_flags:
                return -errno.EINVAL
            if not segs:
                return -errno.EFAULT
        elif nr == linux.SYS_KEXEC_FILE_LOAD:
            kfd, ifd, size, line, flags = args
            if flags & ~self.file_flags:
                return -errno.EINVAL
            if kfd == (1 << 64) - 1:
                return -errno.EBADF
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write("6,1234,5678,-;kexec_file: Loaded ELF headers at 0x7c000000 bufsz=0x1000\n"
                        " SUBSYSTEM=kexec\n")
        return 0

    def flags_of_loads(self):
        return [args[-1] for nr, args in self.calls
                if (nr == linux.SYS_KEXEC_LOAD and args[2]) or (nr == linux.SYS_KEXEC_FILE_LOAD
                                                               and args[0] != (1 << 64) - 1)]


def test_flag_probes_tell_known_from_unknown(monkeypatch):
    k73 = FakeKernel()
    monkeypatch.setattr(linux, "raw_syscall", k73)
    assert linux.flag_supported(linux.SYS_KEXEC_LOAD, linux.KEXEC_DEBUG) is False  # 7.3: EINVAL
    assert linux.flag_supported(linux.SYS_KEXEC_LOAD, KEXEC_UPDATE_ELFCOREHDR) is True  # EFAULT: got past the check
    assert linux.flag_supported(linux.SYS_KEXEC_FILE_LOAD, linux.KEXEC_FILE_NO_CMA) is True  # EBADF
    monkeypatch.setattr(linux, "raw_syscall", FakeKernel(load_flags=0x3, file_flags=0x7))  # 6.1
    assert linux.flag_supported(linux.SYS_KEXEC_FILE_LOAD, linux.KEXEC_FILE_NO_CMA) is False
    monkeypatch.setattr(linux, "raw_syscall", lambda *a: -errno.EPERM)
    assert linux.flag_supported(linux.SYS_KEXEC_FILE_LOAD, linux.KEXEC_FILE_DEBUG) is None
    # no probe ever loads anything: NULL segments for kexec_load, fd -1 for kexec_file_load
    assert all(args[2] == 0 for nr, args in k73.calls if nr == linux.SYS_KEXEC_LOAD)
    assert all(args[0] == (1 << 64) - 1 for nr, args in k73.calls if nr == linux.SYS_KEXEC_FILE_LOAD)


@pytest.mark.parametrize("kernel, debug, no_cma, want", [
    ("7.3", True, False, 0x4 | 0x8),  # NO_INITRAMFS | DEBUG
    ("6.1", True, False, 0x4),  # no KEXEC_FILE_DEBUG before 6.7: loaded without it
    ("7.3", False, True, 0x4 | 0x10),
    ("7.3", True, True, 0x4 | 0x8 | 0x10)])
def test_file_load_flags(monkeypatch, kernel, debug, no_cma, want):
    fake = FakeKernel() if kernel == "7.3" else FakeKernel(load_flags=0x3, file_flags=0x7)
    monkeypatch.setattr(linux, "raw_syscall", fake)
    backend = LinuxKexecBackend(kmsg=Path("/nonexistent"))
    backend.debug = debug
    backend.load_file(3, -1, b"console=ttyS0\0", False, no_cma=no_cma)
    assert fake.flags_of_loads() == [want]


def test_kexec_load_has_no_debug_flag_on_73(monkeypatch):
    """-c -d: 7.3 has no kexec_load debug flag (kexec-tools' KEXEC_DEBUG gives EINVAL there): not sent."""
    from kexloader.model import Plan, Segment
    plan = Plan(entry=0x1000000, flags=linux.KEXEC_ARCH_X86_64, segments=(Segment("kernel", 0x1000000, 4096, b"x"),))
    for fake, want in ((FakeKernel(), 0x3E0000), (FakeKernel(load_flags=0x1F), 0x3E0010)):
        monkeypatch.setattr(linux, "raw_syscall", fake)
        backend = LinuxKexecBackend(kmsg=Path("/nonexistent"))
        backend.debug = True
        backend.load(plan)
        assert fake.flags_of_loads() == [want]


def test_debug_prints_what_the_kernel_logged_during_the_call(monkeypatch, tmp_path, capsys):
    log = tmp_path / "kmsg"
    log.write_text("6,1,1,-;an older record, not ours\n")
    monkeypatch.setattr(linux, "raw_syscall", FakeKernel(log=log))
    backend = LinuxKexecBackend(kmsg=log)
    backend.debug = True
    backend.load_file(3, 4, b"x\0", True)
    err = capsys.readouterr().err
    assert "kernel: kexec_file: Loaded ELF headers at 0x7c000000 bufsz=0x1000\n" in err
    assert "older record" not in err and "SUBSYSTEM" not in err


def test_kernel_log_without_kmsg_is_silent():
    out = io.StringIO()
    with kernel_log(Path("/nonexistent/kmsg"), out):
        pass
    assert out.getvalue() == ""


def test_parse_kmsg_records():
    raw = b"6,339,5140900,-;NET: Registered protocol family 10\n SUBSYSTEM=net\n4,340,5690716,c;kexec: x=1\n"
    assert parse_kmsg(raw) == ["NET: Registered protocol family 10", "kexec: x=1"]


def test_s_d_sends_debug_and_says_so(capsys):
    backend = RecordingBackend()
    code, out, err, _ = run(["-s", "-d", "-l", str(TINY_PATH)], capsys, backend)
    assert code == 0, err
    assert backend.file_options == [{"no_cma": False, "debug": True}]


# ----------------------------------------------------------------------------------------- --no-cma

def test_s_no_cma_reaches_the_syscall(capsys):
    backend = RecordingBackend()
    assert run(["-s", "--no-cma", "-l", str(TINY_PATH)], capsys, backend)[0] == 0
    assert backend.file_options == [{"no_cma": True, "debug": False}]


def test_s_no_cma_on_a_kernel_without_it_is_one_line_253(capsys):
    backend = RecordingBackend(supported={"file-no-cma": False})
    code, out, err, _ = run(["-s", "--no-cma", "-l", str(TINY_PATH)], capsys, backend)
    assert code == 253 and err.count("\n") == 1 and "KEXEC_FILE_NO_CMA" in err and "Traceback" not in err
    assert not backend.file_loads and not backend.plans


def test_a_no_cma_falls_back_and_c_no_cma_is_plain_kexec_load(capsys):
    backend = RecordingBackend(supported={"file-no-cma": False})
    assert run(["-a", "--no-cma", "-l", str(TINY_PATH)], capsys, backend)[0] == 0
    assert not backend.file_loads and backend.plans[False].linux is not None
    backend = RecordingBackend(supported={"file-no-cma": False})
    assert run(["--no-cma", "-l", str(TINY_PATH)], capsys, backend)[0] == 0 and False in backend.plans


# ---------------------------------------------------------------------------------------- --hotplug

def hotplug_plan(facts=FACTS_73, hotplug=True):
    req = LoadRequest(kernel=TINY, kernel_name="tiny", cmdline="irqpoll", crash=True, hotplug=hotplug)
    return api.make_plan(req, facts)


def test_hotplug_plan_has_the_flag_and_room_for_the_kernels_header():
    plan = hotplug_plan()
    assert plan.flags == 0x3E0000 | 0x1 | KEXEC_UPDATE_ELFCOREHDR
    (hdr,) = [s for s in plan.segments if s.role == "elfcorehdr"]
    assert hdr.memsz >= ELFCOREHDR_SIZE_73 + elfcore.EHDR_SIZE and hdr.memsz % 4096 == 0
    assert bytes(hdr.data[:4]) == b"\x7fELF"  # how the kernel finds the segment to rewrite
    assert any("does not verify it" in n for n in plan.notes)
    # the crash kernel does not get the elfcorehdr's room as RAM: elfcorehdr= and e820 leave it all out
    plain = hotplug_plan(hotplug=False)
    assert plain.flags & KEXEC_UPDATE_ELFCOREHDR == 0
    assert [s.memsz for s in plain.segments if s.role == "elfcorehdr"] == [4096]


def test_hotplug_digest_leaves_the_elfcorehdr_out():
    from kexloader.handoff import segments_digest
    plan = hotplug_plan()
    (purg,) = [s for s in plan.segments if s.role == "purgatory"]
    others = [s for s in plan.segments if s.role not in ("purgatory", "elfcorehdr")]
    _, digest = segments_digest(others)
    assert digest in bytes(purg.data)
    _, with_hdr = segments_digest(others + [s for s in plan.segments if s.role == "elfcorehdr"])
    assert with_hdr not in bytes(purg.data)


@pytest.mark.parametrize("facts", [FACTS_61, QEMU], ids=["6.1", "no-kexec-facts"])
def test_hotplug_refused_in_one_line_without_crash_hotplug(tmp_path, capsys, facts):
    argv = ["-p", str(TINY_PATH), "--hotplug", "--dry-run", f"--facts={snapshot(tmp_path, facts)}"]
    code, out, err, backend = run(argv, capsys)
    assert code == 1 and err.count("\n") == 1 and "CONFIG_CRASH_HOTPLUG" in err and "Traceback" not in err
    assert not backend.plans


def test_s_hotplug_is_the_kernels_job_but_checked(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: FACTS_61)
    code, out, err, backend = run(["-s", "-p", str(TINY_PATH), "--hotplug"], capsys)
    assert code == 1 and "CONFIG_CRASH_HOTPLUG" in err and not backend.file_loads
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: FACTS_73)
    code, out, err, backend = run(["-s", "-p", str(TINY_PATH), "--hotplug"], capsys)
    assert code == 0, err
    assert backend.file_loads[0][3] is True and backend.file_options == [{"no_cma": False, "debug": False}]


def test_p_hotplug_dry_run_on_73(tmp_path, capsys):
    argv = ["-p", str(TINY_PATH), "--hotplug", "--dry-run", f"--facts={snapshot(tmp_path, FACTS_73)}"]
    code, out, err, _ = run(argv, capsys)
    assert code == 0, err
    assert "flags 0x3e0005" in out and "room for hotplug" in out


class HotplugBackend(RecordingBackend):
    def __init__(self, active):
        super().__init__()
        self.active = active

    def hotplug_active(self):
        return self.active


def test_after_a_hotplug_load_the_kernel_must_say_it_updates(monkeypatch, capsys):
    monkeypatch.setattr(system, "read_facts", lambda *a, **k: FACTS_73)
    code, out, err, backend = run(["-p", str(TINY_PATH), "--hotplug"], capsys, HotplugBackend(True))
    assert code == 0, err and backend.plans[True].flags & KEXEC_UPDATE_ELFCOREHDR
    code, out, err, backend = run(["-p", str(TINY_PATH), "--hotplug"], capsys, HotplugBackend(False))
    assert code == 1 and err.count("\n") == 1 and "crash_hotplug read 0" in err


def test_hotplug_active_reads_crash_hotplug(tmp_path):
    backend = LinuxKexecBackend(root=tmp_path)
    assert backend.hotplug_active() is None
    (tmp_path / "sys/devices/system/memory").mkdir(parents=True)
    (tmp_path / "sys/devices/system/memory/crash_hotplug").write_text("0\n")
    assert backend.hotplug_active() is False
    (tmp_path / "sys/devices/system/memory/crash_hotplug").write_text("1\n")
    assert backend.hotplug_active() is True


# ---------------------------------------------------------------------------------- crashkernel=,cma

def test_cma_ranges_are_out_of_the_dump_and_ram_for_the_crash_kernel():
    """As arch/x86/kernel/crash.c for kexec_file_load: elf_header_exclude_ranges() leaves crashk_cma_ranges
    out of the PT_LOADs; crash_setup_memmap_entries() adds them to the crash kernel's e820 as RAM."""
    CMA = CMA_QEMU
    facts = dataclasses.replace(FACTS_73, kexec=dataclasses.replace(KEXEC_73, crash_cma_ranges=(CMA,)))
    plan = hotplug_plan(facts, hotplug=False)
    (hdr,) = [s for s in plan.segments if s.role == "elfcorehdr"]
    loads = [p for p in elfcore.parse_headers(bytes(hdr.data)).phdrs if p.p_type == elfcore.PT_LOAD]
    assert all(not Range(p.p_paddr, p.p_memsz).overlaps(CMA) for p in loads)
    assert any(p.p_paddr + p.p_memsz == CMA.start for p in loads)  # RAM up to the CMA range stays
    assert any(p.p_paddr == CMA.end for p in loads)  # and after it
    (bp_seg,) = [s for s in plan.segments if s.role == "boot-params"]
    e820 = _e820(bytes(bp_seg.data))
    assert (CMA.start, CMA.size, E820_RAM) in e820
    assert any("crash CMA" in n for n in plan.notes)
    without = hotplug_plan(FACTS_73, hotplug=False)
    assert (CMA.start, CMA.size, E820_RAM) not in _e820(bytes([s for s in without.segments
                                                                if s.role == "boot-params"][0].data))


def _e820(page: bytes) -> list[tuple[int, int, int]]:
    import struct
    count = page[0x1E8]
    return [struct.unpack_from("<QQI", page, 0x2D0 + 20 * i) for i in range(count)]


# ------------------------------------------------------------------------- the 7.3.4 guest's snapshot

SNAP_73 = ROOT / "fixtures/snapshots/qemu-debian13bpo-7.3-cma-kdump-384m.json"  # python3 -m kexloader.system save
# in QEMU, Debian's 7.3.4, 2 CPUs, 2 GiB, crashkernel=384M crashkernel=64M,cma


def test_the_73_snapshot_has_the_new_kexec_facts():
    facts = system.load_snapshot(SNAP_73)
    k = facts.kexec
    assert k.directory == "/sys/kernel/kexec" and k.crash_size == 384 * MiB
    assert k.crash_elfcorehdr_size == ELFCOREHDR_SIZE_73 and k.hotplug_capable
    assert facts.crash_cma_ranges() == (Range(0x61000000, 64 * MiB),)
    assert facts.crash_regions() == (Range(0x65000000, 384 * MiB),)  # CMA is not in /proc/iomem: only in sysfs


def test_golden_hotplug_crash_plan_on_73(request):
    """-p --hotplug on the 7.3.4 snapshot (CMA out of the dump, RAM for the crash kernel; the elfcorehdr's
    room). `pytest --update-golden` rewrites it: review the diff."""
    import json

    from kexloader import plan as plans

    req = LoadRequest(kernel=TINY, kernel_name="tiny.bzImage", cmdline="console=ttyS0 irqpoll nr_cpus=1",
                      initrd=b"initrd" * 1000, initrd_name="initrd.img", crash=True, hotplug=True, rng_seed=None)
    plan = api.make_plan(req, system.load_snapshot(SNAP_73))
    doc = plans.to_json(plan, files=False)
    doc["notes"] = [n for n in doc["notes"] if not n.startswith("facts:")]
    path = ROOT / "fixtures/golden" / f"tiny-bzimage-kdump-hotplug@{SNAP_73.stem}.json"
    if request.config.getoption("--update-golden"):
        path.write_text(json.dumps(doc, indent=1) + "\n")
    assert path.exists(), f"no golden plan {path.name}: run pytest --update-golden and review it"
    assert doc == json.loads(path.read_text())
    (hdr,) = [s for s in plan.segments if s.role == "elfcorehdr"]
    loads = [p for p in elfcore.parse_headers(bytes(hdr.data)).phdrs if p.p_type == elfcore.PT_LOAD]
    ram = sorted((p.p_paddr, p.p_memsz) for p in loads if p.p_vaddr < 0xFFFFFFFF80000000)
    # System RAM [0x100000, 0x7ffe0000) minus CMA [0x61000000, 0x65000000) and crash [0x65000000, 0x7d000000)
    assert ram == [(0x100000, 0x61000000 - 0x100000), (0x7D000000, 0x7FFE0000 - 0x7D000000)]
    e820 = _e820(bytes([s for s in plan.segments if s.role == "boot-params"][0].data))
    # CMA touches the crash region here: one RAM entry from the CMA start up to the elfcorehdr
    assert any(a <= 0x61000000 and 0x65000000 <= a + n and t == E820_RAM for a, n, t in e820), e820
