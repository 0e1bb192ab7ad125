"""Unified kernel images built with Debian 13's own ukify and systemd-stub, several initrds, boot loader
entries and UKI addons: the plans (-c), what kexec_file_load gets (-s), --inspect, and bad input.

The UKIs are built here from the tiny bzImage fixture and from Debian's kernel in the cache, with
tools/uki-tools.sh's unpacked ukify (run with this Python, which has pefile) and linuxx64.efi.stub.
"""

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kexloader import api, bootentries, cli, initramfs, system
from kexloader.backends.recording import RecordingBackend
from kexloader.errors import KexloaderError, MalformedImageError, UnknownFormatError, UsageError
from kexloader.formats import bzimage as bz
from kexloader.formats import pe
from kexloader.images import uki
from kexloader.model import PAGE_SIZE, LoadRequest, align_up

ROOT = Path(__file__).resolve().parent.parent
TINY_PATH = ROOT / "fixtures/bzimage/tiny.bzImage"
TINY = TINY_PATH.read_bytes()
SNAP = ROOT / "fixtures/snapshots/devhost.json"
DEVHOST = system.load_snapshot(SNAP)
CACHE = Path(os.environ.get("KEXLOADER_CACHE", Path.home() / ".cache/kexloader"))
TOOLS = CACHE / "uki-tools"
UKIFY = TOOLS / "usr/bin/ukify"
STUB = TOOLS / "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
ADDON_STUB = TOOLS / "usr/lib/systemd/boot/efi/addonx64.efi.stub"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

UCODE = b"UCODE"  # odd lengths, so the 4-byte padding shows
INITRD = b"INITRD!"
EXTRA = b"XTR"
CMDLINE = "console=ttyS0 uki=tiny"
OSREL = 'NAME="Tiny"\nID=tiny\nVERSION_ID=1.0\nPRETTY_NAME="Tiny UKI 1.0"\n'


