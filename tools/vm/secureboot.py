"""A UEFI Secure Boot machine that trusts Debian's kernel (tests/vm/test_secure_boot.py).

Firmware: Debian's ovmf package, OVMF_CODE_4M.secboot.fd (SMM-protected variables: q35 with smm=on and
secure pflash). Variables: the package's empty OVMF_VARS_4M.fd with, written by virt-firmware's
`virt-fw-vars` (tools/secureboot-tools.sh installs it from PyPI into $KEXLOADER_CACHE/virt-firmware):

    PK, KEK   a certificate virt-fw-vars generates ("kexloader VM test"); nobody signs with it (no
              Microsoft KEK or db entries)
    db        the certificates in the kernel's own Authenticode signature (the PE certificate table of
              vmlinuz: Debian's "Secure Boot Signer" certificate, which signs the kernel)
    SecureBoot on (--secure-boot), so OVMF leaves setup mode and checks every image against db

OVMF then starts the kernel given with -kernel only because db trusts its signer; its EFI stub sees Secure
Boot enabled, and Debian's kernel locks itself down (CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT) and loads db into
its platform keyring.

    vars_file = secure_boot_vars(vmlinuz, out_dir)      # made once per kernel, cached beside out_dir
    h.boot(guest, append, firmware="bios", extra_args=qemu_args(vars_file), ...)
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

from .env import cache_dir

CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
EMPTY_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FETCH_HINT = "bash tools/secureboot-tools.sh ~/.cache/kexloader (run by sudo bash tools/install-deps.sh)"
OWNER = "a8e6d5e2-3b1c-4f0a-9d55-6b657865c0de"  # the owner GUID written with our db and KEK entries
VARS_LAYOUT = 3  # part of a made VARS file's name: bump when what secure_boot_vars enrolls changes
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
IMAGE_DIRECTORY_ENTRY_SECURITY = 4


def virt_fw_vars() -> Path:
    return cache_dir() / "virt-firmware" / "bin" / "virt-fw-vars"


def missing() -> list[str]:
    out = [f"{p} (apt-get install ovmf)" for p in (CODE, EMPTY_VARS) if not p.is_file()]
    if not virt_fw_vars().is_file():
        out.append(f"{virt_fw_vars()} ({FETCH_HINT})")
    return out


def pe_signatures(image: bytes) -> list[bytes]:
    """The PKCS#7 SignedData blobs of a PE image's certificate table (Authenticode), DER.

    PE/COFF: e_lfanew at 0x3c; after "PE\\0\\0" the 20-byte COFF header, then the optional header whose
    data directory 4 (security) holds a file offset and size; the table is a list of WIN_CERTIFICATEs
    (dwLength, wRevision, wCertificateType, bCertificate), each 8-byte aligned.
    """
    (pe,) = struct.unpack_from("<I", image, 0x3C)
    if image[pe:pe + 4] != b"PE\0\0":
        raise ValueError("not a PE image (no PE signature at e_lfanew)")
    opt = pe + 24
    (magic,) = struct.unpack_from("<H", image, opt)
    directories = opt + {0x10B: 96, 0x20B: 112}[magic]  # PE32, PE32+
    offset, size = struct.unpack_from("<II", image, directories + 8 * IMAGE_DIRECTORY_ENTRY_SECURITY)
    blobs = []
    end = offset + size
    while size and offset + 8 <= end:
        length, _revision, kind = struct.unpack_from("<IHH", image, offset)
        if length < 8 or offset + length > len(image):
            raise ValueError(f"bad WIN_CERTIFICATE at {offset:#x} (length {length})")
        if kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA:
            blobs.append(image[offset + 8:offset + length])
        offset += (length + 7) & ~7
    return blobs


def signer_certificates(vmlinuz: Path) -> str:
    """PEM of every certificate in the kernel's signatures (openssl pkcs7 -print_certs)."""
    blobs = pe_signatures(Path(vmlinuz).read_bytes())
    if not blobs:
        raise ValueError(f"{vmlinuz} is not signed (no Authenticode signature in its PE certificate table)")
    pems = []
    for blob in blobs:
        out = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-print_certs"], input=blob,
                             capture_output=True, check=True).stdout.decode()
        pems.append(out)
    return "".join(pems)


def split_pems(text: str) -> list[str]:
    """Each PEM certificate of `text` (openssl's -print_certs puts subject= and issuer= lines between them)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    return [block[block.index(begin):].strip() + "\n" + end + "\n" for block in text.split(end) if begin in block]


def secure_boot_vars(vmlinuz: Path, out_dir: Path) -> Path:
    """A VARS file for CODE with Secure Boot on and the kernel's signers in db (made once per kernel)."""
    key = hashlib.sha256(Path(vmlinuz).read_bytes()).hexdigest()[:16]
    out = Path(out_dir) / f"OVMF_VARS_4M.secboot-{VARS_LAYOUT}-{key}.fd"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(virt_fw_vars()), "--input", str(EMPTY_VARS), "--output", str(out) + ".tmp",
           "--enroll-generate", "kexloader VM test", "--no-microsoft", "--microsoft-kek", "none", "--secure-boot"]
    for i, pem in enumerate(split_pems(signer_certificates(vmlinuz))):
        path = out.parent / f"db-{key}-{i}.pem"
        path.write_text(pem)
        cmd += ["--add-db", OWNER, str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    Path(str(out) + ".tmp").rename(out)
    return out


def qemu_args(vars_file: Path) -> list[str]:
    """QEMU arguments for the Secure Boot firmware: q35 with SMM, code read-only, variables in an overlay."""
    return ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,snapshot=on,file={vars_file}"]
