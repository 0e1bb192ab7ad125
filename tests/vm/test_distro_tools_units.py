"""The helpers of the kdump-tools and Secure Boot VM tests, without a VM (tools/vm/kdump_tools.py, secureboot.py)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from tools.vm import find_inputs, kdump_tools, secureboot


def pe_with_certificates(entries: list[tuple[int, bytes]], magic: int = 0x20B) -> bytes:
    """A minimal PE image: DOS stub, "PE\\0\\0", COFF header, optional header with data directory 4 pointing at a
    certificate table of WIN_CERTIFICATEs (type, payload), each padded to 8 bytes."""
    pe = 0x80
    opt = pe + 24
    directories = opt + (112 if magic == 0x20B else 96)
    table_at = directories + 16 * 8
    table = b""
    for kind, payload in entries:
        cert = struct.pack("<IHH", 8 + len(payload), 0x0200, kind) + payload
        table += cert + b"\0" * (-len(cert) % 8)
    image = bytearray(table_at + len(table))
    struct.pack_into("<I", image, 0x3C, pe)
    image[pe:pe + 4] = b"PE\0\0"
    struct.pack_into("<H", image, opt, magic)
    struct.pack_into("<II", image, directories + 8 * 4, table_at, len(table))
    image[table_at:] = table
    return bytes(image)


@pytest.mark.parametrize("magic", [0x20B, 0x10B], ids=["pe32+", "pe32"])
def test_pe_signatures_are_the_pkcs7_entries_of_the_certificate_table(magic):
    image = pe_with_certificates([(2, b"first-signature"), (1, b"an X.509 entry"), (2, b"second")], magic)
    assert secureboot.pe_signatures(image) == [b"first-signature", b"second"]


def test_an_unsigned_or_foreign_image_is_refused():
    assert secureboot.pe_signatures(pe_with_certificates([])) == []
    with pytest.raises(ValueError, match="not a PE image"):
        secureboot.pe_signatures(b"\0" * 0x100)
    bad = bytearray(pe_with_certificates([(2, b"x" * 16)]))
    struct.pack_into("<I", bad, len(bad) - 24, 4096)  # a WIN_CERTIFICATE longer than the file
    with pytest.raises(ValueError, match="bad WIN_CERTIFICATE"):
        secureboot.pe_signatures(bytes(bad))


def test_debians_kernel_names_its_signer():
    vmlinuz = find_inputs("deb12").vmlinuz
    if not vmlinuz:
        pytest.skip("Debian's kernel is not in the cache (sudo bash tools/install-deps.sh)")
    pems = secureboot.split_pems(secureboot.signer_certificates(vmlinuz))
    assert pems and all(p.startswith("-----BEGIN CERTIFICATE-----") for p in pems)
    subjects = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pems[0].encode(),
                              capture_output=True, check=True).stdout.decode()
    assert "Debian Secure Boot Signer" in subjects


def test_the_defaults_file_sets_what_was_asked_over_the_packages_template(tmp_path):
    kt = kdump_tools.find("deb12")
    if kt is None:
        pytest.skip(f"kdump-tools is not unpacked ({kdump_tools.FETCH_HINT})")
    path = Path(tmp_path / "kdump-tools")
    path.write_text(kt.defaults(kdump_tools.settings("nr_cpus=1 stage=dump")))
    out = subprocess.run(["sh", "-c", f'. {path}; echo "$USE_KDUMP|$KDUMP_KERNEL|$KDUMP_CMDLINE_APPEND"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "1|/var/lib/kdump/vmlinuz|nr_cpus=1 stage=dump\n"


# ---------------------------------------------------------------- kexloader's .deb in the guest (debpackage)

def test_the_packages_postinst_makes_kexec_and_vmcore_dmesg_through_the_stand_in(tmp_path):
    """debian/kexloader.postinst run by dash, as in the guest, with the update-alternatives stand-in first on
    PATH and its links made under a scratch root: the master and slave links the real tool would make."""
    from tools.vm import debpackage
    ua = tmp_path / "bin/update-alternatives"
    ua.parent.mkdir()
    ua.write_text(debpackage.UPDATE_ALTERNATIVES)
    ua.chmod(0o755)
    root = tmp_path / "root"
    postinst = Path(__file__).resolve().parents[2] / "debian/kexloader.postinst"
    r = subprocess.run(["sh", str(postinst), "configure"], capture_output=True, text=True, timeout=60,
                       env={"PATH": f"{ua.parent}:/usr/bin:/bin", "UA_ROOT": str(root)})
    assert r.returncode == 0, r.stderr
    links = {str(p.relative_to(root)): str(p.readlink()) for p in root.rglob("*") if p.is_symlink()}
    assert links == {
        "usr/sbin/kexec": "/etc/alternatives/kexec", "etc/alternatives/kexec": "/usr/sbin/kexloader",
        "usr/share/man/man8/kexec.8.gz": "/etc/alternatives/kexec.8.gz",
        "etc/alternatives/kexec.8.gz": "/usr/share/man/man8/kexloader.8.gz",
        "usr/share/bash-completion/completions/kexec": "/etc/alternatives/kexec.bash-completion",
        "etc/alternatives/kexec.bash-completion": "/usr/share/bash-completion/completions/kexloader",
        "usr/sbin/vmcore-dmesg": "/etc/alternatives/vmcore-dmesg",
        "etc/alternatives/vmcore-dmesg": "/usr/sbin/kexloader-vmcore-dmesg",
        "usr/share/man/man8/vmcore-dmesg.8.gz": "/etc/alternatives/vmcore-dmesg.8.gz",
        "etc/alternatives/vmcore-dmesg.8.gz": "/usr/share/man/man8/kexloader-vmcore-dmesg.8.gz",
    }, links
    calls = (root / debpackage.ALTERNATIVES_LOG.lstrip("/")).read_text().splitlines()
    assert [c.split()[:3] for c in calls] == [["--install", "/usr/sbin/kexec", "kexec"],
                                              ["--install", "/usr/sbin/vmcore-dmesg", "vmcore-dmesg"]]


def test_the_stand_in_refuses_a_short_install(tmp_path):
    from tools.vm import debpackage
    r = subprocess.run(["sh", "-c", debpackage.UPDATE_ALTERNATIVES, "update-alternatives", "--install", "/x", "x"],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "UA_ROOT": str(tmp_path)})
    assert r.returncode == 2 and "needs <link> <name> <path> <priority>" in r.stderr
    assert not (tmp_path / "x").exists()
