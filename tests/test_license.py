"""LICENSE is the GPL v2 text that pyproject's GPL-2.0-or-later refers to (wheels pick it up by setuptools'
default license-file patterns: dist-info/licenses/LICENSE with setuptools 84, "adding license file" with 66)."""

import hashlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_license_is_the_gpl_v2_that_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:6] == ["GNU", "GENERAL", "PUBLIC", "LICENSE", "Version", "2,"]
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "GPL-2.0-or-later"}
    # The text as Debian 12 ships it (/usr/share/common-licenses/GPL-2); Debian 13's copy differs only in the
    # FSF's address, so the host's copy is not the reference.
    assert hashlib.sha256(text.encode()).hexdigest() == "8177f97513213526df2cf6184d8ff986c675afb514d4e68a404010521b880643"
