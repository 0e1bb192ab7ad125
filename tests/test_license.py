"""LICENSE is the GPL v2 text that pyproject's GPL-2.0-or-later refers to (wheels pick it up by setuptools'
default license-file patterns: dist-info/licenses/LICENSE with setuptools 84, "adding license file" with 66)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_is_the_gpl_v2_that_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:6] == ["GNU", "GENERAL", "PUBLIC", "LICENSE", "Version", "2,"]
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "GPL-2.0-or-later"}
    debian = Path("/usr/share/common-licenses/GPL-2")
    if debian.exists():  # the standard text, as Debian ships it
        assert text == debian.read_text()
