"""Python inside the guest: Debian's interpreter, a pruned zipped stdlib, and kexloader from its wheel.

Two trees are staged on the host and merged into an initramfs:

* the *runtime* (`build_runtime`): the host release's interpreter (/usr/bin/python3 resolved, e.g.
  /usr/bin/python3.11 on Debian 12, python3.13 on Debian 13), the shared libraries `ldd` names for it
  and for the extension modules kept, the stdlib compiled to .pyc in /usr/lib/python3XY.zip
  (pruned of tests, idlelib, tkinter, ensurepip, lib2to3, ...), and lib-dynload. Cached under
  $KEXLOADER_CACHE/vm/runtime-<key>, keyed by the interpreter and this file.
* the *packages* (`build_packages`): the kexloader wheel built from the working tree
  (`pip wheel --no-deps` on a clean copy, so stale build/ files never leak in) and its
  dependencies' cp3XY manylinux wheels (the guest interpreter's tags, whatever
  Python runs pip), installed with `pip install --target` into
  /usr/lib/python3/dist-packages, plus /usr/bin/kexloader generated from the wheel's own
  console_scripts entry point. So the guest runs the code under test as the wheel installs it,
  never the source tree.

The guest's environment must set PYTHONHOME=/usr (the init script does).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .env import GUEST_PYTHON, GUEST_PYVER, REPO, work_dir

PYVER = GUEST_PYVER  # "3.11" on Debian 12, "3.13" on Debian 13
CPTAG = "cp" + PYVER.replace(".", "")
STDLIB = Path(f"/usr/lib/python{PYVER}")
SITE_DIR = "usr/lib/python3/dist-packages"  # Debian's site.py puts this on sys.path

# Top-level stdlib entries left out of the guest.
STDLIB_PRUNE = {
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3", "pydoc_data",
    "pydoc.py", "distutils", "site-packages", "dist-packages", "__pycache__", "venv", "sqlite3",
    "dbm", "curses", "__phello__", "__hello__.py", "antigravity.py", "this.py", "doctest.py",
    "unittest", "xmlrpc", "wsgiref", "msilib", "lib-dynload",
}
# Any directory with one of these names, at any depth (package test suites).
STDLIB_PRUNE_ANYWHERE = {"test", "tests", "idle_test", "__pycache__"}
# Extension modules left out: tests, GUI/terminal/database bindings that would pull in big libraries.
DYNLOAD_PRUNE = re.compile(
    r"^(_test|_xxtest|xxlimited|_ctypes_test|_tkinter|_sqlite3|_ssl|_curses|_dbm|_gdbm|readline|nis|"
    r"ossaudiodev|_crypt|audioop|_xxsubinterpreters)"
)

# Pip options that select wheels for the guest's interpreter, whatever the host's python is.
GUEST_WHEEL_TAGS = [
    "--only-binary=:all:", "--implementation", "cp", "--python-version", PYVER, "--abi", CPTAG,
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux2014_x86_64", "--platform", "manylinux2010_x86_64",
    "--platform", "manylinux1_x86_64",
]

# Runs under the guest interpreter on the host: compiles the stdlib into a zip of unchecked-hash .pyc.
_ZIP_STDLIB = r"""
import importlib.util, os, sys, zipfile
from importlib._bootstrap_external import _code_to_hash_pyc
src, out, prune, prune_any = sys.argv[1], sys.argv[2], set(sys.argv[3].split(",")), set(sys.argv[4].split(","))
n = 0
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
    for root, dirs, files in os.walk(src):
        rel_root = os.path.relpath(root, src)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d not in prune]
            files = [f for f in files if f not in prune]
        dirs[:] = sorted(d for d in dirs if d not in prune_any)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            rel = os.path.normpath(os.path.join(rel_root, f))
            data = open(os.path.join(root, f), "rb").read()
            try:
                code = compile(data, os.path.join(src, rel), "exec", dont_inherit=True)
            except SyntaxError as e:
                print("skip", rel, e, file=sys.stderr)
                continue
            info = zipfile.ZipInfo(rel[:-3] + ".pyc", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, _code_to_hash_pyc(code, importlib.util.source_hash(data), False))
            n += 1
