"""Build an upstream kexec-tools release from its git tag into a private prefix in the cache.

    python3 tools/kexec_tools_capture/build.py [2.0.32]

``build_kexec_tools("2.0.32")`` returns ``<cache>/kexec-tools-2.0.32/sbin/kexec``, building it on first use:
the tag ``v2.0.32`` is exported with ``git archive`` from a local clone (``$KEXEC_TOOLS_GIT``, else the mirror
``/work/.mirror/horms+kexec-tools/repo``, else a clone of kernel.org's or GitHub's repository), then
``./bootstrap && ./configure --prefix=<cache>/kexec-tools-2.0.32 --without-xen && make && make install``.
``make install`` only ever writes below that prefix; nothing is installed on the host. Without Xen support the
binary never reaches libxenctrl (Xen capture is not supported by the shim anyway).

Build dependencies: git, gcc, make, autoconf, automake (zlib1g-dev and liblzma-dev are used when present).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kexec_tools_capture.capture import CaptureError, Unavailable, cache_dir  # noqa: E402

DEFAULT_MIRROR = Path("/work/.mirror/horms+kexec-tools/repo")
UPSTREAM = ("https://git.kernel.org/pub/scm/utils/kernel/kexec/kexec-tools.git",
            "https://github.com/horms/kexec-tools.git")
BUILD_TOOLS = ("git", "gcc", "make", "autoconf", "automake")


def prefix_for(version: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"kexec-tools-{version}"


def _git_dir(work: Path, tag: str) -> Path:
    """A git directory that has the tag: $KEXEC_TOOLS_GIT, the local mirror, or a shallow clone of the tag."""
    for candidate in (os.environ.get("KEXEC_TOOLS_GIT"), DEFAULT_MIRROR):
        if candidate and subprocess.run(["git", "--git-dir", str(candidate), "rev-parse", "--verify", "-q",
                                         f"{tag}^{{commit}}"], capture_output=True).returncode == 0:
            return Path(candidate)
    clone = work / "kexec-tools.git"
    errors = []
    for url in UPSTREAM:
        proc = subprocess.run(["git", "clone", "--bare", "--depth", "1", "--branch", tag, url, str(clone)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return clone
        errors.append(f"{url}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        shutil.rmtree(clone, ignore_errors=True)
    raise Unavailable(f"no kexec-tools source with tag {tag} (set KEXEC_TOOLS_GIT to a clone): {'; '.join(errors)}")


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise CaptureError(f"building kexec-tools failed at `{' '.join(cmd)}` (exit {proc.returncode}); see {log}")


def build_kexec_tools(version: str = "2.0.32", cache: Path | None = None, jobs: int = 2) -> Path:
    """<prefix>/sbin/kexec of kexec-tools `version`, built from its upstream tag unless already there."""
    prefix = prefix_for(version, cache)
    kexec = prefix / "sbin" / "kexec"
    if kexec.exists():
        return kexec
    missing = [t for t in BUILD_TOOLS if not shutil.which(t)]
    if missing:
        raise Unavailable(f"building kexec-tools needs {', '.join(missing)}: apt-get install {' '.join(missing)}")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"kexec-tools-{version}-", dir=prefix.parent) as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        log = prefix.parent / f"kexec-tools-{version}.build.log"
        log.write_text("")
        tag = f"v{version}"
        archive = subprocess.run(["git", "--git-dir", str(_git_dir(work, tag)), "archive", tag],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        # Build into a staging prefix and move it into place at the end: an interrupted build leaves nothing
        # that looks finished.
        stage = work / "prefix"
        _run(["./bootstrap"], src, log)
        _run(["./configure", f"--prefix={stage}", "--without-xen"], src, log)
        _run(["make", f"-j{jobs}"], src, log)
        _run(["make", "install"], src, log)
        if not (stage / "sbin" / "kexec").exists():
            raise CaptureError(f"kexec-tools {version} built, but no sbin/kexec in {stage}; see {log}")
        shutil.rmtree(prefix, ignore_errors=True)
        shutil.move(str(stage), str(prefix))
    return kexec


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        print(build_kexec_tools(*(args[:1] or ["2.0.32"])))
    except CaptureError as e:
        print(f"build: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
