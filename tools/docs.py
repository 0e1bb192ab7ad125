"""Build the API reference with pdoc; any warning or broken reference fails the build.

    .venv/bin/python -m tools.docs [OUT]        # HTML into OUT (default build/api), exit 1 on a problem

Docstrings are Markdown. A reference written in backticks with its full dotted name (`kexloader.plan.read_dir`)
becomes a link, and must name something the reference documents (or a name imported from there): pdoc leaves
an unresolved name as plain text without a word, so this script checks them itself.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

# The library surface; the rest of kexloader (cli, purgatory, zero-page and firmware helpers) is internal.
PUBLIC = ("api", "system", "snapshot", "plan", "model", "errors", "images", "memory", "cmdline", "crash",
          "backends", "formats", "vmcore", "inspect")

REFERENCE = re.compile(r"`([A-Za-z_]\w*(?:\.\w+)+)(?:\(\))?`")


class DocsError(Exception):
    """The reference did not build cleanly; the message lists every problem."""


def specs(package: str = "kexloader", public=PUBLIC) -> list[str]:
    """pdoc module specifications: the package and its public submodules (packages with all of theirs)."""
    import importlib.util
    present = [m for m in public if importlib.util.find_spec(f"{package}.{m}") is not None]  # snapshot: once it exists
    return [package, rf"!{re.escape(package)}\.(?!(?:{'|'.join(present)})(?:\.|$))"]


def build(out: Path, modules: list[str] | None = None) -> list[str]:
    """Render `modules` (pdoc specifications; default: kexloader's public ones) into `out`.

    Returns the names of the modules documented; raises `DocsError` on warnings or broken references."""
    import pdoc
    import pdoc.doc
    import pdoc.extract
    import pdoc.render

    modules = modules if modules is not None else specs()
    # No search index: pdoc builds it with Node.js when present, which overflows its stack on this many names.
    pdoc.render.configure(docformat="markdown", search=False, show_source=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            names = pdoc.extract.walk_specs(modules)
            pdoc.pdoc(*modules, output_directory=Path(out))
            docs = {name: pdoc.doc.Module.from_name(name) for name in names}
        except RuntimeError as e:  # pdoc's "Error importing X", the import's own error as the cause
            raise DocsError(f"{e}: {e.__cause__!r}") from e
    problems = [f"warning: {w.message}" for w in caught]
    problems += broken_references(docs)
    if problems:
        raise DocsError("\n".join(problems))
    return names


def broken_references(docs: dict) -> list[str]:
    """Backticked dotted names under a documented package that name no documented object."""
    roots = {name.split(".")[0] for name in docs}
    problems, seen = [], set()
    for doc in _walk(docs.values()):
        if doc.fullname in seen:
            continue
        seen.add(doc.fullname)
        for ref in REFERENCE.findall(doc.docstring or ""):
            if ref.split(".")[0] in roots and not _resolves(ref, docs):
                problems.append(f"broken reference in {doc.fullname}: `{ref}` is not in the reference")
    return problems


def _walk(docs):
    for doc in docs:
        yield doc
        members = getattr(doc, "own_members", None)  # classes and modules; imported names belong to their module
        if members is not None:
            yield from _walk(members)


def _resolves(ref: str, docs: dict) -> bool:
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        mod = docs.get(".".join(parts[:i]))
        if mod is not None:
            rest = parts[i:]
            if any(p.startswith("_") and not p.endswith("__") for p in rest):
                return False  # private: not rendered
            return not rest or mod.get(".".join(rest)) is not None or _reexported(mod.obj, rest, docs)
    return False


def _reexported(obj, rest: list[str], docs: dict) -> bool:
    """A name imported into a module (`kexloader.system.load_snapshot`): fine when its home is documented."""
    for part in rest:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    home = docs.get(getattr(obj, "__module__", None) or "")
    return home is not None and home.get(getattr(obj, "__qualname__", "")) is not None


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("build/api")
    try:
        names = build(out)
    except DocsError as e:
        print(f"tools.docs: the API reference has problems:\n{e}", file=sys.stderr)
        return 1
    print(f"tools.docs: {len(names)} modules documented in {out}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
