"""Boot Loader Specification entries, seen and ordered as systemd-boot sees them, and UKI addons.

Sources: the UAPI group's Boot Loader Specification (Type #1 `loader/entries/*.conf`, Type #2
`EFI/Linux/*.efi`, "Sorting"), loader.conf(5) (`default` is a glob over entry ids), systemd-stub(7)
(addons: `*.addon.efi` in `loader/addons/` of the UKI's partition, then in `<uki>.extra.d/`, each
directory in name order; an addon with a .linux section or a different .uname is ignored; credentials and
extensions beside the UKI, which the stub hands over as cpio archives: sidecars()).

Places: the ESP (`--esp`, else the first of /efi, /boot, /boot/efi holding `EFI` or `loader`) and the
boot partition (`--boot-dir`, else /boot). Paths inside a Type #1 entry are relative to the root of the
partition the entry is on.

Order (systemd-boot's boot_entry_compare): entries with no boot tries left last; entries with a sort-key
first, by sort-key, machine-id, then version newest first; then the others; ties and entries without
sort-key by id (without the profile), newest version first, then by profile.
The default: the first entry, in that order, whose id matches loader.conf's `default` glob (case folded,
as systemd-boot); else the first. Ids given to --boot-entry match without regard to case, too.
A Type #2 UKI with profiles is one entry per profile, `ID@N` (N > 0), as systemd-boot lists them.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import initramfs
from .errors import KexloaderError
from .files import read_file
from .images import uki
from .initramfs import InitrdPart

ESP_CANDIDATES = ("/efi", "/boot", "/boot/efi")
BOOT_CANDIDATES = ("/boot",)
COUNTER = re.compile(r"\+\d+(-\d+)?(?=\.(conf|efi)$)")  # boot counting: NAME+LEFT[-DONE].conf


@dataclass
class Entry:
    id: str  # the file name without the boot counter (foo.conf, bar.efi, bar.efi@1)
    kind: str  # "type1" or "type2"
    path: Path  # the .conf or .efi file
    title: str = ""
    version: str = ""
    sort_key: str = ""
    machine_id: str = ""
    kernel: Path | None = None  # linux (or efi) for Type #1; the UKI for Type #2
    initrds: list[Path] = field(default_factory=list)
    options: str | None = None
    profile: int | None = None
    tries_left: int | None = None


def verscmp(a: str, b: str) -> int:
    """systemd's strverscmp_improved, enough for ids and versions: digit runs compare as numbers,
    '~' sorts before everything, '-'/'^'/'.' separators as in the UAPI version format specification."""
    def split(s: str) -> list[tuple[int, int | str]]:
        return [(0, int(t)) if t.isdigit() else (1, t) for t in re.findall(r"\d+|[A-Za-z]+|[^A-Za-z\d]", s)]
    pa, pb = split(a), split(b)
    for x, y in zip(pa, pb):
        if x == y:
            continue
        if x == (1, "~") or y == (1, "~"):
            return -1 if x == (1, "~") else 1
        if x[0] != y[0]:
            return -1 if x[0] > y[0] else 1  # a number is newer than letters
        u, v = x[1], y[1]  # both numbers or both text, as x[0] == y[0]
        if isinstance(u, int) and isinstance(v, int):
            return -1 if u < v else 1
        return -1 if str(u) < str(v) else 1
    if len(pa) == len(pb):
        return 0
    longer, sign = (pa, 1) if len(pa) > len(pb) else (pb, -1)
    nxt = longer[min(len(pa), len(pb))]
    return -sign if nxt == (1, "~") else sign


def _compare(a: Entry, b: Entry) -> int:
    if (a.tries_left == 0) != (b.tries_left == 0):
        return 1 if a.tries_left == 0 else -1
    if bool(a.sort_key) != bool(b.sort_key):
        return -1 if a.sort_key else 1
    if a.sort_key and b.sort_key:
        for x, y in ((a.sort_key, b.sort_key), (a.machine_id, b.machine_id)):
            if x != y:
                return -1 if x < y else 1
        r = -verscmp(a.version, b.version)
        if r:
            return r
    r = -verscmp(a.id.split("@")[0], b.id.split("@")[0])  # the profiles of one UKI together, in profile order
    return r or ((a.profile or 0) > (b.profile or 0)) - ((a.profile or 0) < (b.profile or 0))


def parse_conf(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ") if " " in line else line.partition("\t")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _id_and_tries(name: str) -> tuple[str, int | None]:
    m = COUNTER.search(name)
    if not m:
        return name, None
    left = int(m.group(0)[1:].split("-")[0])
    return name[:m.start()] + name[m.end():], left


def type1(path: Path, root: Path) -> Entry | None:
    try:
        conf = parse_conf(path.read_text(errors="replace"))
    except OSError:
        return None
    arch = conf.get("architecture", ["x64"])[-1].lower()
    if arch not in ("x64", "x86_64", "x86-64"):
        return None
    eid, tries = _id_and_tries(path.name)
    kernel = conf.get("linux", conf.get("efi", [None]))[-1]
    if not kernel:
        return None

    def first(key: str) -> str:
        return conf.get(key, [""])[0]

    def inside(p: str) -> Path:
        return root / p.lstrip("/")
    return Entry(eid, "type1", path, title=first("title"), version=first("version"), sort_key=first("sort-key"),
                 machine_id=first("machine-id"), kernel=inside(kernel),
                 initrds=[inside(p) for v in conf.get("initrd", []) for p in v.split()],
                 options=" ".join(conf["options"]) if "options" in conf else None, tries_left=tries)


def type2(path: Path) -> list[Entry]:
    try:
        data = read_file(path, "UKI")
        img = uki.read_pe(data, str(path))
    except KexloaderError:
        return []
    if not img.has(".linux"):
        return []
    eid, tries = _id_and_tries(path.name)
    out = []
    for n in range(uki.profile_count(img)):
        try:
            chosen = uki.select(img, n, str(path))
        except KexloaderError:
            continue
        osrel = uki.key_values(uki.text(data, chosen.get(".osrel")))
        prof = uki.key_values(uki.text(data, chosen.get(".profile")))
        title = prof.get("TITLE") or osrel.get("PRETTY_NAME") or path.name
        out.append(Entry(eid if n == 0 else f"{eid}@{n}", "type2", path, title=title,
                         version=osrel.get("IMAGE_VERSION") or osrel.get("VERSION_ID") or osrel.get("BUILD_ID", ""),
                         sort_key=osrel.get("IMAGE_ID") or osrel.get("ID", ""), kernel=path,
                         profile=n if img.profiles else None, tries_left=tries))
    return out


def locate(esp: str | None, boot: str | None) -> tuple[Path | None, Path | None]:
    """The ESP and the boot partition to look in (either may be None when not found)."""
    def pick(given: str | None, candidates: Sequence[str], marker: Sequence[str]) -> Path | None:
        if given:
            p = Path(given)
            if not p.is_dir():
                raise KexloaderError(f"{given}: not a directory")
            return p
        for c in candidates:
            p = Path(c)
            if any((p / m).exists() for m in marker):
                return p
        return None
    e = pick(esp, ESP_CANDIDATES, ("EFI", "loader"))
    b = pick(boot, BOOT_CANDIDATES, ("loader", "EFI/Linux"))
    return e, (None if b == e else b)


def entries(esp: Path | None, boot: Path | None) -> list[Entry]:
    """Every entry on both partitions, in systemd-boot's order."""
    found: list[Entry] = []
    for root in (r for r in (esp, boot) if r is not None):
        for conf in sorted((root / "loader/entries").glob("*.conf")):
            e = type1(conf, root)
            if e:
                found.append(e)
        for efi in sorted((root / "EFI/Linux").glob("*.efi")):
            if efi.is_file() and not efi.name.startswith("."):
                found.extend(type2(efi))
    return sorted(found, key=functools.cmp_to_key(_compare))


