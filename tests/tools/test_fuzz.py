"""The fuzzer's short run (issue 16): every target for a fixed count with a fixed seed, coverage on; any
crash or hang fails, naming the minimized reproducer. Plus checks that the fuzzer itself can find and
minimize a crash, time out a hang, and replay a seed."""

import random

import pytest

from kexloader.errors import MalformedImageError
from tools.fuzz import engine, mutate
from tools.fuzz.engine import Campaign, execute, fast_purgatory, minimize
from tools.fuzz.targets import TARGETS, Target

# inputs per target: about 5 s each on a 2-core host (plans run at 50-150/s, parsers alone at 1000+/s)
COUNTS = {"bzimage": 300, "bzimage-compressed": 1500, "vmlinux": 600, "multiboot": 500, "uki": 400, "module": 400,
          "decompress": 3000, "inspect": 600, "plan-in": 3000, "snapshot": 300, "vmcore": 1500}


def test_every_target_has_a_count():
    assert set(COUNTS) == set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_run_finds_no_crash(name, tmp_path):
    lines = []
    c = Campaign(TARGETS[name], tmp_path, seed=16, log=lines.append)
    with fast_purgatory():
        c.load_corpus()
        stats = c.run(count=COUNTS[name], report_every=1e9)
    assert stats.inputs == COUNTS[name]
    found = {site: path for site, path in stats.sites.items()}
    assert not found, "crashes (reproducer, then traceback beside it as .txt):\n" + "\n".join(
        f"  {site}\n    {path}" for site, path in found.items())
    assert stats.hangs == 0


def crashy(data: bytes) -> None:
    """A parser with a bug: a KeyError when byte 7 is 0x42 and the input is at least 64 bytes long."""
    if len(data) >= 64 and data[7] == 0x42:
        raise KeyError("bug")
    raise MalformedImageError("fine")


def test_finds_records_and_minimizes_a_crash(tmp_path):
    t = Target("crashy", "test", crashy, lambda: [bytes(range(200))], hot=lambda d: [(7, 8)])
    c = Campaign(t, tmp_path, seed=1, coverage=False, log=lambda s: None)
    c.load_corpus()
    stats = c.run(count=20000)
    [(site, path)] = stats.sites.items()
    assert site.startswith("KeyError@") and site.endswith(":crashy")
    small = open(path, "rb").read()
    assert len(small) == 64 and small[7] == 0x42 and small.count(0) == 63  # cut to 64, all else zeroed
    assert "KeyError: 'bug'" in open(path[:-4] + ".txt").read()


def test_a_hang_is_caught_by_the_timer():
    def spin(data: bytes) -> None:
        while True:
            pass

    f = execute(Target("spin", "test", spin, lambda: [b""]), b"x", timeout=0.2)
    assert f is not None and f.kind == "hang"


def test_minimize_keeps_the_site():
    t = Target("crashy", "test", crashy, lambda: [b""])
    data = bytes([0x42] * 300)
    f = execute(t, data)
    assert f is not None
    small = minimize(t, data, f, budget=10)
    assert execute(t, small).site == f.site and len(small) == 64


def test_a_seed_replays():
    seeds = [bytes(range(256)) * 4]
    runs = []
    for _ in range(2):
        m = mutate.Mutator(random.Random(7), json_input=False)
        runs.append([m.mutate(seeds[0], seeds) for _ in range(50)])
    assert runs[0] == runs[1] and len({bytes(x) for x in runs[0]}) > 40


def test_json_edits_reach_hostile_values():
    m = mutate.Mutator(random.Random(3), json_input=True)
    doc = b'{"a": [1, 2, {"b": 3}], "c": "x"}'
    outs = [m.mutate(doc, [doc]) for _ in range(300)]
    assert any(b"NaN" in o or b"Infinity" in o for o in outs)
    assert any(b"[[[[[[[[[[" in o for o in outs)
    assert any(b"18446744073709551615" in o or b"18446744073709551616" in o for o in outs)


def test_until_resumes_from_the_saved_totals(tmp_path):
    t = TARGETS["decompress"]
    first = Campaign(t, tmp_path, seed=2, log=lambda s: None)
    first.load_corpus()
    first.run(until=300)
    again = Campaign(t, tmp_path, seed=2, log=lambda s: None)
    assert again.stats.inputs == 300 and again.stats.seconds > 0
    again.load_corpus()
    assert len(again.corpus) >= len(first.corpus)  # the kept inputs come back from OUT/TARGET/corpus
    assert again.run(until=450).inputs == 450


def test_sampled_coverage_traces_one_input_in_n(tmp_path, monkeypatch):
    """--trace-every N: the corpus is traced whole, then one mutated input in N."""
    traced = []
    t = Target("plain", "test", lambda data: None, lambda: [b"a" * 64, b"b" * 64])
    c = Campaign(t, tmp_path, seed=1, trace_every=5, log=lambda s: None)
    real_watch = c.cov.watch

    def counting_watch():
        traced.append(1)
        return real_watch()

    monkeypatch.setattr(c.cov, "watch", counting_watch)
    c.load_corpus()
    assert len(traced) == 2
    c.run(count=50)
    assert len(traced) == 2 + 10


def test_small_corpus_inputs_are_picked_nine_times_in_ten(tmp_path):
    t = Target("plain", "test", lambda data: None, lambda: [b""])
    c = Campaign(t, tmp_path, seed=1, coverage=False, log=lambda s: None)
    big, small = bytes(engine.SMALL_INPUT + 1), b"s"
    c.corpus = [big, small, big, big]
    rng = random.Random(5)
    picks = [c._pick(rng) for _ in range(2000)]
    assert 0.85 < picks.count(small) / len(picks) < 0.95
    c.corpus = [big, big]  # none small: any
    assert c._pick(rng) is big