def _missing(msg):
    if IN_CI:
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def ukify():
    """Run Debian's ukify: ukify(args...) -> None; the tools are fetched once (tools/uki-tools.sh)."""
    try:
        import pefile  # noqa: F401  ukify needs it
    except ImportError:
        _missing("pefile is not installed (pip install -e '.[test]')")
    if not (UKIFY.exists() and STUB.exists()):
        if not (CACHE / "apt/apt.conf").exists() or not shutil.which("apt-get"):
            _missing(f"no {UKIFY}: run tools/install-deps.sh")
        r = subprocess.run(["bash", str(ROOT / "tools/uki-tools.sh"), str(CACHE)], capture_output=True, text=True)
        if r.returncode != 0:
            _missing(f"tools/uki-tools.sh failed: {r.stderr.strip()[-300:]}")

    def run(*args):
        r = subprocess.run([sys.executable, str(UKIFY), "build", *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return run


@pytest.fixture(scope="session")
def built(tmp_path_factory, ukify):
    """Paths of the UKIs and parts the tests use."""
    d = tmp_path_factory.mktemp("uki")
    (d / "ucode").write_bytes(UCODE)
    (d / "initrd").write_bytes(INITRD)
    (d / "extra").write_bytes(EXTRA)
    (d / "os-release").write_text(OSREL)
    common = ["--linux", TINY_PATH, "--uname", "0.0-tiny", "--stub", STUB, "--os-release", f"@{d / 'os-release'}"]
    ukify(*common, "--initrd", d / "initrd", "--microcode", d / "ucode", "--cmdline", CMDLINE + "\n",
          "--output", d / "tiny.efi")
    # two profiles: 0 (the base's own .profile) keeps the base command line, 1 ("rescue") has its own
    ukify("--stub", ADDON_STUB, "--profile", "ID=rescue\nTITLE=Rescue", "--cmdline", "console=ttyS0 rescue", "--output", d / "p1.efi")
    ukify(*common, "--initrd", d / "initrd", "--microcode", d / "ucode", "--cmdline", CMDLINE,
          "--profile", "ID=default\nTITLE=Default", "--join-profile", d / "p1.efi", "--output", d / "profiles.efi")
    # a UKI whose .linux is not a bzImage
    (d / "notlinux").write_bytes(b"\x7fELF" + bytes(4096))
    ukify("--linux", d / "notlinux", "--uname", "0", "--stub", STUB, "--output", d / "notlinux.efi")
    # a command-line addon
    ukify("--stub", ADDON_STUB, "--cmdline", "addon=local", "--output", d / "local.addon.efi")
    ukify("--stub", ADDON_STUB, "--cmdline", "addon=global", "--output", d / "global.addon.efi")
    ukify("--stub", ADDON_STUB, "--cmdline", "addon=other", "--uname", "9.9-other", "--output", d / "other.addon.efi")
    (d / "addinit").write_bytes(b"ADDINIT")
    (d / "adduc").write_bytes(b"ADDUC")
    (d / "zuc").write_bytes(b"ZUC")
    ukify("--stub", ADDON_STUB, "--initrd", d / "addinit", "--microcode", d / "adduc", "--cmdline", "addon=parts",
          "--output", d / "parts.addon.efi")
    ukify("--stub", ADDON_STUB, "--microcode", d / "zuc", "--output", d / "zuc.addon.efi")
    return d


def segs_of(plan, role):
    return [s for s in plan.segments if s.role == role]


def initramfs_seen(plan):
    """The initramfs as the next kernel reads it: [ramdisk_image, +ramdisk_size) of the zero page,
    gathered from the segments (zero where no segment has data)."""
    page = bytes(segs_of(plan, "boot-params")[0].data)
    start = struct.unpack_from("<I", page, 0x218)[0] | struct.unpack_from("<I", page, 0x0C0)[0] << 32
    size = struct.unpack_from("<I", page, 0x21C)[0] | struct.unpack_from("<I", page, 0x0C4)[0] << 32
    out = bytearray(size)
    for s in plan.segments:
        if s.mem < start + size and start < s.mem + s.memsz:
            data = bytes(s.data)
            lo = max(s.mem, start)
            hi = min(s.mem + len(data), start + size)
            if hi > lo:
                out[lo - start:hi - start] = data[lo - s.mem:hi - s.mem]
    return bytes(out)


def page_joined(*parts):
    """What initramfs.place hands the kernel: each part but the last padded to a page."""
    return b"".join(p + bytes(align_up(len(p), PAGE_SIZE) - len(p)) for p in parts[:-1]) + parts[-1]


def four_joined(*parts):
    """What systemd-stub (and -s) hands the kernel: each part padded to 4 bytes."""
    return b"".join(p + bytes(-len(p) % 4) for p in parts)


def meta(profile=None, osrel=OSREL):
    """The cpio archives systemd-stub adds from .osrel and .profile (/.extra/os-release, /.extra/profile)."""
    out = [initramfs.newc_cpio(".extra", [("os-release", osrel.encode())])]
    if profile is not None:
        out.append(initramfs.newc_cpio(".extra", [("profile", profile.encode())]))
    return out


PROFILE0, PROFILE1 = "ID=default\nTITLE=Default", "ID=rescue\nTITLE=Rescue"


def cmdline_of(plan):
    return bytes(segs_of(plan, "cmdline")[0].data).rstrip(b"\0").decode()


# --- the plan (-c) --------------------------------------------------------------------------------------------

def test_plan_gives_linux_ucode_initrd_and_cmdline(built):
    req = api.read_request(built / "tiny.efi", cmdline=None)
    plan = api.make_plan(req, DEVHOST)
    kernel = segs_of(plan, "kernel")[0]
    assert bytes(kernel.data) == TINY[bz.setup_size(TINY[0x1F1]):]
    assert initramfs_seen(plan) == page_joined(UCODE, INITRD, *meta())
    assert [s.what for s in segs_of(plan, "initrd")] == [f"{built / 'tiny.efi'}:.ucode", f"{built / 'tiny.efi'}:.initrd",
                                                          f"{built / 'tiny.efi'}:.osrel as /.extra/os-release"]
    assert cmdline_of(plan) == CMDLINE  # the trailing newline of .cmdline dropped, as the stub does
    assert "unified kernel image, profile 0 of 1" in plan.notes[0]


def test_sections_are_not_copied(built):
    """The kernel and initrd segments are slices of the UKI's mapping, not copies."""
    req = api.read_request(built / "tiny.efi", cmdline=None)
    plan = api.make_plan(req, DEVHOST)
    sections = [s for s in segs_of(plan, "initrd") if s.what.endswith((".ucode", ".initrd"))]
    assert len(sections) == 2
    for s in segs_of(plan, "kernel") + sections:
        assert isinstance(s.data, memoryview) and s.data.obj is req.kernel.obj


def test_user_initrds_follow_and_append_replaces_cmdline(built):
    req = api.read_request(built / "tiny.efi", cmdline="mine=1", initrds=[built / "extra", built / "initrd"])
    plan = api.make_plan(req, DEVHOST)
    assert initramfs_seen(plan) == page_joined(UCODE, INITRD, *meta(), EXTRA, INITRD)
    assert cmdline_of(plan) == "mine=1"


def test_profiles_select_and_override(built):
    for profile, line, text in ((None, CMDLINE, PROFILE0), (0, CMDLINE, PROFILE0), (1, "console=ttyS0 rescue", PROFILE1)):
        plan = api.make_plan(api.read_request(built / "profiles.efi", cmdline=None, uki_profile=profile), DEVHOST)
        assert cmdline_of(plan) == line
        # the base's initrd in every profile; the stub's generated archives joined into one segment
        assert initramfs_seen(plan) == page_joined(UCODE, INITRD, four_joined(*meta(text)))
    with pytest.raises(UsageError, match=r"no UKI profile 2; the image has profiles 0-1"):
        api.make_plan(api.read_request(built / "profiles.efi", cmdline=None, uki_profile=2), DEVHOST)
    with pytest.raises(UsageError, match=r"no UKI profile 1; the image has only profile 0"):
        api.make_plan(api.read_request(built / "tiny.efi", cmdline=None, uki_profile=1), DEVHOST)


def test_profile_layout_as_the_stub_splits_it(built):
    data = (built / "profiles.efi").read_bytes()
    img = uki.read_pe(data, "profiles.efi")
    assert [s.name for s in img.base][-3:] == [".linux", ".initrd", ".ucode"]
    assert [[s.name for s in run] for run in img.profiles] == [[".profile"], [".profile", ".cmdline"]]
    assert [uki.key_values(uki.text(data, run[0]))["ID"] for run in img.profiles] == ["default", "rescue"]


def test_several_initrds_for_a_bzimage(built):
    req = api.read_request(TINY_PATH, cmdline="x", initrds=[built / "ucode", built / "initrd", built / "extra"])
    plan = api.make_plan(req, DEVHOST)
    assert initramfs_seen(plan) == page_joined(UCODE, INITRD, EXTRA)
    assert [s.mem % PAGE_SIZE for s in segs_of(plan, "initrd")] == [0, 0, 0]
    many = LoadRequest(kernel=TINY, initrd_parts=tuple(initramfs.InitrdPart(f"p{i}", bytes([65 + i]) * 3)
                                                      for i in range(initramfs.MAX_SEPARATE_PARTS + 2)))
    plan = api.make_plan(many, DEVHOST)  # too many for separate segments: joined, 4-byte padded
    assert len(segs_of(plan, "initrd")) == 1
    assert initramfs_seen(plan) == four_joined(*(bytes([65 + i]) * 3 for i in range(initramfs.MAX_SEPARATE_PARTS + 2)))


def test_debian_kernel_uki(tmp_path, ukify):
    vmlinuz = sorted((CACHE / "platforms/deb12/linux/boot").glob("vmlinuz-*"))
    if not vmlinuz:
        _missing("no Debian kernel in the cache: run tools/install-deps.sh")
    (tmp_path / "initrd").write_bytes(INITRD)
    (tmp_path / "ucode").write_bytes(UCODE)
    ukify("--linux", vmlinuz[0], "--initrd", tmp_path / "initrd", "--microcode", tmp_path / "ucode",
          "--cmdline", "console=ttyS0 quiet", "--stub", STUB, "--output", tmp_path / "deb.efi")
    info = uki.contents((tmp_path / "deb.efi").read_bytes(), "deb.efi")
    assert info.uname == vmlinuz[0].name.removeprefix("vmlinuz-")  # ukify found it in the bzImage
    plan = api.make_plan(api.read_request(tmp_path / "deb.efi", cmdline=None), DEVHOST)
    raw = vmlinuz[0].read_bytes()
    assert hashlib.sha256(bytes(segs_of(plan, "kernel")[0].data)).digest() == \
        hashlib.sha256(raw[bz.setup_size(raw[0x1F1]):]).digest()
    assert [bytes(p.data) for p in info.initrd_parts[:2]] == [UCODE, INITRD]
    assert initramfs_seen(plan) == page_joined(*(bytes(p.data) for p in info.initrd_parts))
    assert cmdline_of(plan) == "console=ttyS0 quiet"


# --- the command line: -c, -s, -t uki, --inspect, exit codes --------------------------------------------------

def run(argv, capsys, backend=None):
    backend = backend or RecordingBackend()
    code = cli.main(argv, backend_factory=lambda: backend)
    out, err = capsys.readouterr()
    return code, out, err, backend


class FileLoads(RecordingBackend):
    def load_file(self, kernel_fd, initrd_fd, cmdline, crash, *, no_cma=False):
        read = lambda fd: os.pread(fd, os.fstat(fd).st_size, 0) if fd >= 0 else None  # noqa: E731
        assert cmdline.endswith(b"\0")  # as the kernel takes it
        self.file_loads.append((read(kernel_fd), read(initrd_fd), cmdline[:-1].decode(), crash))


def test_s_hands_memfds_and_the_cmdline(built, capsys):
    code, out, err, b = run(["-s", "-l", str(built / "tiny.efi"), f"--initrd={built / 'extra'}"], capsys, FileLoads())
    assert code == 0, err
    (kernel, initrd, line, crash), = b.file_loads
    assert kernel == TINY and initrd == four_joined(UCODE, INITRD, *meta(), EXTRA) and line == CMDLINE and not crash
    code, out, err, b = run(["-s", "-l", str(built / "profiles.efi"), "--uki-profile=1", "--append=x=1"], capsys,
                            FileLoads())
    assert code == 0, err
    assert b.file_loads[0][2] == "x=1"
    code, out, err, b = run(["-s", "-l", str(built / "profiles.efi"), "--uki-profile=1"], capsys, FileLoads())
    assert b.file_loads[0][2] == "console=ttyS0 rescue" and b.file_loads[0][1] == four_joined(UCODE, INITRD,
                                                                                                 *meta(PROFILE1))


def test_s_several_initrds_for_a_bzimage(built, capsys):
    code, out, err, b = run(["-s", "-l", str(TINY_PATH), f"--initrd={built / 'ucode'}", f"--initrd={built / 'extra'}",
                             "--append=a"], capsys, FileLoads())
    assert code == 0, err
    assert b.file_loads[0][:3] == (TINY, four_joined(UCODE, EXTRA), "a")


def test_c_dry_run_and_type(built, capsys, tmp_path):
    code, out, err, _ = run(["--dry-run", "-l", str(built / "tiny.efi"), "-t", "uki", f"--facts={SNAP}",
                             f"--plan-out={tmp_path}"], capsys)
    assert code == 0, err
    assert "tiny.efi:.ucode" in out and "tiny.efi:.initrd" in out and "tiny.efi:.linux" in out
    code, out, err, _ = run(["--dry-run", "-l", str(TINY_PATH), "-t", "uki", f"--facts={SNAP}"], capsys)
    assert code == 255 and "Wrong file type uki, file matches type bzImage64" in err


def test_inspect_shows_sections_profiles_osrel_uname(built, capsys):
    code, out, err, _ = run(["--inspect", str(built / "profiles.efi")], capsys)
    assert code == 0, err
    assert "kind:" in out and "uki" in out
    for words in ("Tiny UKI 1.0", ".uname:", "0.0-tiny", "section", ".linux", "profile 0:", "ID=default",
                  "profile 1:", "ID=rescue", "cmdline console=ttyS0 rescue", "boot protocol:"):
        assert words in out, words
    code, out, err, _ = run(["--inspect", str(built / "tiny.efi"), "--json"], capsys)
    import json
    doc = json.loads(out)
    assert doc["kind"] == "uki" and doc["uki"]["uname"] == "0.0-tiny" and doc["uki"]["cmdline"] == CMDLINE


def _truncated_table(built):
    data = (built / "tiny.efi").read_bytes()
    lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    n, opt = struct.unpack_from("<HxxxxxxxxxxxxH", data, lfanew + 6)
    table = lfanew + 24 + opt
    linux = next(i for i in range(n) if data[table + 40 * i:table + 40 * i + 8] == b".linux\0\0")
    return data[:table + 40 * linux + 40 + 20]  # .linux's header whole, the next one cut


def _overlapping(built):
    data = bytearray((built / "tiny.efi").read_bytes())
    img = uki.read_pe(bytes(data), "x")
    lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    opt = struct.unpack_from("<H", data, lfanew + 20)[0]
    table = lfanew + 24 + opt
    cmd = next(s for s in img.sections if s.name == ".cmdline")
    osrel = next(s for s in img.sections if s.name == ".osrel")
    struct.pack_into("<I", data, table + 40 * cmd.index + 20, osrel.file_offset)  # PointerToRawData
    return bytes(data)


@pytest.mark.parametrize("case, code, words", [
    ("stub", 255, "a PE image without a .linux section: not a unified kernel image"),
    ("notlinux", 255, "the UKI's .linux section (4100 bytes) is not a bzImage"),
    ("truncated", 255, "truncated PE section table"),
    ("overlap", 255, "overlap (file bytes)"),
    ("profile", 1, "no UKI profile 7; the image has profiles 0-1"),
    ("entry", 1, "no boot loader entry 'nope'"),
])
def test_bad_input_one_line_and_exit_code(case, code, words, built, tmp_path, capsys):
    path = {"stub": STUB, "notlinux": built / "notlinux.efi", "profile": built / "profiles.efi"}.get(case)
    if case == "truncated":
        path = tmp_path / "t.efi"
        path.write_bytes(_truncated_table(built))
    elif case == "overlap":
        path = tmp_path / "o.efi"
        path.write_bytes(_overlapping(built))
    argv = ["--dry-run", f"--facts={SNAP}", "-l"]
    if case == "entry":
        (tmp_path / "loader/entries").mkdir(parents=True)
        (tmp_path / "loader/entries/a.conf").write_text(f"title A\nlinux /{TINY_PATH.name}\n")
        argv += ["--boot-entry=nope", f"--esp={tmp_path}"]
    else:
        argv.append(str(path))
    if case == "profile":
        argv.append("--uki-profile=7")
    for syscall in ("-c", "-s"):
        got, out, err, backend = run(argv + [syscall], capsys, FileLoads())
        assert got == code, err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err
        assert not backend.plans and not backend.file_loads


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(64, 4096)))
def test_mutants_only_raise_kexloader_errors(built, flips, cut):
    data = bytearray((built / "profiles.efi").read_bytes())
    for at, value in flips:
        data[at] = value
    data = bytes(data[:cut] if cut else data)
    if not uki.probe(data):
        return
    try:
        api.make_plan(LoadRequest(kernel=data, kernel_name="m", cmdline_given=False), DEVHOST)
    except KexloaderError:
        pass


