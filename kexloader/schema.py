"""Checks for the JSON kexloader reads back (snapshots, plan.json): every value's type, range and size is known
before any of it is used, and a wrong one is named by its path (`segments[3].mem: not an integer`).

A schema is built from the small checkers below; `check(doc, schema)` returns the document unchanged or raises
SchemaError. `parse(text)` is json.loads that refuses NaN/Infinity and reports deep nesting as a SchemaError.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

U64 = 1 << 64

Checker = Callable[[Any, str], None]  # (value, its path) -> None, or SchemaError


class SchemaError(ValueError):
    """A value that does not fit its schema; the message starts with its path."""


def parse(text: str | bytes) -> Any:
    """JSON as kexloader writes it: no NaN or Infinity; nesting deep enough to exhaust the parser's recursion
    is one error, not a RecursionError (the schema below never nests deeper than it walks)."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except SchemaError:
        raise
    except RecursionError:
        raise SchemaError("nested too deeply") from None
    except UnicodeDecodeError as e:
        raise SchemaError(f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise SchemaError(f"not JSON: {e.msg} (line {e.lineno} column {e.colno})") from None
    except ValueError as e:  # an integer of more digits than int() converts
        raise SchemaError(f"not JSON kexloader writes: {e}") from None


def _no_constant(name: str) -> Any:
    raise SchemaError(f"{name} is not a number kexloader writes")


def check(doc: Any, schema: Checker, path: str = "") -> Any:
    schema(doc, path)
    return doc


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _fail(path: str, message: str) -> SchemaError:
    return SchemaError(f"{path}: {message}" if path else message)


def integer(lo: int = 0, hi: int = U64 - 1) -> Checker:
    """An integer in [lo, hi] (a JSON true/false is not one)."""
    def checker(v: Any, path: str) -> None:
        if type(v) is not int:
            raise _fail(path, "not an integer")
        if not lo <= v <= hi:
            raise _fail(path, f"{v:#x} is outside [{lo:#x}, {hi:#x}]")
    return checker


ADDRESS = integer()  # a 64-bit physical address or size


def boolean(v: Any, path: str) -> None:
    if type(v) is not bool:
        raise _fail(path, "not true or false")


def string(max_len: int = 4096, pattern: str | None = None) -> Checker:
    def checker(v: Any, path: str) -> None:
        if type(v) is not str:
            raise _fail(path, "not a string")
        if len(v) > max_len:
            raise _fail(path, f"a string of {len(v)} characters (at most {max_len})")
        try:  # a lone UTF-16 surrogate (JSON "\ud800") is no text; the escapes of undecodable argv bytes are
            v.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise _fail(path, "not text (a lone surrogate)") from None
        if pattern is not None and not re.fullmatch(pattern, v):
            raise _fail(path, f"{v[:80]!r} is not of the form {pattern}")
    return checker


def base64_bytes(size: int) -> Checker:
    """A base64 string of exactly `size` bytes."""
    def checker(v: Any, path: str) -> None:
        string(size * 2)(v, path)
        try:
            got = len(base64.b64decode(v, validate=True))
        except (binascii.Error, ValueError):
            raise _fail(path, "not base64") from None
        if got != size:
            raise _fail(path, f"{got} bytes, expected {size}")
    return checker


def hex_bytes(max_bytes: int) -> Checker:
    return string(max_bytes * 2, r"(?:[0-9a-fA-F]{2})*")


def optional(inner: Checker) -> Checker:
    """`inner`, or null."""
    def checker(v: Any, path: str) -> None:
        if v is not None:
            inner(v, path)
    return checker


def list_of(item: Checker, max_items: int) -> Checker:
    def checker(v: Any, path: str) -> None:
        if type(v) is not list:
            raise _fail(path, "not a list")
        if len(v) > max_items:
            raise _fail(path, f"{len(v)} entries (at most {max_items})")
        for i, x in enumerate(v):
            item(x, _at(path, i))
    return checker


def row(*items: Checker) -> Checker:
    """A list of exactly len(items) values, each with its own checker ([start, size, type])."""
    def checker(v: Any, path: str) -> None:
        if type(v) is not list:
            raise _fail(path, "not a list")
        if len(v) != len(items):
            raise _fail(path, f"{len(v)} values, expected {len(items)}")
        for i, (x, item) in enumerate(zip(v, items)):
            item(x, _at(path, i))
    return checker


def address_range(v: Any, path: str) -> None:
    """[start, size] inside the 64-bit address space."""
    row(ADDRESS, ADDRESS)(v, path)
    if v[0] + v[1] > U64:
        raise _fail(path, f"[{v[0]:#x}, +{v[1]:#x}) ends past 2^64")


def obj(fields: Mapping[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    """An object: the named fields checked when present (unknown ones are ignored: a newer writer's)."""
    def checker(v: Any, path: str) -> None:
        if type(v) is not dict:
            raise _fail(path, "not an object")
        for name in required:
            if name not in v:
                raise _fail(_at(path, name), "missing")
        for name, field in fields.items():
            if name in v:
                field(v[name], _at(path, name))
    return checker
