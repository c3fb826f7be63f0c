"""User-facing errors.

Library code raises :class:`UsfmaeError` (or a subclass) for problems a user can fix: a missing
file, a malformed CSV, an impossible option. The CLI prints the message as one line and exits 2;
anything else is a bug and keeps its traceback.
"""

import errno
import os


class UsfmaeError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class ConfigError(UsfmaeError):
    """An invalid configuration value (raised from dataclass ``__post_init__`` validation)."""


class DataError(UsfmaeError):
    """A missing, malformed or unreadable data file; the message names the file."""


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError``: what failed, on which file (``disk full`` said plainly)."""
    if exc.errno == errno.ENOSPC:
        what = "disk full (no space left on the device)"
    elif exc.strerror:
        what = exc.strerror
    else:
        text = str(exc).strip()
        what = text.splitlines()[0] if text else type(exc).__name__
    names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n]
    where = " -> ".join(os.fsdecode(n) if isinstance(n, bytes) else str(n) for n in names)
    return f"{where}: {what}" if where else what