# --- boot loader entries and addons ---------------------------------------------------------------------------

@pytest.fixture
def esp(tmp_path, built):
    """An ESP with two Type #1 entries (one with two initrds) and a Type #2 UKI with profiles."""
    root = tmp_path / "esp"
    (root / "loader/entries").mkdir(parents=True)
    (root / "EFI/Linux").mkdir(parents=True)
    (root / "vmlinuz-1").write_bytes(TINY)
    (root / "vmlinuz-2").write_bytes(TINY)
    (root / "i1").write_bytes(UCODE)
    (root / "i2").write_bytes(INITRD)
    (root / "loader/entries/debian-6.1.conf").write_text(
        "title Debian 6.1\nversion 6.1\nlinux /vmlinuz-1\ninitrd /i1\ninitrd /i2\noptions console=ttyS0\noptions t1=yes\n")
    (root / "loader/entries/debian-6.12.conf").write_text("title Debian 6.12\nlinux /vmlinuz-2\noptions six=12\n")
    shutil.copy(built / "profiles.efi", root / "EFI/Linux/tiny.efi")
    return root


def test_list_and_order_as_systemd_boot(esp, capsys):
    code, out, err, _ = run(["--list-boot-entries", f"--esp={esp}"], capsys)
    assert code == 0, err
    ids = [line.split()[-1] for line in out.splitlines() if not line.startswith("    ")]
    # the UKI has a sort-key (its .osrel ID), so it comes first; then ids newest version first
    assert ids == ["tiny.efi", "tiny.efi@1", "debian-6.12.conf", "debian-6.1.conf"]
    assert out.startswith("* tiny.efi")
    (esp / "loader/loader.conf").write_text("timeout 3\ndefault debian-*\n")
    code, out, err, _ = run(["--list-boot-entries", f"--esp={esp}"], capsys)
    assert "* debian-6.12.conf" in out


