"""User-facing errors: one line that names the file, key or value and what was expected."""


class SnrmoeError(Exception):
    """Base class. The CLI prints ``snrmoe: error: <message>`` and exits with code 2."""


class InputError(SnrmoeError):
    """A data file is missing, unreadable or does not have the expected layout."""


class ConfigError(SnrmoeError):
    """A configuration key has a wrong name, type or value."""


class InvalidParameterError(SnrmoeError, ValueError, TypeError):
    """A parameter of a library function or estimator has a wrong type or value (as scikit-learn's
    ``InvalidParameterError``). ``parameter`` names it, so that a client such as the CLI can name its
    own key for it instead."""

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter
