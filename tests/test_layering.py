"""The one-way flow: the pure core (formats -> images -> layout -> purgatory -> plan) never reaches the
running system. Only system.py, api.py, cli.py and backends/ may touch the OS."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = sorted([*ROOT.glob("formats/*.py"), *ROOT.glob("kexloader/images/*.py"), *ROOT.glob("kexloader/purgatory/*.py"),
               *(ROOT / "kexloader" / n for n in ("model.py", "memory.py", "bootparams.py", "cmdline.py", "crash.py",
                                                   "handoff.py", "plan.py", "errors.py", "efiboot.py", "legacybios.py"))])
FORBIDDEN = {"ctypes", "subprocess", "socket", "fcntl", "mmap", "os", "shutil", "glob"}
NOT_IN_FORMATS = {"kexloader"}  # formats/ is a leaf: it knows byte layouts, not kexec policy


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_do_not_reach_the_system(path):
    bad = imported(path) & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}: move that to system.py, api.py, cli.py or backends/"


@pytest.mark.parametrize("path", sorted(ROOT.glob("formats/*.py")), ids=lambda p: p.name)
def test_formats_is_a_leaf(path):
    assert not imported(path) & NOT_IN_FORMATS