def test_boot_entry_type1_two_initrds(esp, capsys, tmp_path):
    code, out, err, _ = run(["--dry-run", f"--facts={SNAP}", "-l", "--boot-entry=debian-6.1", f"--esp={esp}",
                             f"--plan-out={tmp_path / 'p'}"], capsys)
    assert code == 0, err
    plan = __import__("kexloader.plan", fromlist=["read_dir"]).read_dir(tmp_path / "p")
    assert initramfs_seen(plan) == page_joined(UCODE, INITRD) and cmdline_of(plan) == "console=ttyS0 t1=yes"
    code, out, err, b = run(["-s", "-l", "--boot-entry=debian-6.1.conf", f"--esp={esp}", "--append=mine"], capsys,
                            FileLoads())
    assert b.file_loads[0][1:3] == (four_joined(UCODE, INITRD), "mine")


def test_boot_entry_type2_and_default(esp, capsys):
    (esp / "loader/loader.conf").write_text("default tiny.efi@1\n")
    code, out, err, b = run(["-s", "-l", "--boot-entry=default", f"--esp={esp}"], capsys, FileLoads())
    assert code == 0, err
    assert b.file_loads[0][2] == "console=ttyS0 rescue"
    code, out, err, b = run(["-s", "-l", "--boot-entry=tiny", f"--esp={esp}"], capsys, FileLoads())
    assert b.file_loads[0][2] == CMDLINE


