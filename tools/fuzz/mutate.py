"""The mutator: byte-level edits (AFL's classic set, written from its public description) and, for JSON
inputs, edits of one value with a hostile one.

Every choice comes from the `random.Random` it is given, so a seed replays a run exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

# boundary values for 8/16/32/64-bit fields: the ends of the signed and unsigned ranges and their neighbours
INTERESTING = {
    1: (0, 1, 0x7F, 0x80, 0xFF, 0x10, 0x20, 0x40, 0x64),
    2: (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x100, 0x200, 0x400, 0x1000, 0xFFFE),
    4: (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0x100000, 0x1000000, 0xFFFFF000, 0xFFFFFFFE),
    8: (0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 32, 1 << 52, (1 << 64) - 0x1000),
}
MAX_SIZE = 32 << 20  # grown inputs stop here (above the largest real kernel seed, 15 MiB): bigger is only slower

Hot = Callable[[bytes], Sequence[tuple[int, int]]]  # the header ranges of an input: [start, end)

# JSON values a hostile or careless file holds where a number, a string or a list belongs
HOSTILE_JSON: tuple[Any, ...] = (
    None, True, 0, -1, 1 << 64, (1 << 64) - 1, 1 << 200, -(1 << 63), 0.5, float("nan"), float("inf"),
    float("-inf"), "", "x", "0x1000", "\u00e9\0", [], [0], [0, 0], [0, 0, 0], [0, 0, 0, 0], ["a", "b", "c", "d"],
    {}, {"start": 0}, [[0, 4096, "System RAM"]], "A" * 5000, [[[[[[[[[[[]]]]]]]]]]],
)
NEST_MARK = "\0nest\0"


class Mutator:
    def __init__(self, rng: random.Random, hot: Hot | None = None, json_input: bool = False):
        self.rng = rng
        self.hot = hot
        self.json_input = json_input

    def mutate(self, data: bytes, corpus: Sequence[bytes]) -> bytes:
        """One to eight stacked edits of `data` (a JSON input gets a JSON-aware edit half of the time)."""
        rng = self.rng
        if self.json_input and rng.random() < 0.5:
            edited = self.json_edit(data)
            if edited is not None:
                return edited
        buf = bytearray(data)
        for _ in range(1 << rng.randrange(4)):
            op = rng.randrange(10)
            if op == 0 and corpus:
                buf = self.splice(buf, rng.choice(corpus))
            elif op == 1:
                buf = self.truncate(buf)
            elif op == 2:
                self.insert(buf)
            elif op == 3:
                self.delete(buf)
            elif op == 4:
                self.copy_chunk(buf)
            elif buf:
                [self.bit_flip, self.random_byte, self.interesting, self.arith, self.interesting][op - 5](buf)
        return bytes(buf[:MAX_SIZE])

    # ---- where to edit: a header field (when the target knows where its headers are) or anywhere
    def offset(self, buf: bytearray, width: int = 1) -> int:
        n = len(buf) - width + 1
        if n <= 0:
            return 0
        if self.hot is not None and self.rng.random() < 0.7:
            ranges = [(a, min(b, n)) for a, b in self.hot(bytes(buf[:1 << 16])) if a < min(b, n)]
            if ranges:
                a, b = self.rng.choice(ranges)
                return self.rng.randrange(a, b)
        return self.rng.randrange(n)

    def width(self) -> int:
        return self.rng.choice((1, 2, 4, 8))

    def bit_flip(self, buf: bytearray) -> None:
        buf[self.offset(buf)] ^= 1 << self.rng.randrange(8)

    def random_byte(self, buf: bytearray) -> None:
        buf[self.offset(buf)] = self.rng.randrange(256)

    def interesting(self, buf: bytearray) -> None:
        w = self.width()
        if len(buf) < w:
            return
        pos = self.offset(buf, w)
        value = self.rng.choice(INTERESTING[w])
        buf[pos:pos + w] = value.to_bytes(w, self.rng.choice(("little", "big")))

    def arith(self, buf: bytearray) -> None:
        w = self.width()
        if len(buf) < w:
            return
        pos = self.offset(buf, w)
        old = int.from_bytes(buf[pos:pos + w], "little")
        new = (old + self.rng.choice((-1, 1)) * self.rng.randrange(1, 36)) % (1 << (8 * w))
        buf[pos:pos + w] = new.to_bytes(w, "little")

    def truncate(self, buf: bytearray) -> bytearray:
        if not buf:
            return buf
        cut = self.rng.choice((self.offset(buf), self.rng.randrange(len(buf)), len(buf) - self.rng.randrange(1, 65)))
        return buf[:max(cut, 0)]

    def insert(self, buf: bytearray) -> None:
        pos = self.rng.randrange(len(buf) + 1)
        n = self.rng.choice((1, 2, 4, 8, 16, 128, 4096))
        fill = self.rng.choice((b"\0", b"\xff", bytes([self.rng.randrange(256)]), None))
        chunk = fill * n if fill is not None else self.rng.randbytes(n)
        buf[pos:pos] = chunk

    def delete(self, buf: bytearray) -> None:
        if not buf:
            return
        pos = self.rng.randrange(len(buf))
        del buf[pos:pos + self.rng.choice((1, 2, 4, 8, 64, 512))]

    def copy_chunk(self, buf: bytearray) -> None:
        if len(buf) < 2:
            return
        src, dst = self.rng.randrange(len(buf)), self.offset(buf)
        n = self.rng.randrange(1, min(len(buf) - src, 256) + 1)
        buf[dst:dst + n] = buf[src:src + n]

    def splice(self, buf: bytearray, other: bytes) -> bytearray:
        if not buf or not other:
            return buf
        return buf[:self.rng.randrange(len(buf))] + other[self.rng.randrange(len(other)):]

    # ---- JSON: one value replaced, a key dropped or a list grown, then written back (NaN and all)
    def json_edit(self, data: bytes) -> bytes | None:
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return None
        found = list(slots(doc))
        if not found:
            return None
        parent, key = self.rng.choice(found)
        op = self.rng.randrange(6)
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 1 and isinstance(parent[key], list) and parent[key]:
            parent[key].append(self.rng.choice(parent[key]))
        elif op == 2:  # deep nesting, spliced in as text (json.dumps itself refuses it)
            parent[key] = NEST_MARK
        elif op == 3 and isinstance(parent[key], int) and not isinstance(parent[key], bool):
            parent[key] = self.rng.choice(INTERESTING[self.rng.choice((4, 8))]) + self.rng.choice((-1, 0, 1))
        else:
            parent[key] = self.rng.choice(HOSTILE_JSON)
        try:
            text = json.dumps(doc)
        except (ValueError, RecursionError):
            return None
        depth = self.rng.choice((50, 500, 5000))
        return text.replace(json.dumps(NEST_MARK), "[" * depth + "]" * depth).encode()


def slots(doc: Any) -> Any:
    """(container, key) for every value inside `doc`, depth first."""
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            yield node, k
            if isinstance(v, (dict, list)):
                stack.append(v)
