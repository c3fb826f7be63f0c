"""User-facing errors.

Library code raises :class:`UsfmaeError` (or a subclass) for problems a user can fix: a missing
file, a malformed CSV, an impossible option. The CLI prints the message as one line and exits 2;
anything else is a bug and keeps its traceback.
"""


class UsfmaeError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class ConfigError(UsfmaeError):
    """An invalid configuration value (raised from dataclass ``__post_init__`` validation)."""


class DataError(UsfmaeError):
    """A missing, malformed or unreadable data file; the message names the file."""
