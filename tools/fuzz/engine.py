"""The fuzz loop: pick a corpus input, mutate it, run the target under a per-input timer, keep the input when
it reaches new lines of kexloader (coverage), and record each distinct crash site once, minimized.

A crash is any exception but KexloaderError; its site is the exception type and the innermost frame in
kexloader/ (or, when none, the innermost frame). A hang is an input that runs longer than the timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from kexloader import handoff
from kexloader.errors import KexloaderError

from .mutate import Mutator, slots
from .targets import ROOT, Target, quiet

PKG = str(ROOT / "kexloader") + "/"
TIMEOUT = 5.0  # seconds of CPU time per input
WALL_FACTOR = 12  # ... and this many times as long in wall time
SMALL_INPUT = 1 << 20  # corpus inputs up to this size are picked nine times in ten (Campaign._pick)


class Hang(BaseException):
    """Raised by the interval timer inside a target that runs too long (a BaseException: `except Exception`
    in the code under test does not swallow it)."""


@dataclass(frozen=True)
class Failure:
    kind: str  # "crash" or "hang"
    site: str
    trace: str


@dataclass
class Stats:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    crash_inputs: int = 0
    hangs: int = 0
    corpus: int = 0
    edges: int = 0
    sites: dict[str, str] = field(default_factory=dict)  # site -> reproducer file

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------------------------------ one input
def site_of(exc: BaseException) -> str:
    return f"{type(exc).__name__}@{_innermost(exc.__traceback__)}"


def _innermost(tb: TracebackType | None) -> str:
    """path:line:function of the innermost frame in kexloader/ (of the innermost frame when none is)."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if f.filename.startswith(PKG)] or frames
    if not ours:
        return "?"
    f = ours[-1]
    where = Path(f.filename).relative_to(ROOT) if f.filename.startswith(str(ROOT)) else Path(f.filename).name
    return f"{where}:{f.lineno}:{f.name}"


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("no result in time (SIGPROF: CPU time, SIGALRM: wall time)" + f" [{signal.Signals(signum).name}]")


def execute(target: Target, data: bytes, timeout: float = TIMEOUT) -> Failure | None:
    """Run one input: None when it ends normally or with a KexloaderError.

    `timeout` is CPU time (ITIMER_PROF): at nice 19 on a busy host a 0.1 s plan can take seconds of wall
    time. A wall-clock timer of WALL_FACTOR times as long catches an input that blocks instead of spinning."""
    old = signal.signal(signal.SIGPROF, _alarm), signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_PROF, timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout * WALL_FACTOR)
    try:
        with quiet():
            target.run(data)
    except KexloaderError:
        return None
    except Hang as e:
        return Failure("hang", site_of(e), "".join(traceback.format_exception(e)))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: B036 - MemoryError and RecursionError are findings too
        return Failure("crash", site_of(e), "".join(traceback.format_exception(e)))
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, old[0])
        signal.signal(signal.SIGALRM, old[1])
    return None


# ------------------------------------------------------------------------------------------ coverage
class Coverage:
    """Edges (previous line, line) inside kexloader/, recorded with sys.settrace while a target runs.

    The global trace function returns a local tracer only for frames of kexloader's own code, so construct,
    hashlib and the standard library run untraced but for the call event."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self._new: set[int] = set()
        self._prev = 0

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(PKG):
            return self._line
        return None

    def _line(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            here = hash((frame.f_code, frame.f_lineno))
            self._new.add(here ^ (self._prev * 31))
            self._prev = here
        return self._line

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        self._new, self._prev = set(), 0
        sys.settrace(self._call)
        try:
            yield
        finally:
            sys.settrace(None)

    def commit(self) -> int:
        """How many edges the last run added (they are now seen)."""
        fresh = self._new - self.seen
        self.seen |= fresh
        return len(fresh)


# ------------------------------------------------------------------------------------------ purgatory stub
@contextlib.contextmanager
def fast_purgatory() -> Iterator[None]:
    """Build the purgatory as with SHA-256 checks off (-i: no regions, no digest). Its SHA-256 routines take
    90 % of a plan's time and depend on nothing the parsers decide; the segments are still digested, and the
    purgatory's size, placement and hand-off checks still run."""
    real_size, real_build = getattr(handoff, "purgatory_size"), getattr(handoff, "build_purgatory")

    def unchecked(kw: dict[str, Any]) -> dict[str, Any]:
        out = {**kw, "options": dataclasses.replace(kw["options"], checks=False)}
        for name, empty in (("regions", ()), ("zeros", ()), ("digest", None)):
            if name in kw:
                out[name] = empty
        return out

    def size(h: Any, **kw: Any) -> int:
        return int(real_size(h, **unchecked(kw)))

    def build(base: int, h: Any, **kw: Any) -> Any:
        return real_build(base, h, **unchecked(kw))

    setattr(handoff, "purgatory_size", size)
    setattr(handoff, "build_purgatory", build)
    try:
        yield
    finally:
        setattr(handoff, "purgatory_size", real_size)
        setattr(handoff, "build_purgatory", real_build)


