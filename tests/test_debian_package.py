"""The Debian package: `tools/build-deb` builds kexloader_<version>_all.deb from a copy of the tree (debian/).

One build per run (about 10 s, lintian about as long). Without Debian's build tools the tests skip and say
what to install; with CI=true they fail instead. The maintainer scripts run for real against a throwaway
root: `update-alternatives` on PATH is a wrapper that records its arguments and runs the real one with
`--root` (DPKG_ROOT is set too), so the host's alternatives are never touched.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's tools and python3, not a venv's or pyenv's
DIST_PACKAGES = "usr/lib/python3/dist-packages"
SBIN = "/usr/sbin"
MAN8 = "/usr/share/man/man8"
COMPLETIONS = "/usr/share/bash-completion/completions"
# the names kexec-tools also ships, offered through update-alternatives: link -> the package's own file
ALTERNATIVE_LINKS = {
    f"{SBIN}/kexec": f"{SBIN}/kexloader",
    f"{MAN8}/kexec.8.gz": f"{MAN8}/kexloader.8.gz",
    f"{COMPLETIONS}/kexec": f"{COMPLETIONS}/kexloader",
    f"{SBIN}/vmcore-dmesg": f"{SBIN}/kexloader-vmcore-dmesg",
    f"{MAN8}/vmcore-dmesg.8.gz": f"{MAN8}/kexloader-vmcore-dmesg.8.gz",
}


def _unavailable(msg: str) -> None:
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def _system_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PATH": SYSTEM_PATH, **extra}


def _run(*argv: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", _system_env())
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [t for t in ("dpkg-buildpackage", "dpkg-deb", "dpkg-checkbuilddeps", "lintian", "update-alternatives")
               if not shutil.which(t, path=SYSTEM_PATH)]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed: sudo bash tools/install-deps.sh")
    r = _run("dpkg-checkbuilddeps", cwd=ROOT)
    if r.returncode:
        _unavailable(f"{r.stderr.strip()}: sudo bash tools/install-deps.sh")
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([str(ROOT / "tools/build-deb"), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    built = Path(r.stdout.strip())
    assert built == out / f"kexloader_{VERSION}_all.deb" and built.is_file(), r.stdout
    return built


def _extract(deb: Path, where: Path) -> Path:
    root = where / "root"
    assert _run("dpkg-deb", "-x", deb, root).returncode == 0
    assert _run("dpkg-deb", "-e", deb, where / "control").returncode == 0
    return root


def _field(deb: Path, name: str) -> str:
    r = _run("dpkg-deb", "-f", deb, name)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_files_are_the_package_the_programs_the_man_pages_and_completion(deb: Path) -> None:
    r = _run("dpkg-deb", "-c", deb)
    assert r.returncode == 0, r.stderr
    files = {line.split(maxsplit=5)[5].split(" -> ")[0].removeprefix("./")
             for line in r.stdout.splitlines() if not line.startswith("d")}
    python = {f for f in files if f.startswith(DIST_PACKAGES + "/kexloader/")}
    in_tree = {f"{DIST_PACKAGES}/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "kexloader").rglob("*")
               if p.is_file() and (p.suffix == ".py" or p.name == "py.typed") and "__pycache__" not in p.parts}
    assert python == in_tree
    assert files - python - {f for f in files if f.startswith(f"{DIST_PACKAGES}/kexloader-{VERSION}.dist-info/")} == {
        "usr/sbin/kexloader", "usr/sbin/kexloader-vmcore-dmesg",
        "usr/share/man/man8/kexloader.8.gz", "usr/share/man/man8/kexloader-vmcore-dmesg.8.gz",
        "usr/share/bash-completion/completions/kexloader",
        "usr/share/doc/kexloader/copyright", "usr/share/doc/kexloader/changelog.gz"}
    # the kexec and vmcore-dmesg names are never files of the package: update-alternatives makes them
    assert not {link.lstrip("/") for link in ALTERNATIVE_LINKS} & files


def test_the_man_pages_and_completion_are_the_generated_ones_and_the_license_is_gpl2(deb: Path, tmp_path: Path) -> None:
    root = _extract(deb, tmp_path)
    man8 = root / MAN8.lstrip("/")
    assert gzip.decompress((man8 / "kexloader.8.gz").read_bytes()) == (ROOT / "man/kexloader.8").read_bytes()
    assert gzip.decompress((man8 / "kexloader-vmcore-dmesg.8.gz").read_bytes()) == \
        (ROOT / "man/vmcore-dmesg.8").read_bytes()
    completion = root / COMPLETIONS.lstrip("/") / "kexloader"
    assert completion.read_bytes() == (ROOT / "completion/kexloader.bash").read_bytes()
    copyright_ = (root / "usr/share/doc/kexloader/copyright").read_text()
    assert copyright_.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    assert PYPROJECT["project"]["license"] == {"text": "GPL-2.0-or-later"}
    assert re.findall(r"^License: (.*)$", copyright_, re.M) == ["GPL-2+", "GPL-2+"]
    assert "/usr/share/common-licenses/GPL-2" in copyright_
    assert "GNU GENERAL PUBLIC LICENSE\n                       Version 2, June 1991" in (ROOT / "LICENSE").read_text()


def _debian_depends(requirement: str) -> list[str]:
    """pyproject's "construct>=2.10,<2.11" as ["python3-construct (>= 2.10)", "python3-construct (<< 2.11~)"]."""
    name, specs = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement).groups()
    ops = {">=": ">=", "<": "<<"}
    out = []
    for spec in filter(None, (s.strip() for s in specs.split(","))):
        op, version = re.fullmatch(r"(>=|<)\s*(\S+)", spec).groups()
        out.append(f"python3-{name.lower()} ({ops[op]} {version}{'~' if op == '<' else ''})")
    return out