def test_addons_global_then_local(esp, built, capsys):
    (esp / "loader/addons").mkdir()
    shutil.copy(built / "global.addon.efi", esp / "loader/addons/g.addon.efi")
    local = esp / "EFI/Linux/tiny.efi.extra.d"
    local.mkdir()
    shutil.copy(built / "local.addon.efi", local / "b.addon.efi")
    shutil.copy(built / "other.addon.efi", local / "a.addon.efi")  # another .uname: ignored
    shutil.copy(built / "tiny.efi", local / "c.addon.efi")  # a UKI, not an addon: ignored
    uki_path = esp / "EFI/Linux/tiny.efi"
    assert [line for _, line in bootentries.addons(uki_path, "0.0-tiny")] == ["addon=global", "addon=local"]
    plan = api.make_plan(api.read_request(uki_path, cmdline=None), DEVHOST)
    assert cmdline_of(plan) == CMDLINE + " addon=global addon=local"
    code, out, err, b = run(["-s", "-l", str(uki_path), "--append=mine"], capsys, FileLoads())
    assert b.file_loads[0][2] == "mine addon=global addon=local"  # as the stub: addons after any command line


# --- pieces ---------------------------------------------------------------------------------------------------

def test_pe_declarations_roundtrip(built):
    data = (built / "tiny.efi").read_bytes()
    dos = pe.DosHeader.parse(data)
    coff = pe.CoffHeader.parse(data[dos.e_lfanew:])
    assert coff.Machine == pe.IMAGE_FILE_MACHINE_AMD64
    assert pe.CoffHeader.build(coff) == data[dos.e_lfanew:dos.e_lfanew + pe.COFF_HEADER_SIZE]
    table = dos.e_lfanew + pe.COFF_HEADER_SIZE + coff.SizeOfOptionalHeader
    first = pe.SectionHeader.parse(data[table:])
    assert pe.SectionHeader.build(first) == data[table:table + pe.SECTION_HEADER_SIZE]