def default_pattern(esp: Path | None, boot: Path | None) -> str | None:
    for root in (r for r in (esp, boot) if r is not None):
        try:
            conf = parse_conf((root / "loader/loader.conf").read_text(errors="replace"))
        except OSError:
            continue
        if conf.get("default"):
            return conf["default"][-1]
    return None


def choose(all_entries: list[Entry], wanted: str, pattern: str | None) -> Entry:
    if not all_entries:
        raise KexloaderError("no boot loader entries found", hint="give --esp=DIR or --boot-dir=DIR")
    if wanted == "default":
        if pattern and not pattern.startswith("@"):
            for e in all_entries:  # systemd-boot folds case of ids and the pattern
                if fnmatch.fnmatchcase(e.id.lower(), pattern.lower()):
                    return e
        return all_entries[0]
    for e in all_entries:
        bare = e.id.split("@")[0].rsplit(".", 1)[0] + ("@" + e.id.split("@")[1] if "@" in e.id else "")
        if wanted.lower() in (e.id.lower(), bare.lower()):
            return e
    raise KexloaderError(f"no boot loader entry {wanted!r}",
                         hint="entries: " + ", ".join(e.id for e in all_entries))


def find(wanted: str, esp: str | None, boot_dir: str | None) -> Entry:
    """--boot-entry=ID|default: the entry, found where systemd-boot looks (`esp`, `boot_dir`: None for the
    usual places)."""
    esp_path, boot = locate(esp, boot_dir)
    return choose(entries(esp_path, boot), wanted, default_pattern(esp_path, boot))


def run_list(esp_dir: str | None, boot_dir: str | None, out: TextIO | None = None) -> int:
    """--list-boot-entries."""
    out = out or sys.stdout
    esp, boot = locate(esp_dir, boot_dir)
    found = entries(esp, boot)
    pattern = default_pattern(esp, boot)
    default = choose(found, "default", pattern) if found else None
    for e in found:
        mark = "*" if e is default else " "
        out.write(f"{mark} {e.id}\n    title: {e.title or '-'}\n    version: {e.version or '-'}\n"
                  f"    {'uki' if e.kind == 'type2' else 'linux'}: {e.kernel}\n")
        for i in e.initrds:
            out.write(f"    initrd: {i}\n")
        if e.options is not None:
            out.write(f"    options: {e.options}\n")
    if not found:
        out.write("no boot loader entries\n")
    return 0


