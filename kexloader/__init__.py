"""kexloader: a pure-Python kexec loader for x86-64."""

__version__ = "0.1.0"
