"""What an image file is, from the library: what `kexloader --inspect FILE` prints, as a dict to use.

    python3 inspect_image.py /boot/vmlinuz
"""

import sys
from pathlib import Path

from kexloader import inspect


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: inspect_image.py IMAGE", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        raw = path.read_bytes()
    except OSError as e:
        print(f"inspect_image: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 1
    info = inspect.inspect_image(raw, str(path))  # pure: bytes in, a JSON-ready dict out
    # A few fields a build pipeline might gate on; the rest is in `info` (see inspect.to_text for all).
    print(f"kind:        {info['kind'] or 'unknown'} (loadable: {'yes' if info['loadable'] else 'no'})")
    print(f"version:     {info['version'] or 'not found'}")
    print(f"compression: {info['compression'] or 'none'}")
    sections = [k for k in ("bzimage", "elf", "multiboot1", "multiboot2", "uki", "xen") if k in info]
    print(f"sections:    {', '.join(sections) or 'none'}")
    for err in info["errors"]:  # what `kexloader -l` would refuse
        print(f"error:       {err}")
    return 0 if info["kind"] and not info["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
