"""Run QEMU (TCG) with the serial console on a pipe; record it; find markers in it.

    from tools.vm.qemu import boot
    t = boot(kernel, initrd, "console=ttyS0 panic=-1 stage=first", timeout=300)
    t.get("first.rc")            # last value of marker "first.rc" (raises MarkerMissing)
    t.b64("second.cmdline")      # bytes of a mark_b64 marker

For interaction (e.g. sending Ctrl-a three times to Xen's console):

    with Qemu(kernel, initrd, append) as vm:
        vm.wait_for_marker("boot")
        vm.send(b"\x01\x01\x01")
        t = vm.wait()

The serial port is QEMU's stdio (`-nographic -monitor none`: no multiplexer, so every byte sent,
Ctrl-a included, reaches the guest). `Qemu(..., monitor=True)` puts QEMU's human monitor on a unix
socket instead; `vm.monitor("info cpus")` runs one command there and returns its output.
Each run is logged to a file in $KEXLOADER_CACHE/vm/logs.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .env import work_dir

MARKER_RE = re.compile(r"KXM\|([^|\r\n]+)\|(.*?)\|MXK")
# The kernel's messages ("[   10.710604] hrtimer: interrupt took ...") and Xen's ("(XEN) uart interrupt taking
# more than 4ms, switched to polling") share the serial console with the stage scripts' output and may land in
# the middle of a marker line being printed (slow TCG guests print such warnings): taken out of the text markers
# are read from. Only those that start mid-line; markers carry b64 or plain words, never such a prefix.
CONSOLE_LINE_MID_LINE_RE = re.compile(r"(?<=[^\n])(?:\(XEN\) |\[ *\d+\.\d+\] )[^\n]*\n")
FIRMWARES = ("bios", "ovmf")
OVMF_FD = Path("/usr/share/ovmf/OVMF.fd")  # Debian's ovmf package: UEFI firmware for -bios (VM-RECIPE.md)
# where a release's ovmf has no OVMF.fd: code and variables as two flash devices (variables in a throw-away overlay)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def ovmf_args() -> list[str] | None:
    """QEMU arguments that start OVMF (Debian's ovmf package), or None when it is not installed."""
    if OVMF_FD.is_file():
        return ["-bios", str(OVMF_FD)]
    if OVMF_CODE.is_file() and OVMF_VARS.is_file():
        return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,snapshot=on,file={OVMF_VARS}"]
    return None


class MarkerMissing(AssertionError):
    pass


@dataclass
class Transcript:
    """What one QEMU run printed on its serial console, and how it ended."""

    text: str
    cmd: list[str]
    log_path: Path | None = None
    returncode: int | None = None
    elapsed: float = 0.0
    timed_out: str | None = None  # None, or why the run was cut short
    stderr: str = ""
    _markers: list[tuple[str, str]] | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # pytest prints this in assertion messages: keep it short
        return f"<Transcript {self.summary()}>"

    # -- markers ---------------------------------------------------------------------------------
    @property
    def markers(self) -> list[tuple[str, str]]:
        if self._markers is None:
            self._markers = MARKER_RE.findall(CONSOLE_LINE_MID_LINE_RE.sub("", self.text.replace("\r", "")))
        return self._markers

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.markers if n == name]

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.markers)

    def get(self, name: str) -> str:
        """The last value of marker `name`; MarkerMissing (an AssertionError) if there is none."""
        vals = self.values(name)
        if not vals:
            raise MarkerMissing(f"marker {name!r} not on the console ({self.summary()})")
        return vals[-1]

    def b64(self, name: str) -> bytes:
        v = self.get(name)
        if not v.startswith("b64:"):
            raise MarkerMissing(f"marker {name!r} is {v!r}, not a b64: value")
        return base64.b64decode(v[4:])

    def blob(self, name: str) -> bytes:
        """A file sent with the guest's `mark_blob NAME FILE`, checked against its SHA-256."""
        import hashlib

        data = base64.b64decode("".join(self.values(f"{name}.part")))
        want = self.get(f"{name}.sha256")
        if hashlib.sha256(data).hexdigest() != want:
            raise MarkerMissing(f"blob {name!r}: {len(data)} bytes arrived, SHA-256 differs from the guest's {want}")
        return data

    def rc(self, name: str) -> int:
        """Exit status recorded by the guest's `run NAME ...` helper."""
        return int(self.get(f"{name}.rc"))

    def secs(self, name: str) -> float:
        """Guest seconds the `run NAME ...` command took."""
        return float(self.get(f"{name}.secs"))

    def out(self, name: str) -> str:
        """stdout+stderr recorded by the guest's `run NAME ...` helper."""
        return self.b64(f"{name}.out").decode(errors="replace")

    def stages(self) -> list[str]:
        """The stages that booted, in order (from /init's `boot` markers)."""
        return [v.split()[0].removeprefix("stage=") for v in self.values("boot")]

    def uptimes(self) -> dict[str, float]:
        """Seconds from kernel start to /init, per stage (from the `boot` markers)."""
        out = {}
        for v in self.values("boot"):
            kv = dict(w.split("=", 1) for w in v.split() if "=" in w)
            out[kv.get("stage", "?")] = float(kv.get("uptime", "nan"))
        return out

    # -- for people ------------------------------------------------------------------------------
    def summary(self) -> str:
        how = self.timed_out or f"exit {self.returncode}"
        return f"{how} after {self.elapsed:.1f}s, stages {self.stages()}, log {self.log_path}"

    def tail(self, lines: int = 200) -> str:
        t = self.text.replace("\r", "").splitlines()
        return "\n".join(t[-lines:])

    def report(self, max_lines: int = 3000) -> str:
        """The whole console for a failure report (middle cut when very long)."""
        t = self.text.replace("\r", "").splitlines()
        if len(t) > max_lines:
            half = max_lines // 2
            t = t[:half] + [f"... {len(t) - max_lines} lines cut, see {self.log_path} ..."] + t[-half:]
        head = f"$ {shlex.join(self.cmd)}\n# {self.summary()}\n"
        if self.stderr.strip():
            head += f"# qemu stderr: {self.stderr.strip()}\n"
        return head + "\n".join(t)


