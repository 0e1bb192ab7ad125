"""The API reference builds with pdoc and no warnings (tools/docs.py); a broken reference or import fails it."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pdoc")
from tools import docs  # noqa: E402  (after the skip: pdoc is a test extra)

ROOT = Path(__file__).resolve().parent.parent


def test_reference_builds_with_the_public_names(tmp_path):
    out = tmp_path / "api"
    r = subprocess.run([sys.executable, "-m", "tools.docs", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "index.html").exists()
    pages = {
        "kexloader.html": ["read_request", "make_plan", "write_dir", "offline-plan"],
        "kexloader/api.html": ["read_request", "make_plan"],
        "kexloader/plan.html": ["write_dir", "read_dir", "describe"],
        "kexloader/system.html": ["read_facts", "load_snapshot"],
        "kexloader/model.html": ["LoadRequest", "Plan", "Segment", "SystemFacts"],
        "kexloader/memory.html": ["validate", "allocate"],
        "kexloader/backends/recording.html": ["RecordingBackend"],
        "kexloader/vmcore.html": ["dmesg", "open_core"],
        "kexloader/inspect.html": ["inspect_image", "to_text"],
    }
    if (ROOT / "kexloader/snapshot.py").exists():  # the snapshot JSON in its own module (issue 12)
        pages["kexloader/snapshot.html"] = ["load_snapshot", "save_snapshot"]
    for page, names in pages.items():
        html = (out / page).read_text()
        for name in names:
            assert name in html, f"{page} does not mention {name}"
    assert not (out / "kexloader/cli.html").exists()  # internal modules stay out


def fake_package(tmp_path, monkeypatch, name, files):
    pkg = tmp_path / name
    pkg.mkdir()
    for file, text in files.items():
        (pkg / file).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    stale = [m for m in sys.modules if m == name or m.startswith(name + ".")]
    for m in stale:
        monkeypatch.delitem(sys.modules, m)
    return name


def test_a_broken_reference_fails(tmp_path, monkeypatch):
    name = fake_package(tmp_path, monkeypatch, "kxdocs_broken_ref", {
        "__init__.py": '"""See `kxdocs_broken_ref.good.f`, `kxdocs_broken_ref.good.gone`,\n'
                       '`kxdocs_broken_ref.good.g`."""\n',
        "good.py": '"""Good."""\n\nfrom .other import g\n\ndef f():\n    """Calls `kxdocs_broken_ref.good.f()`."""\n',
        "other.py": '"""Where g lives (a re-exported name resolves to its home)."""\n\ndef g():\n    pass\n',
    })
    with pytest.raises(docs.DocsError) as e:
        docs.build(tmp_path / "out", [name])
    assert str(e.value) == ("broken reference in kxdocs_broken_ref: `kxdocs_broken_ref.good.gone` "
                            "is not in the reference")


def test_an_import_error_fails(tmp_path, monkeypatch):
    name = fake_package(tmp_path, monkeypatch, "kxdocs_bad_import", {
        "__init__.py": '"""Fine."""\n',
        "bad.py": "import kxdocs_no_such_module\n",
    })
    with pytest.raises(docs.DocsError, match="kxdocs_no_such_module"):
        docs.build(tmp_path / "out", [name])


def test_a_pdoc_warning_fails(tmp_path, monkeypatch):
    name = fake_package(tmp_path, monkeypatch, "kxdocs_warning", {
        "__init__.py": '"""An annotation pdoc cannot resolve."""\n\nx: "NoSuchType" = 1\n',
    })
    with pytest.raises(docs.DocsError, match="warning: .*NoSuchType"):
        docs.build(tmp_path / "out", [name])
