"""`mypy --strict` over kexloader/ (the [tool.mypy] section of pyproject.toml): the whole package is clean.

A new or changed module is annotated before it lands; an error this test reports is fixed where it is
(annotations, narrowing, a cast), and a `# type: ignore` names its error code and says why.

mypy is a test extra, pinned to a minor release: another version may find other errors. Without mypy
these tests skip, or fail under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_ERROR = re.compile(r"^(?P<path>[^:\s]+\.pyi?):\d+(?::\d+)?: error: ", re.M)


def _unavailable(msg: str) -> None:
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def mypy_output() -> str:
    """mypy's report on the package (its cache: .mypy_cache, git-ignored)."""
    if importlib.util.find_spec("mypy") is None:
        _unavailable("mypy is not installed (pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-color-output", "--no-pretty"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    if r.returncode not in (0, 1):  # 2: mypy itself failed (bad configuration, crash)
        pytest.fail(f"mypy exited with {r.returncode}:\n{r.stdout}{r.stderr}", pytrace=False)
    return r.stdout


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if _ERROR.match(line)]


def test_the_package_is_clean(mypy_output: str) -> None:
    errors = _errors(mypy_output)
    per_file: dict[str, int] = {}
    for line in errors:
        path = line.split(":", 1)[0]
        per_file[path] = per_file.get(path, 0) + 1
    table = "\n".join(f"{n:5d} {path}" for path, n in sorted(per_file.items(), key=lambda kv: (-kv[1], kv[0])))
    assert not errors, (f"mypy --strict: {len(errors)} errors in kexloader/; annotate what was added. Per file:\n"
                        f"{table}\n\n" + "\n".join(errors))
    assert any(line.startswith("Success:") for line in mypy_output.splitlines()), \
        f"mypy --strict did not report success:\n{mypy_output}"
