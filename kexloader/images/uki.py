"""Unified kernel images (UKI): a PE file from systemd-stub with the kernel and its inputs in sections.

The next kernel gets what systemd-stub (Secure Boot off) would give it when firmware boots the same UKI
(systemd-stub(7), the UAPI group's UKI specification):
- the kernel: `.linux`, a bzImage, planned as any bzImage;
- the initramfs: `.ucode`, then `.initrd`, then the cpio archives the stub makes of credentials and
  extensions beside the UKI (bootentries.sidecars), then those it generates from `.pcrsig`,
  `.pcrpkey`, `.osrel` and `.profile` (/.extra/tpm2-pcr-signature.json, tpm2-pcr-public-key.pem,
  os-release, profile), then the user's `--initrd` files, each padded to 4 bytes (the stub's order:
  microcode first, because the kernel's early loader looks at the first archive; addons' microcode
  before `.ucode`, their initrds after the generated archives);
- the command line: `.cmdline` (control characters as spaces, trailing spaces dropped, as the stub's
  mangle_stub_cmdline) unless the user gave one (--append, --command-line, --reuse-cmdline), then
  command-line addons appended (see addons()).

Profiles (systemd 257+): the section table is split by `.profile` sections. The sections before the first
`.profile` are the base; profile N is the run of sections from the N-th `.profile` up to the next one.
Booting profile N takes the base sections and lets profile N's override them by name (the first section
of a name wins inside each run). Without --uki-profile, profile 0; a UKI without `.profile` sections has
only that implied profile 0 (the base).

Sections are located by their file range: PointerToRawData, min(SizeOfRawData, VirtualSize) bytes (as
systemd's pe.c does for files), and handed on as memoryview slices of the mapped file, never copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from construct import ConstructError, Container

from ..errors import EXIT_FAILURE, MalformedImageError, UnknownFormatError, UsageError
from ..formats import pe
from ..initramfs import InitrdPart, newc_cpio
from ..memory import SegmentData
from ..model import LoadRequest, Plan, Range, SystemFacts
from . import bzimage

NAME = "uki"
# systemd-stub passes these sections to userspace as files in /.extra/, in this order (stub.c INITRD_PCRSIG ...)
META_FILES = ((".pcrsig", "tpm2-pcr-signature.json"), (".pcrpkey", "tpm2-pcr-public-key.pem"),
              (".osrel", "os-release"), (".profile", "profile"))
MAX_SECTIONS = 16 * 1024 * 1024 // pe.SECTION_HEADER_SIZE  # systemd's SECTION_TABLE_BYTES_MAX


@dataclass(frozen=True, slots=True)
class Section:
    index: int
    name: str
    file_offset: int
    file_size: int  # min(SizeOfRawData, VirtualSize): the bytes that are the section's content
    raw_size: int  # SizeOfRawData
    vaddr: int
    vsize: int


@dataclass(frozen=True, slots=True)
class PeImage:
    machine: int
    sections: tuple[Section, ...]

    @property
    def base(self) -> tuple[Section, ...]:
        """The sections before the first .profile (all of them when there is none)."""
        out = []
        for s in self.sections:
            if s.name == ".profile":
                break
            out.append(s)
        return tuple(out)

    @property
    def profiles(self) -> tuple[tuple[Section, ...], ...]:
        """Each .profile section and the sections after it up to the next .profile."""
        runs: list[list[Section]] = []
        for s in self.sections:
            if s.name == ".profile":
                runs.append([s])
            elif runs:
                runs[-1].append(s)
        return tuple(tuple(r) for r in runs)

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.sections)


def _pe_offsets(data: SegmentData) -> tuple[int, Container] | None:
    """(e_lfanew, COFF header) when data starts like a PE image, else None. Never raises."""
    if len(data) < pe.DosHeader.sizeof() or bytes(data[:2]) != pe.DOS_MAGIC:
        return None
    try:
        dos = pe.DosHeader.parse(bytes(data[:pe.DosHeader.sizeof()]))
        if dos.e_lfanew < pe.DosHeader.sizeof() or dos.e_lfanew + pe.COFF_HEADER_SIZE > len(data):
            return None
        coff = pe.CoffHeader.parse(bytes(data[dos.e_lfanew:dos.e_lfanew + pe.COFF_HEADER_SIZE]))
    except ConstructError:
        return None
    return dos.e_lfanew, coff


def is_pe(data: SegmentData) -> bool:
    return _pe_offsets(data) is not None


def probe(data: SegmentData) -> bool:
    """A PE image with a .linux section (kexec-tools' uki probe), counting the section headers present
    even when the table is cut short (planning then says it is truncated)."""
    found = _pe_offsets(data)
    if found is None:
        return False
    lfanew, coff = found
    table = lfanew + pe.COFF_HEADER_SIZE + coff.SizeOfOptionalHeader
    for i in range(min(coff.NumberOfSections, MAX_SECTIONS)):
        at = table + i * pe.SECTION_HEADER_SIZE
        if at + pe.SECTION_NAME_SIZE > len(data):
            break
        if bytes(data[at:at + pe.SECTION_NAME_SIZE]) == b".linux\0\0":
            return True
    return False


def read_pe(data: SegmentData, name: str) -> PeImage:
    """The PE headers and section table, checked: every section's bytes inside the file, no two sections
    sharing file bytes or addresses."""
    found = _pe_offsets(data)
    if found is None:
        raise UnknownFormatError(f"{name}: not a PE image (no 'MZ' and 'PE\\0\\0' signature)", exit_code=EXIT_FAILURE)
    lfanew, coff = found
    opt_at = lfanew + pe.COFF_HEADER_SIZE
    if coff.SizeOfOptionalHeader >= pe.OPTIONAL_HEADER_START_SIZE and opt_at + pe.OPTIONAL_HEADER_START_SIZE <= len(data):
        magic = int.from_bytes(bytes(data[opt_at:opt_at + 2]), "little")
        if magic not in (pe.PE32_MAGIC, pe.PE32PLUS_MAGIC):
            raise MalformedImageError(f"{name}: PE optional header magic {magic:#x} is neither PE32 nor PE32+",
                                      exit_code=EXIT_FAILURE)
    count = coff.NumberOfSections
    table = opt_at + coff.SizeOfOptionalHeader
    if count == 0 or count > MAX_SECTIONS:
        raise MalformedImageError(f"{name}: PE image with {count} sections", exit_code=EXIT_FAILURE)
    end = table + count * pe.SECTION_HEADER_SIZE
    if end > len(data):
        raise MalformedImageError(f"{name}: truncated PE section table: {count} sections need "
                                  f"[{table:#x}, {end:#x}), the file has {len(data):#x} bytes", exit_code=EXIT_FAILURE)
    sections: list[Section] = []
    for i in range(count):
        at = table + i * pe.SECTION_HEADER_SIZE
        h = pe.SectionHeader.parse(bytes(data[at:at + pe.SECTION_HEADER_SIZE]))
        s = Section(i, pe.section_name(h.Name), h.PointerToRawData, min(h.SizeOfRawData, h.VirtualSize),
                    h.SizeOfRawData, h.VirtualAddress, h.VirtualSize)
        if s.file_size and s.file_offset + s.file_size > len(data):
            raise MalformedImageError(f"{name}: PE section {s.name or i} at [{s.file_offset:#x}, "
                                      f"{s.file_offset + s.file_size:#x}) passes the end of the file "
                                      f"({len(data):#x} bytes)", exit_code=EXIT_FAILURE)
        sections.append(s)
    spans_of: tuple[tuple[str, Callable[[Section], Range]], ...] = (
        ("file bytes", lambda s: Range(s.file_offset, s.file_size)), ("addresses", lambda s: Range(s.vaddr, s.vsize)))
    for what, key in spans_of:
        spans = sorted(((key(s), s) for s in sections if key(s).size), key=lambda span: span[0])  # by range only
        for (ra, a), (rb, b) in zip(spans, spans[1:]):
            if ra.overlaps(rb):
                raise MalformedImageError(f"{name}: PE sections {a.name} {ra} and {b.name} {rb} overlap ({what})",
                                          exit_code=EXIT_FAILURE)
    return PeImage(coff.Machine, tuple(sections))


def section_data(data: SegmentData, s: Section) -> memoryview:
    """The section's content as a slice of `data` (no copy for a memoryview or mmap)."""
    return memoryview(data)[s.file_offset:s.file_offset + s.file_size]


def profile_count(img: PeImage) -> int:
    """How many profiles the stub would accept: the .profile runs, or the implied profile 0."""
    return max(len(img.profiles), 1)


def select(img: PeImage, profile: int | None, name: str) -> dict[str, Section]:
    """The sections booting `profile` uses: the base ones, overridden by the profile's (first of a name wins)."""
    chosen: dict[str, Section] = {}
    for s in img.base:
        chosen.setdefault(s.name, s)
    n = profile or 0
    runs = img.profiles
    if n < len(runs):
        own: dict[str, Section] = {}
        for s in runs[n]:
            own.setdefault(s.name, s)
        chosen.update(own)
    elif not (n == 0 and not runs):  # profile 0 is implied when there is no .profile
        have = f"profiles 0-{len(runs) - 1}" if runs else "only profile 0 (no .profile sections)"
        raise UsageError(f"{name}: no UKI profile {n}; the image has {have}",
                         hint="list them with kexloader --inspect " + name)
    return chosen


def text(data: SegmentData, s: Section | None) -> str | None:
    """A text section (.cmdline, .osrel, .uname, .profile) up to its first NUL."""
    if s is None:
        return None
    raw = bytes(section_data(data, s)).split(b"\0", 1)[0]
    return raw.decode("utf-8", "replace")


def mangle_cmdline(line: str) -> str:
    """systemd-stub's mangle_stub_cmdline: control characters become spaces, trailing spaces are dropped."""
    return "".join(" " if ord(c) < 0x20 else c for c in line).rstrip(" ")


def key_values(txt: str | None) -> dict[str, str]:
    """os-release style KEY=value lines (.osrel, .profile); quotes around values removed."""
    out: dict[str, str] = {}
    for line in (txt or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            out[key] = value.strip().strip("\"'")
    return out


@dataclass(frozen=True, slots=True)
class UkiContents:
    """What a UKI hands the next kernel for one profile."""

    profile: int
    kernel: memoryview  # the .linux section
    initrd_parts: tuple[InitrdPart, ...]  # .ucode, .initrd
    cmdline: str | None  # the mangled .cmdline, or None without one
    uname: str | None
    notes: tuple[str, ...]


def contents(data: SegmentData, name: str, profile: int | None = None, sidecars: tuple[InitrdPart, ...] = (),
             addon_parts: tuple[tuple[str, InitrdPart], ...] = ()) -> UkiContents:
    """The kernel, initrd parts and command line of `profile` (None: 0), checked.

    sidecars: InitrdParts the stub would build from files beside the UKI (credentials, system and
    configuration extensions: bootentries.sidecars), placed after .initrd as the stub does.
    addon_parts: ("ucode" | "initrd", InitrdPart) of the addons, in addon order (bootentries.addon_parts): as
    the stub, their microcode goes first, in reverse order (the kernel takes the first it finds), their
    initrds last."""
    img = read_pe(data, name)
    chosen = select(img, profile, name)
    if ".linux" not in chosen:
        raise UnknownFormatError(f"{name}: a PE image without a .linux section is not a unified kernel image",
                                 exit_code=EXIT_FAILURE)
    kernel = section_data(data, chosen[".linux"])
    if not bzimage.probe(kernel):
        raise UnknownFormatError(f"{name}: the UKI's .linux section ({len(kernel)} bytes) is not a bzImage",
                                 exit_code=EXIT_FAILURE)
    parts = tuple(p for kind, p in reversed(addon_parts) if kind == "ucode")
    parts += tuple(InitrdPart(f"{name}:{sec}", section_data(data, chosen[sec]))
                   for sec in (".ucode", ".initrd") if sec in chosen and chosen[sec].file_size)
    parts += tuple(sidecars)
    # then, as systemd-stub's generate_embedded_initrds, sections handed to userspace in /.extra/ (one cpio each)
    parts += tuple(InitrdPart(f"{name}:{sec} as /.extra/{file}",
                              newc_cpio(".extra", [(file, section_data(data, chosen[sec]))]))
                   for sec, file in META_FILES if sec in chosen)
    parts += tuple(p for kind, p in addon_parts if kind == "initrd")
    line = text(data, chosen.get(".cmdline"))
    n = profile or 0
    notes = [f"{name}: unified kernel image, profile {n} of {profile_count(img)}"
             + (f" ({key_values(text(data, chosen['.profile'])).get('ID', '')})" if ".profile" in chosen else "")]
    return UkiContents(n, kernel, parts, mangle_cmdline(line) if line is not None else None,
                       text(data, chosen.get(".uname")), tuple(notes))


def with_command_line(line: str, addon_cmdlines: Iterable[str]) -> str:
    """A command line with the addons' command lines appended, each mangled as the stub does."""
    for extra in addon_cmdlines:
        extra = mangle_cmdline(extra)
        if extra:
            line = f"{line} {extra}" if line else extra
    return line


def request_for(req: LoadRequest) -> tuple[LoadRequest, UkiContents]:
    """The request for the UKI's kernel (.linux; .ucode, .initrd, the stub's archives and the user's initrds;
    the command line and the addons'), and what the UKI holds for the chosen profile."""
    c = contents(req.kernel, req.kernel_name, req.uki_profile, req.uki_sidecars, req.uki_addon_parts)
    user = tuple(req.initrd_parts) or ((InitrdPart(req.initrd_name, req.initrd),) if req.initrd is not None else ())
    line = with_command_line(req.cmdline if req.cmdline_given else (c.cmdline or ""), req.uki_addons)
    inner = dataclasses.replace(req, kernel=c.kernel, kernel_name=f"{req.kernel_name}:.linux", initrd=None,
                                initrd_name="", initrd_parts=c.initrd_parts + user, cmdline=line, cmdline_given=True,
                                image_type=None)
    return inner, c


def plan(req: LoadRequest, facts: SystemFacts, usable: list[Range]) -> Plan:
    """Plan the UKI's .linux as a bzImage with the initramfs and command line the stub would give it."""
    inner, c = request_for(req)
    p = bzimage.plan(inner, facts, usable)
    return dataclasses.replace(p, notes=c.notes + p.notes)
