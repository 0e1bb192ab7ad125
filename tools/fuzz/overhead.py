"""python3 -m tools.fuzz.overhead [TARGET...]: the CPU time of the same inputs with and without the coverage
tracer (process time, so other load on the machine does not count). The figures in README.md come from here."""

from __future__ import annotations

import random
import sys
import time

from .engine import Coverage, execute, fast_purgatory
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


def main(argv: list[str]) -> None:
    with fast_purgatory():
        for name in argv or list(TARGETS):
            fast, slow = measure(name)
            print(f"{name:20} {fast:8.1f}/s blind  {slow:8.1f}/s traced  slowdown x{fast / slow:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