def qemu_command(
    kernel: Path,
    initrd: Path | str | None = None,
    append: str = "",
    *,
    memory: int = 2048,
    smp: int = 2,
    cpu: str = "max",
    extra: list[str] | tuple[str, ...] = (),
    extra_args: list[str] | tuple[str, ...] = (),
    monitor: str | Path | None = None,
    firmware: str = "bios",
    qemu: str = "qemu-system-x86_64",
) -> list[str]:
    """The QEMU command line of VM-RECIPE.md: TCG, no display, serial on stdio, no reboot.

    `initrd` may be a comma-separated module list for multiboot kernels (QEMU's own loader).
    `memory` and `smp` go in as given: e.g. memory="2048,slots=4,maxmem=8G", smp="2,maxcpus=4" for
    hot-plug. `extra` and `extra_args` (the same thing) are appended (e.g. ["-device", "..."]).
    `monitor`: a unix socket path for QEMU's human monitor (HMP) instead of none.
    `firmware`: "bios" (QEMU's SeaBIOS) or "ovmf" (UEFI: `ovmf_args()`, Debian's `ovmf` package; a Linux
    `kernel` then starts through its EFI stub). `kernel=None` boots without -kernel (e.g. OVMF from a disk).
    """
    if firmware not in FIRMWARES:
        raise ValueError(f"firmware {firmware!r}: one of {', '.join(FIRMWARES)}")
    mon = f"unix:{monitor},server=on,wait=off" if monitor else "none"
    cmd = [
        qemu, "-accel", "tcg", "-cpu", cpu, "-m", str(memory), "-smp", str(smp),
        "-nographic", "-monitor", mon, "-no-reboot", "-nodefaults", "-serial", "stdio",
    ]
    if firmware == "ovmf":
        cmd += ovmf_args() or ["-bios", str(OVMF_FD)]  # (missing: QEMU says so)
    if kernel:
        cmd += ["-kernel", str(kernel)]
    if initrd:
        cmd += ["-initrd", str(initrd)]
    if append:
        cmd += ["-append", append]
    return cmd + list(extra) + list(extra_args)