def test_control_depends_on_debians_packages_of_pyprojects_dependencies_and_this_host_has_them(deb: Path) -> None:
    assert [_field(deb, f) for f in ("Package", "Version", "Architecture")] == ["kexloader", VERSION, "all"]
    depends = [d.strip() for d in _field(deb, "Depends").split(",")]
    wanted = [d for req in PYPROJECT["project"]["dependencies"] for d in _debian_depends(req)]
    assert len(wanted) >= 4 and sorted(d for d in depends if not d.startswith("python3:any")) == sorted(wanted)
    assert [d for d in depends if d.startswith("python3:any")] == ["python3:any (>= 3.11~)"]
    for field in ("Conflicts", "Provides", "Replaces", "Breaks", "Pre-Depends"):  # coexists with kexec-tools
        assert _field(deb, field) == "", field
    r = _run("dpkg-checkbuilddeps", "-d", ", ".join(depends), "/dev/null")
    assert r.returncode == 0, r.stderr


def test_lintian_finds_no_error(deb: Path) -> None:
    r = _run("lintian", deb)
    assert not [line for line in r.stdout.splitlines() if line.startswith("E:")], r.stdout
    assert r.returncode in (0, 1), r.stderr  # 1: tags were emitted (warnings), 2: lintian itself failed


RUN_SCRIPT = """\
import runpy, sys
script, argv, answer = sys.argv[1:]
import kexloader.entry as e
e.quick = lambda args, root="/": None if answer == "none" else int(answer)
sys.argv = [script, argv]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as x:
    print(x.code, "site" in sys.modules)
"""  # /usr/sbin/kexloader run with its quick paths' answer chosen: did it import `site`?


