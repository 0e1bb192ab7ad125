"""python3 -m tools.fuzz.overhead [TARGET...]: the CPU time of the same inputs with and without the coverage
tracer (process time, so other load on the machine does not count). The figures in README.md come from here.

python3 -m tools.fuzz.overhead --compare N [TARGET...]: edges reached after N inputs, guided and blind."""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from .engine import Campaign, Coverage, execute, fast_purgatory
from .mutate import Mutator
from .targets import TARGETS


def measure(name: str, n: int = 200) -> tuple[float, float]:
    t = TARGETS[name]
    seeds = t.seeds()
    m = Mutator(random.Random(1), t.hot, t.json_input)
    inputs = seeds + [m.mutate(random.Random(i).choice(seeds), seeds) for i in range(n)]
    cov = Coverage()
    plain = traced = 0.0
    for data in inputs:  # interleaved, so both see the same caches and the same machine
        t0 = time.process_time()
        execute(t, data)
        t1 = time.process_time()
        with cov.watch():
            execute(t, data)
        cov.commit()
        t2 = time.process_time()
        plain, traced = plain + t1 - t0, traced + t2 - t1
    return len(inputs) / plain, len(inputs) / traced


def guided_vs_blind(name: str, n: int, seed: int = 0) -> tuple[int, int]:
    """Edges reached after `n` inputs when new-coverage inputs are kept (guided) and when mutation starts from
    the seeds only (blind, traced just to count): what the tracer's cost buys per input."""
    out = []
    for keep in (True, False):
        with tempfile.TemporaryDirectory() as d:
            c = Campaign(TARGETS[name], Path(d), seed=seed, log=lambda s: None)
            if not keep:
                c._keep = lambda data: None  # type: ignore[method-assign]
            c.load_corpus()
            c.run(count=n, report_every=1e9)
            out.append(len(c.cov.seen))
    return out[0], out[1]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--compare"]:
        n = int(argv[1])
        with fast_purgatory():
            for name in argv[2:] or list(TARGETS):
                guided, blind = guided_vs_blind(name, n)
                print(f"{name:20} after {n} inputs: {guided} edges guided, {blind} blind", flush=True)
        return
    with fast_purgatory():
        for name in argv or list(TARGETS):
            fast, slow = measure(name)
            print(f"{name:20} {fast:8.1f}/s blind  {slow:8.1f}/s traced  slowdown x{fast / slow:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
