"""Checks of parameters, in one place, each raising one line that names the key and the value.

:func:`check_number` checks one scalar, for the library's functions and the config's values:

    check_number("model.alpha", alpha, "a finite number >= 0", test=lambda a: math.isfinite(a) and a >= 0)
    # ConfigError: model.alpha: expected a finite number >= 0, got -1

A bool is never a number there, nor is a string; numpy's scalars are. :class:`Param` and
:func:`check_params` declare an estimator's parameters: each is a type (with its constraints) and a
phrase saying what is expected; a value that does not fit raises one line naming the parameter.

    ALPHA = Param(Annotated[float, Field(ge=0, allow_inf_nan=False)], "a finite number >= 0")
    check_params("BinnedRidge", {"alpha": ALPHA}, {"alpha": -1.0})
    # InvalidParameterError: BinnedRidge: alpha=-1.0: expected a finite number >= 0

The types are pydantic's, validated in strict mode (True is not 1, "1.0" is not a number); the
error is a ``ValueError`` (and ``TypeError``), as scikit-learn's ``InvalidParameterError``.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ConfigError, InvalidParameterError


def check_number(key: str, value: Any, expected: str, *, integer: bool = False,
                 test: Callable[[Any], bool] | None = None, error: type[Exception] = ConfigError) -> Any:
    """``value`` as an ``int`` (``integer=True``) or a ``float``, when it is an integral (or real) number,
    not a bool, for which ``test`` holds; otherwise ``error("<key>: expected <expected>, got <value!r>")``.
    A NaN fails every comparison, so a ``test`` such as ``v >= 0`` refuses it too."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or (test is not None and not test(value)):
        raise error(f"{key}: expected {expected}, got {value!r}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class Param:
    """A parameter's type (a pydantic-validatable annotation) and what to say is expected of it."""

    annotation: Any
    expected: str

    def check(self, owner: str, name: str, value: Any) -> Any:
        """``value`` validated (as pydantic converts it in strict mode); InvalidParameterError if it does
        not fit."""
        from pydantic import ValidationError

        try:
            return _adapter(self.annotation).validate_python(value, strict=True)
        except ValidationError:
            raise InvalidParameterError(f"{owner}: {name}={value!r}: expected {self.expected}", name) from None


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


def check_params(owner: str, params: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate every value of ``values`` that ``params`` declares; returns the validated values."""
    return {name: params[name].check(owner, name, value) for name, value in values.items() if name in params}
