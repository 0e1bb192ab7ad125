"""Debian's kexec-tools under the capture shim, inside a guest, next to a kexloader dry run on the same inputs.

`files()` stages Debian 12's /sbin/kexec (unpacked by tools/kexec_tools_capture/capture.py, never installed),
the libraries `ldd` names for it (libxenctrl & co. from the cache, the rest from this host: the guests run the
host's userland) and the shim (`build_shim()`) under /opt/kt. `STAGE` runs, for `$ACTION` (-l or -p):

    kexec -c $ACTION KERNEL --initrd=I --append=A       (LD_PRELOAD=shim, KT_CAPTURE_DIR=/tmp/out/kexec-tools)
    kexloader --dry-run --plan-out /tmp/out/kexloader -c $ACTION KERNEL --initrd=I --append=A
    python3 -m kexloader.system save /tmp/out/snapshot.json

Segments larger than `BIG` (the kernel, the initrd) are replaced by `NAME.sha256` ("<hex> <size>") before the
directory travels out as one `mark_blob` tarball; `unpack()` writes it on the host and `rehydrate()` puts the
bytes back from files whose hashes match (the kernel's payload, the initrd).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

from .pyruntime import ldd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kexec_tools_capture import capture as kt  # noqa: E402

BIG = 256 * 1024  # bytes: a segment above this travels as its SHA-256

STAGE = r"""
mkdir -p /tmp/out/kexec-tools
run kexec_tools env LD_LIBRARY_PATH=/opt/kt/lib LD_PRELOAD=/opt/kt/shim.so KT_CAPTURE_DIR=/tmp/out/kexec-tools \
    /opt/kt/kexec -c $ACTION /boot/vmlinuz --initrd=/initrd.bin --append="$APPEND"
run kexloader kexloader --dry-run --plan-out /tmp/out/kexloader -c $ACTION /boot/vmlinuz --initrd=/initrd.bin \
    --append="$APPEND"
run save python3 -m kexloader.system save /tmp/out/snapshot.json
for f in /tmp/out/kexec-tools/seg-*.bin /tmp/out/kexloader/*; do
    size=$(stat -c %s "$f")
    if [ "$size" -gt BIG ]; then echo "$(sha256 "$f") $size" > "$f.sha256"; rm "$f"; fi
done
tar -czf /tmp/out.tgz -C /tmp/out .
mark_blob captures /tmp/out.tgz
""".replace("BIG", str(BIG))


def files() -> dict[str, Path]:
    """Guest path -> host file: /opt/kt/kexec, /opt/kt/shim.so and /opt/kt/lib/* (what ldd names for both)."""
    kexec, ld_path = kt.debian_kexec()
    shim = kt.build_shim()
    saved = os.environ.get("LD_LIBRARY_PATH")
    try:
        if ld_path:
            os.environ["LD_LIBRARY_PATH"] = ld_path  # ldd resolves the cached Xen libraries through it
        libs = ldd([kexec, shim])
    finally:
        if saved is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved
    out = {"/opt/kt/kexec": kexec, "/opt/kt/shim.so": shim}
    for lib in libs:
        if not lib.name.startswith("ld-linux"):  # the guest's loader is the host's, at its own path
            out[f"/opt/kt/lib/{lib.name}"] = lib.resolve()
    return out


def unpack(tarball: bytes, dest: Path) -> Path:
    """The guest's /tmp/out (kexec-tools/, kexloader/, snapshot.json) written under dest."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        members = tar.getmembers()
        for m in members:  # plain files and directories inside dest (extractall's filter= is 3.12+ only)
            if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                raise ValueError(f"unexpected member {m.name!r} in the guest's tarball")
        tar.extractall(dest, members)
    return dest


def rehydrate(directory: Path, sources: list[bytes]) -> list[str]:
    """Write back every `X.sha256` stand-in under directory from the source with that hash and size, or from
    zeros (kexec-tools' -p backup buffer); returns the names of those nothing matched."""
    by_hash = {(hashlib.sha256(s).hexdigest(), len(s)): s for s in sources}
    missing = []
    for stand_in in sorted(directory.rglob("*.sha256")):
        digest, size = stand_in.read_text().split()
        data = by_hash.get((digest, int(size)))
        if data is None and hashlib.sha256(bytes(int(size))).hexdigest() == digest:
            data = bytes(int(size))
        if data is None:
            missing.append(str(stand_in.relative_to(directory)))
        else:
            stand_in.with_suffix("").write_bytes(data)
    return missing


def deterministic_initrd(size: int = 1 << 20) -> bytes:
    """The initrd both loaders are given: nothing boots it, so any bytes do; these can be rebuilt on the host."""
    blocks, block = [], hashlib.sha256(b"kexloader kexec-tools OVMF capture").digest()
    while len(blocks) * 32 < size:
        blocks.append(block)
        block = hashlib.sha256(block).digest()
    return b"".join(blocks)[:size]