@dataclass(frozen=True)
class Addon:
    """What one *.addon.efi adds: command line, initrd, microcode (None where it has no such section)."""

    file: str
    cmdline: str | None
    initrd: memoryview | None = None  # a view of the .initrd section
    ucode: memoryview | None = None  # a view of the .ucode section


def scan_addons(uki_path: str | Path, uname: str | None) -> list[Addon]:
    """The addons systemd-stub would apply to this UKI: loader/addons/ of the partition whose EFI/ holds it
    (when it is in such a tree), then <uki>.extra.d/, each in name order. Skipped as the stub skips them:
    names starting with '.', PE files that do not parse, UKIs (a .linux section), a .uname other than the
    UKI's, and addons with none of .cmdline, .initrd, .ucode."""
    path = Path(uki_path).resolve()
    dirs = []
    root = next((p for p in path.parents if p.name.upper() == "EFI"), None)
    if root is not None:
        dirs.append(root.parent / "loader/addons")
    dirs.append(path.parent / (path.name + ".extra.d"))
    out = []
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir(), key=lambda p: p.name):
            if f.name.startswith(".") or not f.name.lower().endswith(".addon.efi") or not f.is_file():
                continue
            try:
                data = read_file(f, "addon")
                img = uki.read_pe(data, str(f))
            except KexloaderError:
                continue
            if img.has(".linux"):
                continue  # a UKI, not an addon
            chosen = {s.name: s for s in reversed(img.sections)}  # the first section of a name
            if uname and ".uname" in chosen and uki.text(data, chosen[".uname"]) != uname:
                continue
            a = Addon(str(f), uki.text(data, chosen.get(".cmdline")),
                      uki.section_data(data, chosen[".initrd"]) if ".initrd" in chosen else None,
                      uki.section_data(data, chosen[".ucode"]) if ".ucode" in chosen else None)
            if a.cmdline is not None or a.initrd is not None or a.ucode is not None:
                out.append(a)
    return out


def addons(uki_path: str | Path, uname: str | None) -> list[tuple[str, str]]:
    """(file, .cmdline) of the command-line addons, in the order the stub appends them."""
    return [(a.file, a.cmdline) for a in scan_addons(uki_path, uname) if a.cmdline is not None]


def addon_parts(uki_path: str | Path, uname: str | None) -> tuple[tuple[str, InitrdPart], ...]:
    """The addons' microcode and initrds as (kind, InitrdPart), kind "ucode" or "initrd", in addon order."""
    out: list[tuple[str, InitrdPart]] = []
    for a in scan_addons(uki_path, uname):
        for kind, data in (("ucode", a.ucode), ("initrd", a.initrd)):
            if data is not None and len(data):
                out.append((kind, InitrdPart(f"{a.file}:.{kind}", data)))
    return tuple(out)


# systemd-stub's sidecar initrds (stub.c generate_sidecar_initrds), in its order: (directory, None = the
# UKI's own <uki>.extra.d; suffix; excluded suffix; target directory in the initramfs; dir mode; file mode)
SIDECARS = (
    (None, ".cred", None, ".extra/credentials", 0o500, 0o400),
    ("loader/credentials", ".cred", None, ".extra/global_credentials", 0o500, 0o400),
    (None, ".raw", ".confext.raw", ".extra/sysext", 0o555, 0o444),
    ("loader/extensions", ".raw", ".confext.raw", ".extra/global_sysext", 0o555, 0o444),
    (None, ".confext.raw", None, ".extra/confext", 0o555, 0o444),
    ("loader/extensions", ".confext.raw", None, ".extra/global_confext", 0o555, 0o444),
)


def sidecars(uki_path: str | Path) -> list[InitrdPart]:
    """The cpio archives systemd-stub makes of the files beside a UKI: credentials (*.cred) and system and
    configuration extensions (*.raw, *.confext.raw) in <uki>.extra.d/ and, when the UKI is in an EFI/ tree,
    loader/credentials/ and loader/extensions/ of that partition. Each directory's files in name order;
    names starting with '.', not ASCII or longer than 255 characters are skipped, as the stub does."""
    path = Path(uki_path).resolve()
    root = next((p.parent for p in path.parents if p.name.upper() == "EFI"), None)
    out = []
    for where, suffix, exclude, target, dir_mode, file_mode in SIDECARS:
        d = path.parent / (path.name + ".extra.d") if where is None else (root / where if root else None)
        if d is None or not d.is_dir():
            continue
        files = []
        for f in sorted(d.iterdir(), key=lambda p: p.name.encode()):
            n = f.name
            low = n.lower()
            if n.startswith(".") or not f.is_file() or not n.isascii() or len(n) > 255 or not low.endswith(suffix) \
                    or (exclude and low.endswith(exclude)):
                continue
            files.append((n, read_file(f, "sidecar")))
        if files:
            out.append(initramfs.InitrdPart(f"{d}/*{suffix} as /{target}/",
                                            initramfs.newc_cpio(target, files, dir_mode=dir_mode,
                                                                file_mode=file_mode)))
    return out