def _prune_logs(logs: Path, keep_days: float = 7) -> None:
    cutoff = time.time() - keep_days * 86400
    for p in logs.glob("*.log"):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            pass


class Qemu:
    """One QEMU process; its console is read by a thread into `self.text` and the log file."""

    def __init__(self, kernel: Path, initrd=None, append: str = "", *, timeout: float = 600,
                 idle_timeout: float | None = 180, log_name: str | None = None, monitor: bool = False, **cmd_kw):
        # monitor=True: QEMU's human monitor on a unix socket (self.monitor_path); talk with monitor(cmd).
        self.monitor_path: Path | None = None
        if monitor:
            self._monitor_dir = tempfile.mkdtemp(prefix="kxm-qemu-")  # short: sun_path holds 108 bytes
            self.monitor_path = Path(self._monitor_dir) / "monitor.sock"
        self.cmd = qemu_command(kernel, initrd, append, monitor=self.monitor_path, **cmd_kw)
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        logs = work_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _prune_logs(logs)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = logs / f"{stamp}-{os.getpid()}-{log_name or 'boot'}.log"
        self._chunks: list[bytes] = []
        self._cond = threading.Condition()
        self._last_output = 0.0
        self._eof = False
        self.proc: subprocess.Popen | None = None
        self.start_time = 0.0
        self._end_time = 0.0  # when QEMU's console closed (it exited or was killed)
        self.timed_out: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Qemu":
        self._log = open(self.log_path, "wb")
        self._log.write(f"$ {shlex.join(self.cmd)}\n".encode())
        self.start_time = self._last_output = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()
        return self

    def __enter__(self) -> "Qemu":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        while True:
            data = os.read(fd, 65536)
            with self._cond:
                if not data:
                    self._end_time = self._end_time or time.monotonic()
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._chunks.append(data)
                self._last_output = time.monotonic()
                self._log.write(data)
                self._log.flush()
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc and self.proc.stderr
        self._stderr = self.proc.stderr.read().decode(errors="replace")

    @property
    def text(self) -> str:
        with self._cond:
            return b"".join(self._chunks).decode(errors="replace")

    def send(self, data: bytes | str) -> None:
        """Type into the serial console."""
        assert self.proc and self.proc.stdin
        if isinstance(data, str):
            data = data.encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def monitor(self, command: str, timeout: float = 30) -> str:
        """Run one HMP command (e.g. "info cpus", "device_add ...") on the monitor socket (start with
        monitor=True); returns its output without the echo and the prompt."""
        if not self.monitor_path:
            raise RuntimeError("this Qemu was started without monitor=True")
        end = time.monotonic() + timeout
        while not self.monitor_path.exists():  # QEMU creates it while starting
            if time.monotonic() > end or (self.proc and self.proc.poll() is not None):
                raise AssertionError(f"QEMU's monitor socket {self.monitor_path} did not appear")
            time.sleep(0.1)
        prompt = b"(qemu) "
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.monitor_path))

            def until_prompt() -> bytes:
                buf = b""
                while not buf.endswith(prompt):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                return buf

            until_prompt()  # the banner
            s.sendall(command.encode() + b"\n")
            raw = until_prompt().removesuffix(prompt).decode(errors="replace")
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\x1b[A-Za-z]", "", raw).replace("\r", "")
        lines = text.split("\n")
        if lines and lines[0].strip().endswith(command.strip()):
            lines = lines[1:]  # the monitor's echo of the command
        return "\n".join(lines).strip("\n")

    def _deadline_hit(self) -> str | None:
        now = time.monotonic()
        if now - self.start_time > self.timeout:
            return f"timed out after {self.timeout:.0f}s"
        if self.idle_timeout and now - self._last_output > self.idle_timeout:
            return f"no console output for {self.idle_timeout:.0f}s"
        return None

    def wait_for(self, pattern: str | re.Pattern, timeout: float | None = None) -> re.Match:
        """Block until `pattern` (regex) appears in the console text; AssertionError if QEMU ends first."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        end = time.monotonic() + (timeout if timeout is not None else self.timeout)
        with self._cond:
            while True:
                m = rx.search(b"".join(self._chunks).decode(errors="replace").replace("\r", ""))
                if m:
                    return m
                if self._eof:
                    raise AssertionError(f"QEMU ended before {rx.pattern!r} appeared\n{self.transcript().tail(30)}")
                why = self._deadline_hit() or (f"{rx.pattern!r} not seen in time" if time.monotonic() > end else None)
                if why:
                    self.timed_out = why
                    raise AssertionError(f"{why}\n{self.transcript().tail(30)}")
                self._cond.wait(0.5)

    def wait_for_marker(self, name: str, timeout: float | None = None) -> str:
        m = self.wait_for(re.compile(r"KXM\|" + re.escape(name) + r"\|(.*?)\|MXK"), timeout)
        return m.group(1)

    def wait(self) -> Transcript:
        """Wait for QEMU to exit (the guest powers off), or kill it at the timeouts."""
        assert self.proc
        while self.proc.poll() is None:
            why = self._deadline_hit()
            if why:
                self.timed_out = why
                self.kill()
                break
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self._reader.join(timeout=10)
        self._err_reader.join(timeout=10)
        return self.transcript()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self._end_time = self._end_time or time.monotonic()
        if getattr(self, "_log", None) and not self._log.closed:
            self._reader.join(timeout=5)
            self._log.close()
        if self.monitor_path and self.proc and self.proc.poll() is not None:
            shutil.rmtree(self._monitor_dir, ignore_errors=True)

    def transcript(self) -> Transcript:
        return Transcript(
            text=self.text, cmd=self.cmd, log_path=self.log_path,
            returncode=self.proc.returncode if self.proc else None,
            elapsed=(self._end_time or time.monotonic()) - self.start_time, timed_out=self.timed_out,
            stderr=getattr(self, "_stderr", ""),
        )


def boot(kernel: Path, initrd=None, append: str = "", *, until: str | None = None, **kw) -> Transcript:
    """Boot, wait until QEMU exits (or a timeout kills it), return the transcript.

    until: a regex; once it appears on the console QEMU is stopped and the run counts as
    finished (for guests that cannot power the machine off, e.g. a Xen dom0 whose poweroff
    halts Xen without ending QEMU). If QEMU exits or times out first, the transcript says so
    and the caller's marker checks fail with it.

    Keyword arguments: timeout (600 s), idle_timeout (180 s without console output),
    log_name, memory (MiB, 2048), smp (2), cpu ("max"; "Haswell-noTSX" under Xen), extra or extra_args
    (more QEMU arguments), monitor (True: HMP on a unix socket, see Qemu.monitor), firmware ("bios" or "ovmf").
    """
    vm = Qemu(kernel, initrd, append, **kw)
    vm.start()
    try:
        if until is None:
            return vm.wait()
        try:
            vm.wait_for(re.compile(f"(?:{until})[^\n]*\n"))  # the whole line, not a partial read
        except AssertionError:
            pass  # ended or timed out first: the transcript records how
        vm.kill()
        vm._reader.join(timeout=10)
        return vm.transcript()
    finally:
        vm.kill()
