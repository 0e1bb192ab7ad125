"""python3 -m tools.fuzz TARGET|all [--seconds N | --count N | --until N] [--seed S] [--out DIR] [--jobs J]

Runs each named target (see --list) and writes OUT/TARGET/{stats.json,corpus/,crashes/} and OUT/fuzz.log.
Exit status 1 when a crash or hang was found in this run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .engine import Campaign, Stats, fast_purgatory
from .targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tools.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", help="target names, or all")
    p.add_argument("--list", action="store_true", help="list the targets")
    p.add_argument("--summary", action="store_true", help="a table of the totals in --out, then stop")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--seconds", type=float, help="run each target this long")
    stop.add_argument("--count", type=int, help="run each target this many inputs")
    stop.add_argument("--until", type=int, help="run each target until its total in OUT reaches this (resumable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("/tmp/kexloader-fuzz"))
    p.add_argument("--jobs", type=int, default=1, help="targets run in parallel processes")
    p.add_argument("--no-coverage", action="store_true", help="blind mutation (no sys.settrace)")
    p.add_argument("--trace-every", type=int, default=1, metavar="N",
                   help="trace coverage on one input in N (sampled: the others run untraced, ~3x as fast)")
    p.add_argument("--real-purgatory", action="store_true", help="build the purgatory with its SHA-256 code")
    p.add_argument("--slice", type=float, help="with --until: take turns, this many seconds per target per turn, "
                   "in one process (every target advances; a long campaign stopped early has figures for all)")
    a = p.parse_args(argv)
    if a.summary:
        print(summary(a.out))
        return 0
    if a.list or not a.targets:
        for t in TARGETS.values():
            print(f"{t.name:20} {t.doc}")
        return 0
    names = list(TARGETS) if a.targets == ["all"] else a.targets
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; see --list")
    if a.trace_every < 1:
        p.error("--trace-every takes a whole number >= 1")
    if a.seconds is None and a.count is None and a.until is None:
        a.seconds = 60.0
    # kill PID: stop as Ctrl-C does, the current target's totals saved (the campaign resumes from them)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    jobs = [(n, a) for n in names]
    if a.slice:
        if a.until is None:
            p.error("--slice takes turns until every target reaches --until N")
        results = _take_turns(names, a)
    elif a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as pool:
            results = list(pool.map(_run_one, jobs))
    else:
        results = [_run_one(j) for j in jobs]
    found = 0
    for before, s in results:
        found += len(s.sites) - before
        print(f"{s.target:20} {s.inputs:>9} inputs {s.rate:8.1f}/s  sites {len(s.sites)}  crashing inputs "
              f"{s.crash_inputs}  hangs {s.hangs}")
        for site, path in s.sites.items():
            print(f"    {site}\n        {path}")
    return 1 if found else 0


def summary(out: Path) -> str:
    """The totals of every target in `out` as a Markdown table (what README's campaign section shows)."""
    rows = ["| target | inputs | seconds | inputs/s | crash sites | crashing inputs | hangs | corpus | edges |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in TARGETS:
        f = out / name / "stats.json"
        if f.is_file():
            s = Stats(**json.loads(f.read_text()))
            rows.append(f"| {name} | {s.inputs:,} | {s.seconds:,.0f} | {s.rate:,.1f} | {len(s.sites)} | "
                        f"{s.crash_inputs} | {s.hangs} | {s.corpus} | {s.edges} |")
    return "\n".join(rows)


def _logger(out: Path) -> Callable[[str], None]:
    out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} {line}"
        print(stamped, file=sys.stderr, flush=True)
        with (out / "fuzz.log").open("a") as f:
            f.write(stamped + "\n")
    return log


def _take_turns(names: list[str], a: argparse.Namespace) -> list[tuple[int, Stats]]:
    log = _logger(a.out)
    campaigns = [Campaign(TARGETS[n], a.out, seed=a.seed, coverage=not a.no_coverage, trace_every=a.trace_every,
                          log=log) for n in names]
    before = [len(c.stats.sites) for c in campaigns]
    with (fast_purgatory() if not a.real_purgatory else _nothing()):
        for c in campaigns:
            if c.stats.inputs < a.until:
                c.load_corpus()
        while True:
            behind = [c for c in campaigns if c.stats.inputs < a.until]
            if not behind:
                break
            for c in behind:
                c.run(seconds=a.slice, until=a.until)
    return [(b, c.stats) for b, c in zip(before, campaigns)]


def _run_one(job: tuple[str, argparse.Namespace]) -> tuple[int, Stats]:
    name, a = job
    c = Campaign(TARGETS[name], a.out, seed=a.seed, coverage=not a.no_coverage, trace_every=a.trace_every,
                 log=_logger(a.out))
    before = len(c.stats.sites)
    with (fast_purgatory() if not a.real_purgatory else _nothing()):
        c.load_corpus()
        stats = c.run(count=a.count, seconds=a.seconds, until=a.until)
    return before, stats


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
