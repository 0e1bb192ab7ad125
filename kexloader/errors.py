"""One exception family. The CLI turns each into one line on stderr and kexec-tools' exit code.

kexec-tools' codes (kexec/kexec.h): 0 ok, 1 die()/usage or `-S` with an image loaded,
255 generic failure (a syscall returned -1), 254 no crash kernel region, 253 file-load fallback impossible.
docs/exit-codes.md has the table of cases, measured with kexec-tools 2.0.25, and kexloader's code for each.
"""

EXIT_DIE = 1
EXIT_FAILURE = 255
EXIT_NO_CRASH_KERNEL = 254
EXIT_FALLBACK = 253


class KexloaderError(Exception):
    """Base of every error meant for a person. `hint` says what to do about it."""

    exit_code = EXIT_DIE

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(KexloaderError):
    """Bad command line."""


class FileOpenError(KexloaderError):
    """A file that cannot be opened (missing, not permitted): kexec-tools' "Cannot open", exit 1; on its
    kexec_file_load path "Failed to open file", exit 255 (the caller says which)."""


class NotSupportedYet(KexloaderError):
    """An option or feature kexec-tools has that kexloader has not built yet."""


class ImageFormatError(KexloaderError):
    """An image (kernel, hypervisor, module, initrd) cannot be used. Exit 255, as kexec-tools' "Cannot determine
    the file type" and "Cannot load" (its image loaders fail, the load returns -1)."""

    exit_code = EXIT_FAILURE


class UnknownFormatError(ImageFormatError):
    """Not an image kind we know."""


class MalformedImageError(ImageFormatError):
    """The right kind of image, but truncated or corrupt."""


class UnsupportedImageError(ImageFormatError):
    """A well-formed image we cannot boot (too old, 32-bit only, not relocatable...)."""


class DecompressionError(ImageFormatError):
    """A compressed stream that is corrupt, truncated or too large."""


class PlacementError(KexloaderError):
    """The segments do not fit in the target's memory."""


class SystemFactsError(KexloaderError):
    """A fact about the running system (memory map, boot params...) cannot be read."""


class NoCrashRegionError(SystemFactsError):
    """kdump needs a reserved crash kernel region and there is none.

    Exit 1, not 254: kexec-tools 2.0.25 `-p` on a machine without "Crash kernel" in /proc/iomem prints
    "Memory for crashkernel is not reserved" and die()s before loading (measured through
    tools/kexec_tools_capture); its 254 (ENOCRASHKERNEL) only comes from deeper in its crash code."""

    exit_code = EXIT_DIE


class BackendError(KexloaderError):
    """The kernel or the hypervisor refused the request."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, errno: int | None = None, hint: str | None = None,
                 exit_code: int | None = None):
        super().__init__(message, hint=hint, exit_code=exit_code)
        self.errno = errno