@pytest.mark.parametrize("a, b", [("6.12", "6.1"), ("6.1.10", "6.1.9"), ("1.0", "1.0~rc1"), ("b", "a"),
                                  ("debian-6.12.conf", "debian-6.1.conf"), ("1.0a", "1.0")])
def test_version_order(a, b):
    assert bootentries.verscmp(a, b) > 0 and bootentries.verscmp(b, a) < 0 and bootentries.verscmp(a, a) == 0


def test_mangle_cmdline_as_the_stub():
    assert uki.mangle_cmdline("a\tb\nc  \n") == "a b c"
    assert four_joined(b"12345", b"") == initramfs.join([initramfs.InitrdPart("a", b"12345"),
                                                         initramfs.InitrdPart("b", b"")])


def test_newc_cpio_as_the_stub_packs_it():
    """Directory then file records, inodes from 1, modes 0555/0444, each record 4-byte aligned, a trailer."""
    blob = initramfs.newc_cpio(".extra", [("os-release", b"ID=x\n")])
    records, at = [], 0
    while True:
        fields = [int(blob[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        assert blob[at:at + 6] == b"070701"
        name_at = at + 110
        name = blob[name_at:name_at + fields[11] - 1].decode()
        body_at = align_up(name_at + fields[11], 4)
        records.append((name, fields[0], oct(fields[1]), blob[body_at:body_at + fields[6]]))
        at = align_up(body_at + fields[6], 4)
        if name == "TRAILER!!!":
            break
    assert records == [(".extra", 1, oct(0o40555), b""), (".extra/os-release", 2, oct(0o100444), b"ID=x\n"),
                       ("TRAILER!!!", 0, oct(0), b"")]
    assert at == len(blob) and len(blob) % 4 == 0


def test_sidecars_as_the_stub_orders_them(esp, built):
    """Credentials and extensions beside the UKI become cpio archives after .initrd, in the stub's order."""
    local = esp / "EFI/Linux/tiny.efi.extra.d"
    (esp / "loader/credentials").mkdir(parents=True)
    (esp / "loader/extensions").mkdir(parents=True)
    local.mkdir()
    for path, body in ((local / "b.cred", b"B"), (local / "a.cred", b"AA"), (local / ".hidden.cred", b"no"),
                       (local / "sys.raw", b"S"), (local / "conf.confext.raw", b"C"), (local / "note.txt", b"no"),
                       (esp / "loader/credentials/g.cred", b"G"), (esp / "loader/extensions/gs.raw", b"GS"),
                       (esp / "loader/extensions/gc.confext.raw", b"GC")):
        path.write_bytes(body)
    want = [(".extra/credentials", [("a.cred", b"AA"), ("b.cred", b"B")], 0o500, 0o400),
            (".extra/global_credentials", [("g.cred", b"G")], 0o500, 0o400),
            (".extra/sysext", [("sys.raw", b"S")], 0o555, 0o444),
            (".extra/global_sysext", [("gs.raw", b"GS")], 0o555, 0o444),
            (".extra/confext", [("conf.confext.raw", b"C")], 0o555, 0o444),
            (".extra/global_confext", [("gc.confext.raw", b"GC")], 0o555, 0o444)]
    expected = [initramfs.newc_cpio(d, files, dir_mode=dm, file_mode=fm) for d, files, dm, fm in want]
    assert [bytes(p.data) for p in bootentries.sidecars(esp / "EFI/Linux/tiny.efi")] == expected
    plan = api.make_plan(api.read_request(esp / "EFI/Linux/tiny.efi", cmdline=None), DEVHOST)
    assert len(segs_of(plan, "initrd")) == 3  # the generated archives joined into one segment, 4-byte padded
    assert initramfs_seen(plan) == page_joined(UCODE, INITRD, four_joined(*expected, *meta(PROFILE0)))


def test_crash_kernel_from_a_uki(built):
    """-p: the UKI's kernel, initramfs and .cmdline (plus kdump's additions) inside the crash region."""
    facts = system.load_snapshot(ROOT / "fixtures/snapshots/qemu-debian12-kdump-384m.json")
    plan = api.make_plan(api.read_request(built / "tiny.efi", cmdline=None, crash=True), facts)
    assert plan.crash and initramfs_seen(plan) == page_joined(UCODE, INITRD, *meta())
    line = cmdline_of(plan)
    assert line.startswith(CMDLINE) and "elfcorehdr=" in line
    for s in segs_of(plan, "kernel") + segs_of(plan, "initrd"):
        assert any(r.contains(s.range) for r in facts.crash_regions())


def test_initrd_and_microcode_addons(esp, built, capsys):
    """As systemd-stub: the addons' microcode first, in reverse addon order; their initrds after the UKI's."""
    local = esp / "EFI/Linux/tiny.efi.extra.d"
    local.mkdir()
    shutil.copy(built / "parts.addon.efi", local / "p.addon.efi")
    shutil.copy(built / "zuc.addon.efi", local / "z.addon.efi")
    uki_path = esp / "EFI/Linux/tiny.efi"
    plan = api.make_plan(api.read_request(uki_path, cmdline=None), DEVHOST)
    assert initramfs_seen(plan) == page_joined(b"ZUC", b"ADDUC", UCODE, INITRD, four_joined(*meta(PROFILE0)), b"ADDINIT")
    assert cmdline_of(plan) == CMDLINE + " addon=parts"
    code, out, err, b = run(["-s", "-l", str(uki_path)], capsys, FileLoads())
    assert code == 0, err
    assert b.file_loads[0][1] == four_joined(b"ZUC", b"ADDUC", UCODE, INITRD, *meta(PROFILE0), b"ADDINIT")
