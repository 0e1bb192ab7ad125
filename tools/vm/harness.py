"""The VM-test harness: one object that knows the inputs, stages Python once, builds and boots guests.

    h = Harness(out_dir)                      # finds Debian's kernel, QEMU, busybox, the host's python3
    h13 = Harness(out_dir13, platform="deb13")  # Debian 13's kernel and Xen instead (env.PLATFORMS)
    leaf = h.leaf(stages={"report": REPORT}, files={"/payload.bin": payload})
    full = h.full(stages={"first": script}, leaf=leaf)   # Python + kexloader wheel + /boot/vmlinuz + /leaf.img
    t = h.boot(full, "stage=first token=...", name="kexec")
    assert t.stages() == ["first", "report"]

Guest layout (full image):
    /boot/vmlinuz           Debian's kernel (the same one QEMU boots)
    /leaf.img               the leaf initrd (busybox + /init + stages + files), gzip
    /usr/bin/kexloader      console script generated from the wheel's entry point
    /usr/bin/python3.X      the host release's interpreter; stdlib in /usr/lib/python3X.zip
    /usr/lib/python3/dist-packages   kexloader + pyelftools, construct, lz4, zstandard (from wheels)
    /stages/NAME            stage scripts; /lib/kxm.sh marker helpers (see tools/vm/guest.py)
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from . import debpackage, pyruntime
from .env import DEFAULT_PLATFORM, INSTALL_HINT, Inputs, find_inputs, read_module
from .guest import Guest
from .qemu import Qemu, Transcript, boot

BASE_APPEND = "console=ttyS0 panic=-1"
FIRST_MARKER = "KXM|boot|"  # printed by every guest's /init before its stage runs

# The stage a second kernel runs by default: report what it was handed, then power off.
REPORT = r"""
mark_file cmdline /proc/cmdline
for f in /payload.bin; do
    [ -e "$f" ] && mark "sha256:$f" "$(sha256 "$f")"
