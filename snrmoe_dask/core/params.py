"""Declarative checks of parameters, in one place: each parameter is a type (with its constraints) and a
phrase saying what is expected; a value that does not fit raises one line naming the parameter.

    ALPHA = Param(Annotated[float, Field(ge=0, allow_inf_nan=False)], "a finite number >= 0")
    check_params("BinnedRidge", {"alpha": ALPHA}, {"alpha": -1.0})
    # InvalidParameterError: BinnedRidge: alpha=-1.0: expected a finite number >= 0

The types are pydantic's, validated in strict mode (True is not 1, "1.0" is not a number); the
error is a ``ValueError`` (and ``TypeError``), as scikit-learn's ``InvalidParameterError``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidParameterError


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
