"""User-facing errors: one line that names the file, key or value and what was expected."""


class SnrmoeError(Exception):
    """Base class. The CLI prints ``snrmoe: error: <message>`` and exits with code 2."""


class InputError(SnrmoeError):
    """A data file is missing, unreadable or does not have the expected layout."""


class ConfigError(SnrmoeError):
    """A configuration key has a wrong name, type or value."""
