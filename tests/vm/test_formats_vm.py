"""Every kernel format a distro ships, kexec'd for real inside one QEMU guest (issue 4).

One QEMU run, five kexecs in a chain; each kernel reports what it was handed, then loads the next:

    a  Debian's bzImage, booted by QEMU             -> kexloader -l vmlinux --args-linux
    b  the vmlinux ELF extracted from it            -> kexloader -l vmlinux            (no --args-linux)
    c  the same vmlinux, Linux arguments by default -> kexloader -l vmlinuz.gz
    d  the bzImage, gzip'ed as a whole              -> kexloader -l vmlinuz.xz
    e  the bzImage, xz'ed                           -> kexloader -l vmlinuz.zst
    f  the bzImage, zstd'ed                            reports and powers off

Each next kernel's initrd is the running system's own root file system, archived again in the guest
(busybox cpio) with a fresh random /payload.bin: the next kernel proves it got the initrd by the
payload's SHA-256, and the command line by a token only the host and the loader knew. A kernel is
deleted from the root file system once no later step needs it, so initrds shrink along the chain.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from tools.vm import new_token, work_dir

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 1200  # bounds a hang; the chain takes a few minutes under TCG

# (stage, the kernel it loads next, extra kexloader options, the stage that kernel runs, files to drop first).
# Only the first kexec has the purgatory verify SHA-256 (over the vmlinux's four PT_LOAD segments and a
# 110 MiB initrd): under TCG Python hashes ~5 MB/s, so checks cost 40-70 s a step. The other steps use -i:
# their plans equal the plain bzImage's (tests/test_vmlinux.py), which other VM tests load with checks.
CHAIN = [
    ("a", "/boot/vmlinux", "--args-linux", "b", "/boot/vmlinuz"),
    ("b", "/boot/vmlinux", "-i", "c", ""),
    ("c", "/boot/vmlinuz.gz", "-i", "d", "/boot/vmlinux"),
    ("d", "/boot/vmlinuz.xz", "-i", "e", "/boot/vmlinuz.gz"),
    ("e", "/boot/vmlinuz.zst", "-i", "f", "/boot/vmlinuz.xz"),
]
WHAT = {"b": "vmlinux ELF with --args-linux", "c": "vmlinux ELF without --args-linux",
        "d": "gzip-compressed bzImage", "e": "xz-compressed bzImage", "f": "zstd-compressed bzImage"}

COMMON = r"""
dmesg -n 1  # kernel messages (hrtimer warnings under TCG) must not split the long b64 markers
TOKEN=$(sed -n 's/.* token=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
report() {  # what this kernel was handed
    mark_file "cmdline:$1" /proc/cmdline
    if [ -e /payload.bin ]; then mark "got:$1" "$(sha256 /payload.bin)"; else mark "got:$1" missing; fi
    mark "uname:$1" "$(uname -r)"
}
up() { cut -d' ' -f1 /proc/uptime; }
next() {  # next STAGE KERNEL DROP [kexloader options...]
    NEXT=$1; KERNEL=$2; DROP=$3; shift 3
    [ -n "$DROP" ] && rm -f "$DROP"
    head -c 65536 /dev/urandom > /payload.bin
    mark "payload:$NEXT" "$(sha256 /payload.bin)"
    APPEND="console=ttyS0 panic=-1 stage=$NEXT token=$TOKEN"
    mark "append:$NEXT" "$APPEND"
    t0=$(up)
    ( cd / && { find . -xdev -path ./tmp -prune -o -print; echo ./dev/console; echo ./dev/null; } \
        | cpio -o -H newc > /tmp/next.img 2>/dev/null )
    t1=$(up)
    mark "repack:$NEXT" "$(stat -c %s /tmp/next.img) $t0 $t1"
    run "load:$NEXT" kexloader -c -d -l "$KERNEL" --initrd=/tmp/next.img --append="$APPEND" "$@"
    mark "loaded:$NEXT" "$(up)"
    run "exec:$NEXT" kexloader -e
}
"""


def stage_script(stage: str, kernel: str, opts: str, nxt: str, drop: str) -> str:
    return f'{COMMON}\nreport {stage}\nnext {nxt} {kernel} "{drop}" {opts}\n'


LAST = COMMON + "\nreport f\n"


@dataclass
class Chain:
    transcript: object
    token: str
    seen_at: dict = field(default_factory=dict)  # stage -> host seconds since QEMU start when /init ran
    sizes: dict = field(default_factory=dict)

    def expected_cmdline(self, stage: str) -> str:
        return f"console=ttyS0 panic=-1 stage={stage} token={self.token}\n"


def _inputs(h) -> dict[str, Path]:
    """/boot files for the guest, made on the host from Debian's kernel; kept in $KEXLOADER_CACHE/vm by the
    kernel's SHA-256 (xz takes ~10 s), and rebuilt when missing."""
    sys.path.insert(0, str(ROOT))
    from tools.extract_vmlinux import extract

    raw = h.vmlinuz.read_bytes()
    out = work_dir() / f"formats-{hashlib.sha256(raw).hexdigest()[:16]}"
    out.mkdir(exist_ok=True)
    made = {"/boot/vmlinux": (out / "vmlinux", lambda: extract(raw).vmlinux),
            "/boot/vmlinuz.gz": (out / "vmlinuz.gz", lambda: gzip.compress(raw, compresslevel=6, mtime=0)),
            "/boot/vmlinuz.xz": (out / "vmlinuz.xz", lambda: lzma.compress(raw, preset=1)),
            "/boot/vmlinuz.zst": (out / "vmlinuz.zst", lambda: zstandard.ZstdCompressor(level=3).compress(raw))}
    files = {}
    for guest, (path, make) in made.items():
        if not path.exists():
            t = time.monotonic()
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(make())
            tmp.replace(path)  # whole files only, even with concurrent sessions
            h.timings[f"make {path.name}"] = time.monotonic() - t
        files[guest] = path
    return files


@pytest.fixture(scope="module")
def chain(platform_harness) -> Chain:
    h = platform_harness
    files = _inputs(h)
    stages = {s: stage_script(s, k, o, n, d) for s, k, o, n, d in CHAIN}
    stages["f"] = LAST
    guest = h.full(stages=stages, files=files)
    token = new_token()
    t0 = time.monotonic()
    image = h.build(guest, "formats-chain")
    h.timings["build formats-chain.img"] = time.monotonic() - t0
    vm = h.start(image, f"stage=a token={token}", name="formats-chain", timeout=TIMEOUT, idle_timeout=300)
    result = Chain(None, token, sizes={"first initrd": image.stat().st_size})
    try:
        for stage in "abcdef":
            vm.wait_for(re.compile(r"KXM\|boot\|stage=" + stage + " "))
            result.seen_at[stage] = time.monotonic() - vm.start_time
        result.transcript = vm.wait()
    except AssertionError:
        vm.kill()
        result.transcript = vm.transcript()
    finally:
        vm.kill()
    return result


def _step(chain: Chain, stage: str) -> None:
    """The kernel running `stage` came up with the command line and initrd its loader was given."""
    t = chain.transcript
    prev = "abcdef"["abcdef".index(stage) - 1]
    assert t.rc(f"load:{stage}") == 0, t.out(f"load:{stage}")
    assert "Traceback" not in t.out(f"load:{stage}")
    assert stage in t.stages(), f"the {WHAT[stage]} did not reach /init ({t.summary()})"
    assert t.b64(f"cmdline:{stage}").decode() == chain.expected_cmdline(stage)
    assert t.get(f"got:{stage}") == t.get(f"payload:{stage}"), "the initrd did not arrive intact"
    assert not t.has(f"exec:{stage}.rc"), f"kexloader -e returned in stage {prev}"


def test_a_vmlinux_with_args_linux(chain, platform_harness):
    _step(chain, "b")
    out = chain.transcript.out("load:b")
    # startup_64: e_entry of the vmlinux (0x1000000 on 6.1, 0x1000c43 on 6.12, in .init.text on 7.x)
    entry = int.from_bytes(_inputs(platform_harness)["/boot/vmlinux"].read_bytes()[24:32], "little")
    assert f"64-bit entry {entry:#x}" in out and "argument style linux" in out


def test_b_vmlinux_without_args_linux_defaults_to_linux(chain):
    _step(chain, "c")
    assert "a Linux vmlinux (recognised by" in chain.transcript.out("load:c")


def test_c_gzip_compressed_bzimage(chain):
    _step(chain, "d")
    assert "bzImage, boot protocol 2.15" in chain.transcript.out("load:d")


@pytest.mark.parametrize("stage", ["e", "f"], ids=["xz", "zstd"])
def test_d_xz_and_zstd_compressed_bzimages(chain, stage):
    _step(chain, stage)
    assert chain.transcript.stages() == list("abcdef")


def test_report_times(chain, platform_harness):
    """Not a check: puts the per-step wall times into the session's VM summary."""
    t = chain.transcript
    prev = 0.0
    for stage in "abcdef":
        if stage in chain.seen_at:
            platform_harness.timings[f"chain: {stage} up (/init)"] = chain.seen_at[stage] - prev
            prev = chain.seen_at[stage]
    for stage in "bcdef":
        if t.has(f"repack:{stage}"):
            size, t0, t1 = t.get(f"repack:{stage}").split()
            platform_harness.timings[f"chain: initrd for {stage} {int(size) >> 20} MiB, cpio"] = float(t1) - float(t0)
            if t.has(f"loaded:{stage}"):
                platform_harness.timings[f"chain: kexloader -l for {stage}"] = float(t.get(f"loaded:{stage}")) - float(t1)
    platform_harness.timings["chain: whole run"] = t.elapsed
