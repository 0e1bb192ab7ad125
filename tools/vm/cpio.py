"""A newc ("070701") cpio writer for initramfs images, with no root and no cpio(1) needed.

Every entry is owned by root, with the mode given here, so an image built by an unprivileged user
boots the same as one built by root. Directories are emitted before what they hold.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    mode: int  # full st_mode: type bits | permissions
    data: bytes | Path | None = None  # file content (bytes, or a host file read at write time)
    target: str | None = None  # symlink target
    rdev: tuple[int, int] = (0, 0)  # device major, minor (character/block nodes)


class Initramfs:
    """An in-memory tree of files that writes itself as a newc cpio archive.

    Paths are guest paths ("/bin/sh" or "bin/sh"); parents are created as needed.
    A later add() of the same path replaces the earlier one.
    """

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    # -- adding ---------------------------------------------------------------------------------
    @staticmethod
    def _key(path: str) -> str:
        p = PurePosixPath("/", path)
        parts = [x for x in p.parts[1:] if x not in ("", ".")]
        if ".." in parts or not parts:
            raise ValueError(f"bad guest path {path!r}")
        return "/".join(parts)

    def _parents(self, key: str) -> None:
        parts = key.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            e = self.entries.get(d)
            if e is None:
                self.entries[d] = Entry(stat.S_IFDIR | 0o755)
            elif not stat.S_ISDIR(e.mode):
                raise ValueError(f"{d} is not a directory in the image")

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        key = self._key(path)
        self._parents(key)
        self.entries[key] = Entry(stat.S_IFDIR | mode)

    def add_file(self, path: str, data: bytes | str | Path, mode: int = 0o644) -> None:
        if isinstance(data, str):
            data = data.encode()
        key = self._key(path)
        self._parents(key)
        self.entries[key] = Entry(stat.S_IFREG | mode, data=data)

    def add_symlink(self, path: str, target: str) -> None:
        key = self._key(path)
        self._parents(key)
        self.entries[key] = Entry(stat.S_IFLNK | 0o777, target=target)

    def add_node(self, path: str, kind: str, major: int, minor: int, mode: int = 0o600) -> None:
        key = self._key(path)
        self._parents(key)
        t = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[kind]
        self.entries[key] = Entry(t | mode, rdev=(major, minor))

    def add_tree(self, src: Path, dest: str = "/") -> None:
        """Copy a host directory tree (files, dirs, symlinks) under `dest`; modes kept, owner root."""
        src = Path(src)
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = Path(root).relative_to(src)
            base = PurePosixPath(dest, rel.as_posix()) if str(rel) != "." else PurePosixPath(dest)
            if str(rel) != ".":
                self.mkdir(str(base), stat.S_IMODE(os.lstat(root).st_mode))
            for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                hp = Path(root, name)
                st = os.lstat(hp)
                gp = str(base / name)
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(gp, os.readlink(hp))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(gp, hp, stat.S_IMODE(st.st_mode))

    def merge(self, other: "Initramfs") -> None:
        for key, e in other.entries.items():
            self._parents(key)
            self.entries[key] = e

    # -- writing --------------------------------------------------------------------------------
    def _records(self):
        ino = 1000
        for key in sorted(self.entries):
            e = self.entries[key]
            ino += 1
            if e.target is not None:
                body = e.target.encode()
            elif e.data is None:
                body = b""
            elif isinstance(e.data, Path):
                body = e.data.read_bytes()
            else:
                body = e.data
            yield key, e, ino, body

    def write_cpio(self, fileobj) -> int:
        """Write the archive; returns its length in bytes."""
        n = 0

        def emit(name: str, mode: int, ino: int, body: bytes, nlink: int, rdev=(0, 0)) -> int:
            nm = name.encode() + b"\0"
            hdr = "070701" + "".join(
                f"{v:08X}"
                for v in (ino, mode, 0, 0, nlink, 0, len(body), 0, 0, rdev[0], rdev[1], len(nm), 0)
            )
            out = hdr.encode() + nm
            out += b"\0" * (-len(out) % 4)
            out += body
            out += b"\0" * (-len(out) % 4)
            fileobj.write(out)
            return len(out)

        # Sorted lexicographically, a directory always comes before its contents.
        for key, e, ino, body in self._records():
            nlink = 2 if stat.S_ISDIR(e.mode) else 1
            n += emit(key, e.mode, ino, body, nlink, e.rdev)
        n += emit(TRAILER, 0, 0, b"", 1)
        return n

    def write(self, path: Path, compress: str = "none") -> Path:
        """Write to `path`, compressed with "none", "gzip" or "zstd" (all accepted by Debian's kernel)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if compress == "none":
            with open(tmp, "wb") as f:
                self.write_cpio(f)
        elif compress == "gzip":
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
                self.write_cpio(f)
        elif compress == "zstd":
            zstd = shutil.which("zstd")
            if not zstd:
                raise RuntimeError("zstd(1) is needed for compress='zstd' (apt-get install zstd)")
            with open(tmp, "wb") as out:
                p = subprocess.Popen([zstd, "-q", "-c", "-T0", "-10"], stdin=subprocess.PIPE, stdout=out)
                assert p.stdin is not None
                self.write_cpio(p.stdin)
                p.stdin.close()
                if p.wait() != 0:
                    raise RuntimeError("zstd failed")
        else:
            raise ValueError(f"unknown compression {compress!r}")
        os.replace(tmp, path)
        return path
