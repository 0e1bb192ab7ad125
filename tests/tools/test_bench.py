"""tools/bench.py on a tiny input, one repetition: the table's structure and the guards, never a timing;
tools/bench_sha256.py's yardstick, instruction-count fit and -e check on small inputs.

Every kexloader child refuses to start unless the capture shim's seccomp filter is active, and its
raw_syscall is a recorder; kexec-tools only runs under the shim. Skips when gcc, kexec-tools or Debian's
kernel and Xen are not in the cache.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import bench  # noqa: E402
import bench_sha256  # noqa: E402
from kexec_tools_capture import capture as kt  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    try:
        shim, spawner = kt.build_shim(), bench.build_spawner()
        kexec = kt.kexec_binary(kt.kexec_tools_root())  # fetched on first use, as the capture tests do
        ld_path = kt._library_path(kexec, kt.cache_dir(), fetch=True)
        kernel, xen = bench.debian_inputs()
    except kt.CaptureError as e:
        pytest.skip(str(e))
    scratch = tmp_path_factory.mktemp("bench")
    inp = bench.make_inputs(scratch, [1], kernel, xen)
    return bench.floors() + bench.works(inp, shim, kexec, ld_path), scratch, spawner


def test_one_repetition_gives_every_row_and_its_ratios(setup):
    rows, scratch, spawner = setup
    samples = bench.measure(rows, 1, scratch, spawner)
    summary = bench.summarize(rows, samples)
    names = [r["work"] for r in summary]
    for prefix in ("floor: python3 -S", "floor: python3 -c", "-l, 1 MiB", "-p, 1 MiB", "-S", "-u", "-e",
                   "--inspect", "Xen multiboot (", "Xen multiboot from xen.gz"):
        assert any(n.startswith(prefix) for n in names), prefix
    paired = [r for r in summary if r["ratio"] is not None]
    assert {r["work"] for r in paired} == {"-l, 1 MiB initrd", "-S", "-u", "-e (to the reboot call)",
                                          "Xen multiboot (xen ELF + dom0 + 1 MiB initrd)"}
    for r in paired:
        a, b = samples[r["work"]]["kexloader"], samples[r["work"]]["kexec-tools"]
        assert len(a) == len(b) == 1
        assert r["ratio"]["wall"] == pytest.approx(statistics.median(x.wall for x in a) /
                                                   statistics.median(x.wall for x in b))
        assert r["ratio"]["rss"] == pytest.approx(a[0].rss / b[0].rss)
        assert a[0].rss > 0 and b[0].rss > 0
    text = bench.table(summary, bench.machine(), 1, (0.0, 0.0, 0.0))
    for n in names:
        assert n in text
    assert "machine:" in text and "load average" in text


def _row(rows, prefix):
    return next(w for w in rows if w.name.startswith(prefix))


def test_kexloader_child_refuses_without_the_shim(setup):
    rows, scratch, spawner = setup
    runner = _row(rows, "-l, 1 MiB").kexloader
    bare = bench.Runner(runner.argv, {k: v for k, v in runner.env.items() if k != "LD_PRELOAD"},
                        runner.expect_syscall, trap=runner.trap, label="bare")
    with pytest.raises(bench.BenchError, match="refused to run without the shim"):
        bench.spawn(bare, scratch, spawner)


def test_kexloader_run_that_misses_its_syscall_fails(setup):
    rows, scratch, spawner = setup
    runner = _row(rows, "--inspect").kexloader
    wrong = bench.Runner(runner.argv, runner.env, expect_syscall=bench.SYS_KEXEC_LOAD, trap=runner.trap)
    with pytest.raises(bench.BenchError, match="did not reach syscall 246"):
        bench.spawn(wrong, scratch, spawner)


def test_a_kexec_tools_side_without_the_shim_lines_fails(setup):
    # /bin/true stands in for kexec-tools run without the shim (kexec-tools itself is never run bare).
    rows, scratch, spawner = setup
    runner = _row(rows, "-u").kexec_tools
    bare = bench.Runner(["/bin/true"], {"PATH": "/usr/bin:/bin"}, expect_stderr=runner.expect_stderr,
                        ok_rc=runner.ok_rc)
    with pytest.raises(bench.BenchError, match="shim not loaded"):
        bench.spawn(bare, scratch, spawner)
    assert bench.SHIM_ACTIVE in runner.expect_stderr and "LD_PRELOAD" in runner.env


def test_guest_script_times_both_loaders_alternately():
    script = bench.guest_script(2, "/i.img").splitlines()
    runs = [ln.split()[1] for ln in script if ln.startswith("run ")]
    for rep in (0, 1):
        for tag in ("kl", "kt"):
            for op in ("l", "lu", "p", "pu", "S"):
                assert f"{tag}_{op}_{rep}" in runs
    assert runs[0].startswith("kl_") and runs[10].startswith("kt_")  # order flips every repetition
    assert all(bench.GUEST_KEXEC in ln for ln in script if ln.startswith("run kt_"))


# ------------------------------------------------------------------------------------------- bench_sha256

@pytest.fixture(scope="module")
def native():
    portable = bench_sha256.build_portable()
    if portable is None:
        pytest.skip("no C compiler for tools/sha256_portable.c")
    return bench_sha256.Native(portable)


def test_the_portable_c_yardstick_is_sha256(native):
    rng = random.Random(3)
    for trial in range(40):
        parts = [bytearray(rng.randbytes(rng.choice([0, 1, 55, 56, 63, 64, 65, rng.randrange(3000)])))
                 for _ in range(rng.randrange(1, 5))]
        spans = [(bench_sha256.address(p) if p else 0, len(p)) for p in parts]
        assert native.portable(spans) == hashlib.sha256(b"".join(parts)).digest(), trial


@pytest.mark.parametrize("sha_ni", [False, True], ids=["integer", "sha-ni"])
def test_instruction_counts_are_linear_in_the_bytes(sha_ni):
    """The extrapolation's premise: the count at a fourth size is exactly what three others predict; and
    testing a byte of fill for zero costs a small fraction of hashing it."""
    fit = bench_sha256.fit_instructions(sha_ni, h=1024, z=1024)
    predicted, counted = fit.check
    assert predicted == counted
    assert 0 < fit.per_zero < fit.per_hashed / 10


def test_the_check_at_exec_on_a_small_plan(native):
    tiny = Path(__file__).resolve().parents[2] / "fixtures/bzimage/tiny.bzImage"
    lay, rows = bench_sha256.plan_layout(tiny, 1)
    assert lay.zero_bytes > 0 and lay.hashed_bytes >= 1 << 20 and "kernel" in rows and "initrd" in rows
    got = dict(bench_sha256.check_at_exec(native, lay, 1))  # asserts every digest and the zero test itself
    assert "purgatory, integer: fills tested + buffers hashed (now)" in got
    assert "kexec-tools' purgatory (portable C, every byte hashed)" in got
    assert all(t >= 0 for t in got.values())