def test_the_programs_run_with_debians_python_and_packages(deb: Path, tmp_path: Path) -> None:
    root = _extract(deb, tmp_path)
    env = _system_env(PYTHONPATH=str(root / DIST_PACKAGES), PYTHONNOUSERSITE="1")
    sbin = root / SBIN.lstrip("/")
    # Debian's python3 without `site` (debian/kexloader-command), not the builder's nor pybuild's script
    assert re.match(r"#! ?/usr/bin/python3 -S\n", (sbin / "kexloader").read_text())
    r = _run("/usr/bin/python3", "-c", "import kexloader; print(kexloader.__file__)", env=env, cwd=tmp_path)
    assert r.stdout.startswith(str(root)), r.stdout + r.stderr
    r = _run(sbin / "kexloader", "--version", env=env, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, f"kexloader {VERSION}\n"), r.stderr
    (tmp_path / "kexec").symlink_to(sbin / "kexloader")  # what the alternative's link does
    r = _run(tmp_path / "kexec", "--version", env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("kexec-tools ") and f"(kexloader {VERSION})" in r.stdout, r
    # the script without `site` (its shebang's -S), on the quick paths and the full one
    for answer, argv, want in (("0", "-S", "0 False"), ("none", "--version", "0 False")):
        r = _run("/usr/bin/python3", "-S", "-c", RUN_SCRIPT, sbin / "kexloader", argv, answer, env=env, cwd=tmp_path)
        assert r.stdout.splitlines()[-1:] == [want], r
    r = _run(sbin / "kexloader-vmcore-dmesg", "--help", env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage: vmcore-dmesg "), r


class Maintainer:
    """The package's postinst and prerm, run against a throwaway root with the real update-alternatives."""

    def __init__(self, deb: Path, tmp_path: Path) -> None:
        self.root = _extract(deb, tmp_path)
        self.control = tmp_path / "control"
        for d in ("etc/alternatives", "var/lib/dpkg/alternatives", "var/log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.calls = tmp_path / "calls"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        real = shutil.which("update-alternatives", path=SYSTEM_PATH)
        self._script("update-alternatives", f'printf "%s\\n" "$*" >>"$CALLS"\nexec {real} --root "$DPKG_ROOT" "$@"\n')
        for tool in ("py3compile", "pypy3compile", "py3clean"):  # dh_python3's snippets: the host's must not run
            self._script(tool, f'printf "{tool} %s\\n" "$*" >>"$CALLS"\n')

    def _script(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def run(self, script: str, *args: str) -> list[str]:
        """Run the maintainer script; its update-alternatives calls."""
        self.calls.write_text("")
        env = {"PATH": f"{self.bin}:{SYSTEM_PATH}", "DPKG_ROOT": str(self.root), "CALLS": str(self.calls),
               "LC_ALL": "C.UTF-8"}
        r = _run("sh", "-e", self.control / script, *args, env=env)
        assert r.returncode == 0, r.stderr
        return [c for c in self.calls.read_text().splitlines() if not c.startswith(("py3", "pypy3"))]

    def resolve(self, path: str) -> str | None:
        """Follow absolute symbolic links inside the root: the file `path` names there, or None."""
        for _ in range(8):
            p = self.root / path.lstrip("/")
            if not p.is_symlink():
                return path if p.exists() else None
            path = os.readlink(p)
        raise AssertionError(f"symlink loop at {path}")

    def links(self) -> dict[str, str | None]:
        return {link: self.resolve(link) for link in ALTERNATIVE_LINKS}


@pytest.fixture
def maintainer(deb: Path, tmp_path: Path) -> Maintainer:
    return Maintainer(deb, tmp_path)


def test_postinst_offers_kexec_and_vmcore_dmesg_and_prerm_takes_them_back(maintainer: Maintainer) -> None:
    assert maintainer.links() == dict.fromkeys(ALTERNATIVE_LINKS)
    calls = maintainer.run("postinst", "configure", "")
    assert [c.split()[:4] for c in calls] == [["--install", f"{SBIN}/kexec", "kexec", f"{SBIN}/kexloader"],
                                             ["--install", f"{SBIN}/vmcore-dmesg", "vmcore-dmesg",
                                              f"{SBIN}/kexloader-vmcore-dmesg"]]
    assert maintainer.links() == ALTERNATIVE_LINKS
    assert all((maintainer.root / target.lstrip("/")).is_file() for target in ALTERNATIVE_LINKS.values())

    assert maintainer.run("prerm", "upgrade", VERSION) == []  # an upgrade keeps the names
    assert maintainer.links() == ALTERNATIVE_LINKS

    assert maintainer.run("prerm", "remove") == [f"--remove kexec {SBIN}/kexloader",
                                                 f"--remove vmcore-dmesg {SBIN}/kexloader-vmcore-dmesg"]
    assert not any(os.path.lexists(maintainer.root / link.lstrip("/")) for link in ALTERNATIVE_LINKS)
    assert not any((maintainer.root / "var/lib/dpkg/alternatives").iterdir())

    maintainer.run("postinst", "configure", "")  # and again: reversible
    assert maintainer.links() == ALTERNATIVE_LINKS


def test_kexec_tools_files_are_never_replaced_and_their_removal_triggers_the_links(maintainer: Maintainer) -> None:
    # Debian 12's kexec-tools ships /sbin/kexec and /sbin/vmcore-dmesg; with merged /usr they are /usr/sbin's
    (maintainer.root / "sbin").symlink_to("usr/sbin")
    theirs = {name: maintainer.root / "sbin" / name for name in ("kexec", "vmcore-dmesg")}
    for name, path in theirs.items():
        path.write_bytes(f"kexec-tools' {name}".encode())
    maintainer.run("postinst", "configure", "")
    assert {name: path.read_bytes() for name, path in theirs.items()} == \
        {name: f"kexec-tools' {name}".encode() for name in theirs}
    assert not any(p.is_symlink() for p in theirs.values())

    for path in theirs.values():  # kexec-tools removed: dpkg runs the trigger
        path.unlink()
    maintainer.run("postinst", "triggered", "/sbin/kexec /sbin/vmcore-dmesg")
    assert maintainer.links() == ALTERNATIVE_LINKS
    interests = {line.split()[1] for line in (maintainer.control / "triggers").read_text().splitlines()
                 if line.startswith("interest")}
    assert interests == {f"{d}/{name}" for d in ("/sbin", "/usr/sbin") for name in theirs}
