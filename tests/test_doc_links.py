"""Product code cites public specifications or this repository's docs/, never files a user of the package
does not have (the project's private reference notes and style guide)."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "kexloader"
PRIVATE = re.compile(r"interfaces\.md|kexec-tools-anatomy|STYLE\.md|reference/|peers\.md")


def test_no_private_doc_links() -> None:
    found = [f"{p.relative_to(PKG.parent)}:{n}: {line.strip()}"
             for p in sorted(PKG.rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if PRIVATE.search(line)]
    assert not found, "\n".join(found)


def test_docs_links_resolve() -> None:
    # a docs/ file named in product code must exist in the repository
    docs = PKG.parent / "docs"
    missing = sorted({m for p in PKG.rglob("*.py")
                      for m in re.findall(r"docs/([\w.-]+\.md)", p.read_text(encoding="utf-8"))
                      if not (docs / m).exists()})
    assert not missing, missing
