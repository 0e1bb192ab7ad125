"""The intended structure, checked on every import (absolute and relative, at any depth of a module).

The one-way flow: formats -> images -> layout -> purgatory -> plan -> backend. The pure core never
reaches the running system; only the edges (system facts, the hypercall module, the backends, the
library face and the CLI) may. `cli.py` holds no policy: it parses arguments, picks a backend and
prints errors, so it imports the library face (`api`), the backends, the errors and its option table
(`options`, pure data), nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "kexloader"

# module (or package prefix) -> the kexloader modules it may import. A package name covers its modules.
CORE = ("errors", "kexec_abi", "model", "formats")
LAYOUT = (*CORE, "memory", "cmdline")
PURGATORY = (*LAYOUT, "purgatory")
HANDOFF = (*PURGATORY, "bootparams", "efiboot", "legacybios", "handoff", "initramfs", "crash")
IMAGES = (*HANDOFF, "images")
ALLOWED: dict[str, tuple[str, ...]] = {
    "formats": ("formats",),                       # a leaf: byte layouts, not kexec policy
    "errors": (),
    "kexec_abi": (),                               # kexec_load's flags: numbers, no imports (-u reaches them cheaply)
    "model": ("errors", "kexec_abi", "formats"),
    "memory": CORE,
    "cmdline": CORE,
    "purgatory": PURGATORY,
    "bootparams": HANDOFF, "efiboot": HANDOFF, "legacybios": HANDOFF, "handoff": HANDOFF,
    "initramfs": HANDOFF, "crash": HANDOFF,
    "images": IMAGES,
    # the edges: they read or write files or the running system, and never plan
    "schema": (),                                  # checks for the JSON read back (snapshots, plan.json)
    "plan": (*CORE, "schema", "files"),            # the Plan as data, and its directory form on disk
    "efi": CORE,                                   # EFI facts from /sys/firmware
    "xenefi": CORE,                                # EFI facts of an EFI-booted Xen's machine: pure, reads passed in
    "kexec_sysfs": (),                             # the kernel's kexec files in /sys: os only (-S reads them cheaply)
    "files": CORE,                                 # image, initrd and module files: mapped, inflated, opened
    "hypercall": CORE,
    "snapshot": (*CORE, "efi", "schema", "files"),
    "system": (*CORE, "efi", "xenefi", "hypercall", "snapshot", "kexec_sysfs"),
    "backends": (*CORE, "plan", "hypercall", "backends", "kexec_sysfs"),
    # the library face: everything but the command line
    "bootentries": (*IMAGES, "files", "plan", "system", "snapshot", "bootentries"),
    "inspect": (*IMAGES, "files", "plan", "inspect", "inspect_uki"),
    "inspect_uki": IMAGES,
    "fileload": (*IMAGES, "files", "plan", "bootentries"),
    "vmcore": CORE,
    "api": (*IMAGES, "files", "plan", "system", "snapshot", "bootentries", "inspect", "inspect_uki", "fileload",
            "vmcore"),
    "options": (),                                 # the command line as data (help, man page, completion)
    "cli": ("errors", "api", "backends", "options"),
    "entry": ("errors", "kexec_sysfs", "backends", "cli"),  # the command: bare -S and -u before cli's imports
    "__main__": ("entry",),
    "__init__": (),
}
# The pure core (everything but the edges) must not reach the OS.
EDGES = {"plan", "efi", "files", "system", "hypercall", "snapshot", "backends", "api", "cli", "fileload", "bootentries", "inspect",
         "inspect_uki", "vmcore", "kexec_sysfs", "entry", "__main__"}
OS_MODULES = {"ctypes", "subprocess", "socket", "fcntl", "mmap", "os", "shutil", "glob", "pathlib", "tempfile"}

MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    """kexloader/images/bzimage.py -> "images.bzimage"; kexloader/__init__.py -> "__init__"."""
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _package(path: Path) -> list[str]:
    """The package a module's relative imports start from, as kexloader-relative parts."""
    rel = list(path.relative_to(PKG).parent.parts)
    return rel


def imports(path: Path, source: str | None = None) -> tuple[set[str], set[str]]:
    """(kexloader modules imported, as "images.bzimage"; other top-level modules imported)."""
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "kexloader" or a.name.startswith("kexloader."):
                    inner.add(a.name.removeprefix("kexloader").lstrip(".") or "__init__")
                else:
                    outer.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                mod = node.module or ""
                if not (mod == "kexloader" or mod.startswith("kexloader.")):
                    outer.add(mod.split(".")[0])
                    continue
                base = mod.removeprefix("kexloader").lstrip(".").split(".") if mod != "kexloader" else []
            else:
                pkg = _package(path)
                up = node.level - 1
                assert up <= len(pkg), f"{path}: relative import above the package"
                base = pkg[:len(pkg) - up] + (node.module.split(".") if node.module else [])
            base = [b for b in base if b]
            for a in node.names:  # `from . import crash` imports kexloader.crash; `from .x import y`, x
                cand = [*base, a.name]
                is_module = (PKG.joinpath(*cand).with_suffix(".py").exists() or PKG.joinpath(*cand).is_dir())
                target = cand if is_module else base
                inner.add(".".join(target) or "__init__")
    return inner, outer


def _rule(name: str) -> tuple[str, ...]:
    for key in (name, name.split(".")[0]):
        if key in ALLOWED:
            return ALLOWED[key]
    raise AssertionError(f"kexloader.{name} has no place in the intended structure: add it to ALLOWED")


def _allowed(target: str, rule: tuple[str, ...]) -> bool:
    """`__init__` (the package: its __version__) is open to every module."""
    return target == "__init__" or any(target == r or target.startswith(r + ".") for r in rule)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_arrow_is_one_the_picture_allows(path):
    name = _name(path)
    rule = _rule(name)
    inner, _ = imports(path)
    bad = sorted(t for t in inner if t != name and not _allowed(t, rule))
    assert not bad, f"kexloader.{name} imports {bad}; it may import only {list(rule)}"


@pytest.mark.parametrize("path", [p for p in MODULES if _name(p).split(".")[0] not in EDGES],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pure_core_does_not_reach_the_system(path):
    _, outer = imports(path)
    bad = outer & OS_MODULES
    assert not bad, f"{path.name} imports {sorted(bad)}: move that to system.py, api.py, cli.py or backends/"


def test_the_checker_sees_relative_imports():
    """A relative import across a forbidden boundary counts like an absolute one, at any depth."""
    where = PKG / "images" / "probe_only.py"  # never written: the source is given as text
    inner, _ = imports(where, "from ..backends import linux\nfrom .. import cli\nfrom ..formats.pe import X\n"
                              "from . import bzimage\nimport kexloader.system\n")
    assert inner == {"backends.linux", "cli", "formats.pe", "images.bzimage", "system"}
    rule = _rule("images.probe_only")
    assert [t for t in sorted(inner) if not _allowed(t, rule)] == ["backends.linux", "cli", "system"]
