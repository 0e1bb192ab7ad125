"""A mutation fuzzer for kexloader's parsers: `python3 -m tools.fuzz --list`. See README.md."""
