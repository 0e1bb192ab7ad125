"""construct declarations of on-disk and in-memory formats, installed as kexloader.formats.

No file access and no kexec policy here."""