# ------------------------------------------------------------------------------------------ minimizing
def minimize(target: Target, data: bytes, failure: Failure, budget: float = 60.0) -> bytes:
    """A smaller input with the same failure site: JSON values dropped (JSON targets), the tail cut, then
    chunks zeroed, largest first, while the time budget lasts."""
    end = time.monotonic() + budget

    def same(d: bytes) -> bool:
        got = execute(target, d)
        return got is not None and got.site == failure.site

    if target.json_input:
        data = _minimize_json(data, same, end)
    n = len(data) // 2
    while n >= 1 and time.monotonic() < end:
        if len(data) > n and same(data[:-n]):
            data = data[:-n]
        else:
            n //= 2
    chunk = max(len(data) // 2, 1)
    while chunk >= 1 and time.monotonic() < end and not target.json_input:
        for at in range(0, len(data), chunk):
            if time.monotonic() >= end:
                break
            piece = data[at:at + chunk]
            if piece.count(0) == len(piece):
                continue
            trial = data[:at] + bytes(len(piece)) + data[at + chunk:]
            if same(trial):
                data = trial
        chunk //= 2
    return data


def _minimize_json(data: bytes, same: Callable[[bytes], bool], end: float) -> bytes:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return data
    changed = True
    while changed and time.monotonic() < end:
        changed = False
        for parent, key in list(slots(doc)):
            if time.monotonic() >= end:
                break
            saved = parent[key]
            for edit in ("drop", "zero"):  # a key or list item left out, else its value made 0
                if edit == "drop":
                    parent.pop(key)
                else:
                    parent[key] = 0
                try:
                    trial = json.dumps(doc).encode()
                except (ValueError, RecursionError):
                    trial = b""
                if trial and trial != data and same(trial):
                    data, changed = trial, True
                    break
                if edit == "drop" and isinstance(parent, list):
                    parent.insert(key, saved)
                else:
                    parent[key] = saved
            if changed:
                break
    return data


# ------------------------------------------------------------------------------------------ the loop
@dataclass
class Campaign:
    target: Target
    out: Path
    seed: int = 0
    coverage: bool = True
    trace_every: int = 1  # with coverage: trace one input in this many (the rest run at blind speed)
    log: Callable[[str], None] = print
    stats: Stats = field(init=False)
    corpus: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = self.out / self.target.name
        (self.dir / "corpus").mkdir(parents=True, exist_ok=True)
        (self.dir / "crashes").mkdir(exist_ok=True)
        self.stats = self._load_stats()
        self.cov = Coverage()

    def _load_stats(self) -> Stats:
        p = self.dir / "stats.json"
        if p.is_file():
            with contextlib.suppress(ValueError, TypeError):
                return Stats(**json.loads(p.read_text()))
        return Stats(self.target.name)

    def save(self) -> None:
        (self.dir / "stats.json").write_text(json.dumps(asdict(self.stats), indent=1) + "\n")

    def _try(self, data: bytes, trace: bool = True) -> Failure | None:
        if self.coverage and trace:
            with self.cov.watch():
                failure = execute(self.target, data)
            if self.cov.commit() and failure is None:
                self._keep(data)
        else:
            failure = execute(self.target, data)
        return failure

    def _keep(self, data: bytes) -> None:
        self.corpus.append(data)
        name = hashlib.sha1(data).hexdigest()[:16]
        (self.dir / "corpus" / f"{name}.bin").write_bytes(data)

    def load_corpus(self) -> None:
        """The target's seeds and whatever an earlier run kept, each run once (coverage starts from them)."""
        seeds = self.target.seeds()
        kept = [p.read_bytes() for p in sorted((self.dir / "corpus").glob("*.bin"))]
        for data in seeds + kept:
            failure = self._try(data) if self.coverage else execute(self.target, data)
            if failure:
                self.record(data, failure)
            if data not in self.corpus:
                self.corpus.append(data)

    def record(self, data: bytes, failure: Failure) -> None:
        if failure.kind == "hang":
            again = execute(self.target, data, timeout=TIMEOUT * 2)
            if again is None or again.kind != "hang":  # it ends: slow once (a busy host), not a hang
                self.log(f"{self.target.name}: an input over the time limit ends when run again: not a hang")
                return
            self.stats.hangs += 1
        else:
            self.stats.crash_inputs += 1
        if failure.site in self.stats.sites:
            return
        self.log(f"{self.target.name}: new {failure.kind} {failure.site} ({len(data)} bytes), minimizing")
        small = minimize(self.target, data, failure) if failure.kind == "crash" else data
        again = execute(self.target, small) or failure
        slug = re.sub(r"[^\w.-]+", "_", failure.site)[:100] + "-" + hashlib.sha1(failure.site.encode()).hexdigest()[:8]
        path = self.dir / "crashes" / f"{slug}.bin"
        path.write_bytes(small)
        path.with_suffix(".txt").write_text(f"target: {self.target.name}\nsite: {failure.site}\n"
                                            f"size: {len(small)} (found at {len(data)})\n\n{again.trace}")
        self.stats.sites[failure.site] = str(path)
        self.log(f"{self.target.name}: {failure.site} -> {path} ({len(small)} bytes)")

    def run(self, *, count: int | None = None, seconds: float | None = None, until: int | None = None,
            report_every: float = 60.0) -> Stats:
        """Fuzz until `count` inputs ran, `seconds` passed, or the target's total reached `until`."""
        rng = random.Random(f"{self.seed}:{self.target.name}:{self.stats.inputs}")
        mutator = Mutator(rng, self.target.hot, self.target.json_input)
        start = last = time.monotonic()
        done = 0
        self.stats.corpus = len(self.corpus)
        try:
            while True:
                if count is not None and done >= count:
                    break
                if until is not None and self.stats.inputs >= until:
                    break
                now = time.monotonic()
                if seconds is not None and now - start >= seconds:
                    break
                data = mutator.mutate(self._pick(rng), self.corpus)
                failure = self._try(data, trace=self.stats.inputs % self.trace_every == 0)
                done += 1
                self.stats.inputs += 1
                if failure:
                    self.record(data, failure)
                if now - last >= report_every:
                    self.stats.seconds += now - last
                    last = now
                    self._progress()
        finally:
            self.stats.seconds += time.monotonic() - last
            self.stats.corpus, self.stats.edges = len(self.corpus), len(self.cov.seen)
            self.save()
        self._progress()
        return self.stats

    def _pick(self, rng: random.Random) -> bytes:
        """A corpus input to mutate: nine times in ten one of the small ones (as AFL favours small, fast
        inputs): a real 15 MiB kernel costs ten times a small image in copies and digests and exercises the
        same header code; the large ones still get every tenth turn."""
        small = [d for d in self.corpus if len(d) <= SMALL_INPUT]
        if small and len(small) < len(self.corpus) and rng.random() < 0.9:
            return rng.choice(small)
        return rng.choice(self.corpus)

    def _progress(self) -> None:
        s = self.stats
        s.corpus, s.edges = len(self.corpus), len(self.cov.seen)
        self.log(f"{s.target}: {s.inputs} inputs in {s.seconds:.0f} s ({s.rate:.1f}/s), "
                 f"{len(s.sites)} sites ({s.crash_inputs} crashing inputs), {s.hangs} hangs, "
                 f"corpus {s.corpus}, edges {s.edges}")
        self.save()