done
mark uname "$(uname -r)"
mark kexec_loaded "$(cat /sys/kernel/kexec_loaded 2>/dev/null)"
"""


def new_token() -> str:
    """A fresh random word for the u-root marker trick: it can only come back if the kernel got it."""
    return secrets.token_hex(8)


def _boot_flake(t: Transcript) -> bool:
    """Whether a run failed the way TCG occasionally does, inside a kernel's own boot.

    Either the guest hung or died before its /init ran (before any kexloader code: e.g. 7.3 oopsing in
    the scheduler under TCG, "Oops: int3", then panic=-1 ends QEMU), or the newest kernel printed its
    banner and then went silent for the idle timeout before reaching its /init (e.g. a kexec'd 6.1 silent
    after "IP idents hash table entries" once in ~50 OVMF boots, while the same plan booted in every
    other run), or the newest kernel panicked in its own boot before its /init (e.g. a deb13 dom0 started by
    a kexec'd Xen, GP on the iretq of text_poke_early's sync_core, once, while the same test passed before
    and after). A failure that repeats is a failure as before.
    """
    if FIRST_MARKER not in t.text:
        return True
    banner = t.text.rfind("Linux version ")
    if banner > t.text.rfind("KXM|") and "Kernel panic - not syncing" in t.text[banner:]:
        return True  # a later kernel died before its /init (a crash we caused ourselves comes before the banner)
    if not t.timed_out or not t.timed_out.startswith("no console output"):
        return False
    return t.text.rfind("Linux version ") > t.text.rfind("KXM|")  # a later kernel, not yet at /init


class Harness:
    def __init__(self, out_dir: Path, inputs: Inputs | None = None, wheel: Path | None = None,
                 platform: str | None = None):
        """platform: one of env.PLATFORMS (default "deb12"); ignored when `inputs` is given (they name theirs)."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.inputs = inputs or find_inputs(platform or DEFAULT_PLATFORM)
        self._wheel = wheel
        self._trees: list[Path] | None = None
        self._deb_trees: list[Path] | None = None
        self.timings: dict[str, float] = {}
        self.keep_images = False  # images built by boot() from a Guest are deleted after the run
        # Every run, in order (Transcript, or Qemu for start()): tests attach them to failure reports.
        self.booted: list[Transcript | Qemu] = []
        self.retried: list[Transcript] = []  # boots that stalled like TCG does (_boot_flake) and ran again

    # -- inputs ----------------------------------------------------------------------------------
    @property
    def platform(self) -> str:
        return self.inputs.platform

    @property
    def vmlinuz(self) -> Path:
        assert self.inputs.vmlinuz, f"Debian's kernel for {self.platform} is missing: run {INSTALL_HINT}"
        return self.inputs.vmlinuz

    def module(self, rel: str) -> bytes:
        """A module of the platform's kernel, e.g. "kernel/drivers/xen/xen-privcmd.ko", as bytes busybox
        insmod can load (.ko.xz / .ko.zst / .ko.gz inflated)."""
        path = self.inputs.module(rel)
        assert path, f"no module {rel} under {self.inputs.modules} ({self.platform}; run {INSTALL_HINT})"
        return read_module(path)

    def modules(self, rels: dict[str, str]) -> dict[str, bytes]:
        """{guest path: module path under lib/modules/VER} -> files for full()/leaf(), inflated."""
        return {guest: self.module(rel) for guest, rel in rels.items()}

    @property
    def wheel(self) -> Path:
        if self._wheel is None:
            t = time.monotonic()
            self._wheel = pyruntime.build_wheel(self.out_dir / "wheel")
            self.timings["build wheel"] = time.monotonic() - t
        return self._wheel

    def python_trees(self) -> list[Path]:
        """Staged trees with Python and the kexloader wheel installed (built once per Harness)."""
        if self._trees is None:
            t = time.monotonic()
            rt = pyruntime.build_runtime()
            self.timings["stage python runtime"] = time.monotonic() - t
            wheel = self.wheel
            t = time.monotonic()
            pk = pyruntime.build_packages(wheel)
            self.timings["stage packages"] = time.monotonic() - t
            self._trees = [rt.root, pk.root]
        return self._trees

    def deb_trees(self) -> list[Path]:
        """Staged trees with Python and kexloader's Debian package in place of the wheel: the .deb built from
        the working tree by tools/build-deb, unpacked with its maintainer scripts and Debian's packages of its
        dependencies (tools/vm/debpackage.py; debpackage.Unavailable when the host lacks them). Built once."""
        if self._deb_trees is None:
            t = time.monotonic()
            rt = pyruntime.build_runtime()
            deb = debpackage.build(self.out_dir / "deb")
            self.timings["build .deb"] = time.monotonic() - t
            self._deb_trees = [rt.root, debpackage.stage(deb).root]
        return self._deb_trees

    # -- images ----------------------------------------------------------------------------------
    def leaf(self, stages: dict[str, str] | None = None, files: dict | None = None) -> Guest:
        """A small initrd for a second kernel: busybox, /init, stages (default: "report")."""
        return Guest(stages=dict(stages or {"report": REPORT}), files=dict(files or {}))

    def full(self, stages: dict[str, str], files: dict | None = None, leaf: Guest | Path | None = None,
             kernel: Path | None | bool = True) -> Guest:
        """An initrd with Python and kexloader, /boot/vmlinuz (unless kernel=False) and /leaf.img."""
        f: dict = {}
        if kernel is True:
            f["/boot/vmlinuz"] = self.vmlinuz
        elif kernel:
            f["/boot/vmlinuz"] = Path(kernel)
        if leaf is not None:
            # Read now: a later leaf built under the same name must not change this image.
            f["/leaf.img"] = (self.build(leaf, "leaf") if isinstance(leaf, Guest) else Path(leaf)).read_bytes()
        f.update(files or {})
        return Guest(stages=dict(stages), files=f, trees=list(self.python_trees()))

    def build(self, guest: Guest, name: str, compress: str | None = None) -> Path:
        """Write the guest's initrd to out_dir/NAME.img. Leaf images are gzip'ed (they travel
        through kexec); full images stay uncompressed (faster to unpack under TCG)."""
        if compress is None:
            compress = "none" if guest.trees else "gzip"
        return guest.build(self.out_dir / f"{name}.img", compress)

    # -- booting ---------------------------------------------------------------------------------
    def _log_name(self, name: str) -> str:
        """Console logs of platforms other than the default say which one they ran on."""
        return name if self.platform == DEFAULT_PLATFORM else f"{name}-{self.platform}"

    def _kernel(self, kernel: Path | None | bool) -> Path | None:
        """None: Debian's kernel; False: none (no -kernel); else the path given."""
        return self.vmlinuz if kernel is None else (kernel or None)

    def boot(self, initrd: Guest | Path, append: str, *, name: str = "boot", kernel: Path | None = None,
             base_append: str = BASE_APPEND, **kw) -> Transcript:
        """Boot Debian's kernel (or `kernel`) with this initrd; append goes after BASE_APPEND.

        Keyword arguments go to tools.vm.qemu.boot: until (stop QEMU once this regex shows, e.g.
        r"KXM\\|end\\|stage=report "), timeout, idle_timeout, memory, smp, cpu, extra / extra_args
        (more QEMU arguments), monitor, firmware ("bios", the default, or "ovmf": UEFI, the kernel starts
        through its EFI stub). kernel=False boots no -kernel (OVMF from a disk in extra_args; initrd None).
        """
        built = isinstance(initrd, Guest)
        if built:
            initrd = self.build(initrd, name)
        full_append = f"{base_append} {append}".strip()
        kw.setdefault("timeout", 600)
        name = self._log_name(name)
        try:
            t = boot(self._kernel(kernel), initrd, full_append, log_name=name, **kw)
            if _boot_flake(t):
                # Booted once more; a second hang fails the test as before, and the summary lists the
                # first (`VM boots`: "retried after ...").
                self.booted.append(t)
                self.retried.append(t)
                t = boot(self._kernel(kernel), initrd, full_append, log_name=f"{name}-retry", **kw)
        finally:
            if built and not self.keep_images:
                Path(initrd).unlink(missing_ok=True)
        self.booted.append(t)
        return t

    def start(self, initrd: Guest | Path, append: str, *, name: str = "boot", kernel: Path | None = None,
              base_append: str = BASE_APPEND, **kw) -> Qemu:
        """Like boot() but returns the running Qemu for interaction (wait_for_marker, send, wait; with
        monitor=True also monitor("HMP command")). Takes extra_args=[...] like boot()."""
        if isinstance(initrd, Guest):
            initrd = self.build(initrd, name)
        name = self._log_name(name)
        for attempt in ("", "-retry"):
            vm = Qemu(self._kernel(kernel), initrd, f"{base_append} {append}".strip(), log_name=name + attempt,
                      **kw)
            self.booted.append(vm)
            vm.start()
            try:
                vm.wait_for(re.escape(FIRST_MARKER))
                return vm
            except AssertionError:
                if attempt:
                    return vm  # it failed twice: the test sees it as it is
                # it hung or died before /init, before any kexloader code ran: boot once more (as boot())
                vm.kill()
                self.retried.append(vm.transcript())
        return vm
