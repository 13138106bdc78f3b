"""Checks of constructor arguments, each naming the argument it checks.

Every message has the Keras shape: the argument in backticks, what was expected, what was
received ("Invalid value for argument `filters`. Expected a strictly positive integer.
Received filters=0."). The values come from config keys of the same names, so the
message points the user at the key to fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sfg_app.errors import ConfigError


def invalid(name: str, value, expected: str) -> ConfigError:
    return ConfigError(f"Invalid value for argument `{name}`. Expected {expected}. "
                       f"Received {name}={value!r}.")


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(name, value, "a strictly positive integer")
    return value


def non_negative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(name, value, "an integer >= 0")
    return value


def positive_float(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise invalid(name, value, expected)
    return float(value)


def fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise invalid(name, value, "a number in [0, 1)")
    return float(value)


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(name, value, "True or False")
    return value


def one_of(value, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise invalid(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def optional_seed(value, name: str = "seed") -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 0):
        raise invalid(name, value, "None or an integer >= 0")
    return value


def probability_vector(value, name: str) -> tuple[float, ...]:
    """A tuple of strictly positive probabilities summing to 1 (to 1e-3), renormalised."""
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise invalid(name, value, "a sequence of probabilities") from None
    if len(numbers) < 2 or not all(math.isfinite(v) and v > 0 for v in numbers) \
            or abs(sum(numbers) - 1.0) > 1e-3:
        raise invalid(name, value, "at least two probabilities, each > 0, summing to 1 "
                                   "(one per group: the tasks in order, then shared)")
    total = sum(numbers)
    return tuple(v / total for v in numbers)