print(n)
"""


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def ldd(paths) -> set[Path]:
    """Every shared library (and the dynamic loader) that `ldd` names for these ELF files."""
    libs: set[Path] = set()
    for p in paths:
        r = subprocess.run(["ldd", str(p)], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                libs.add(Path(m.group(1)))
    return libs


def _copy_lib(lib: Path, root: Path) -> None:
    """Copy `lib` (symlinks followed) to the same path under root, plus the soname link if any."""
    dest = root / lib.relative_to("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(lib.resolve(), dest)


@dataclass(frozen=True)
class Staged:
    root: Path  # a tree to merge at / in the guest
    key: str


def _runtime_key() -> str:
    h = hashlib.sha256()
    st = GUEST_PYTHON.stat()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(Path(__file__).read_bytes())
    h.update(str(sorted(p.name for p in (STDLIB / "lib-dynload").iterdir())).encode())
    return h.hexdigest()[:16]


def build_runtime(force: bool = False) -> Staged:
    """Stage Debian's interpreter (GUEST_PYTHON) with its pruned, zipped stdlib; cached across runs."""
    key = _runtime_key()
    root = work_dir() / f"runtime-{key}"
    if root.is_dir() and (root / ".complete").exists() and not force:
        os.utime(root)
        return Staged(root, key)
    if root.exists():
        shutil.rmtree(root)
    _prune_old(work_dir().glob("runtime-*"), keep=2)
    tmp = Path(tempfile.mkdtemp(prefix="runtime-", dir=work_dir()))
    try:
        (tmp / "usr/bin").mkdir(parents=True)
        shutil.copy2(GUEST_PYTHON, tmp / "usr/bin" / GUEST_PYTHON.name)
        os.symlink(GUEST_PYTHON.name, tmp / "usr/bin/python3")
        dyn_src = STDLIB / "lib-dynload"
        dyn_dst = tmp / f"usr/lib/python{PYVER}/lib-dynload"
        dyn_dst.mkdir(parents=True)
        kept = []
        for so in sorted(dyn_src.iterdir()):
            if so.suffix == ".so" and not DYNLOAD_PRUNE.match(so.name):
                shutil.copy2(so, dyn_dst / so.name)
                kept.append(so)
        for lib in ldd([GUEST_PYTHON, *kept]):
            _copy_lib(lib, tmp)
        r = _run([
            str(GUEST_PYTHON), "-I", "-c", _ZIP_STDLIB, str(STDLIB), str(tmp / f"usr/lib/python{PYVER.replace('.', '')}.zip"),
            ",".join(sorted(STDLIB_PRUNE)), ",".join(sorted(STDLIB_PRUNE_ANYWHERE)),
        ])
        (tmp / ".complete").write_text(f"{r.stdout.strip()} modules\n")
        _publish(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return Staged(root, key)


def build_wheel(out_dir: Path, repo: Path = REPO) -> Path:
    """`pip wheel --no-deps` of a clean copy of the working tree; returns the .whl path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kexloader-src-") as src:
        ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                        ".hypothesis", ".cache", "*.pyc")
        shutil.copytree(repo, src, dirs_exist_ok=True, ignore=ignore, symlinks=True)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
              "--wheel-dir", str(out_dir), src])
    wheels = sorted(out_dir.glob("kexloader-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip wheel produced no kexloader wheel in {out_dir}")
    return wheels[-1]


def wheel_metadata(wheel: Path) -> tuple[list[str], dict[str, str]]:
    """(Requires-Dist without extras, console_scripts) read from the wheel itself."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        eps_name = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        eps = z.read(eps_name).decode() if eps_name else ""
    requires = [
        line.split(":", 1)[1].strip()
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    scripts: dict[str, str] = {}
    section = None
    for line in eps.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "console_scripts":
            name, target = (x.strip() for x in line.split("=", 1))
            scripts[name] = target
    return requires, scripts


def dependency_wheels(requires: list[str]) -> Path:
    """The guest interpreter's (CPTAG) manylinux wheels of the runtime dependencies, downloaded once per
    requirement set."""
    key = hashlib.sha256(json.dumps([CPTAG, *sorted(requires)]).encode()).hexdigest()[:16]
    d = work_dir() / "wheels" / f"deps-{key}"
    if (d / ".complete").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    if requires:
        _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--dest", str(d),
              *GUEST_WHEEL_TAGS, *requires])
    (d / ".complete").write_text("\n".join(requires) + "\n")
    return d


_WRAPPER = """#!/usr/bin/{python}
# Generated from the wheel's console_scripts entry: {name} = {target}
import sys
from {module} import {func}
sys.exit({func}())
"""


def build_packages(wheel: Path) -> Staged:
    """Stage the wheel and its dependencies as installed by `pip install --target`, plus wrappers."""
    requires, scripts = wheel_metadata(wheel)
    deps = dependency_wheels(requires)
    key = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    root = work_dir() / f"packages-{key}"
    if (root / ".complete").exists():
        os.utime(root)
        return Staged(root, key)
    if root.exists():
        shutil.rmtree(root)
    _prune_old(work_dir().glob("packages-*"), keep=3)
    tmp = Path(tempfile.mkdtemp(prefix="packages-", dir=work_dir()))
    try:
        site = tmp / SITE_DIR
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile",
              "--no-index", "--find-links", str(deps), "--target", str(site), *GUEST_WHEEL_TAGS, str(wheel)])
        shutil.rmtree(site / "bin", ignore_errors=True)
        extensions = sorted(site.rglob("*.so"))
        # Debug sections are most of these wheels' size (zstandard: 24 MB); code is untouched.
        strip = shutil.which("strip")
        if strip and extensions:
            _run([strip, "--strip-debug", *map(str, extensions)])
        # Libraries the extension modules need beyond the interpreter's (lz4: libpthread).
        for lib in ldd(extensions):
            _copy_lib(lib, tmp)
        # Byte-compile with the guest's own interpreter (its magic number, paths as the guest sees them).
        _run([str(GUEST_PYTHON), "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
              "unchecked-hash", "-s", str(tmp), "-p", "/", str(site)])
        for name, target in scripts.items():
            module, func = target.split(":")
            w = tmp / "usr/bin" / name
            w.parent.mkdir(parents=True, exist_ok=True)
            w.write_text(_WRAPPER.format(python=GUEST_PYTHON.name, name=name, target=target, module=module,
                                         func=func.split(".")[0]))
            w.chmod(0o755)
        (tmp / ".complete").write_text(wheel.name + "\n")
        _publish(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return Staged(root, key)


def _publish(tmp: Path, root: Path) -> None:
    """Move a finished staging dir into place; another process may have won the race (fine)."""
    try:
        os.replace(tmp, root)
    except OSError:
        if not (root / ".complete").exists():
            raise


def _prune_old(dirs, keep: int, min_age: float = 3600) -> None:
    """Remove staged trees beyond the `keep` most recently used, if unused for `min_age` seconds
    (other test sessions on the same machine may be using the younger ones)."""
    import time

    dirs = sorted((d for d in dirs if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[keep:]:
        if time.time() - d.stat().st_mtime > min_age:
            shutil.rmtree(d, ignore_errors=True)


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
