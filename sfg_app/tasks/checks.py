"""The checks of a task's constructor arguments, each error naming the task.

A config can hold several tasks of one type, so an argument's name alone does not say
which section to fix: every message names the task too ("Invalid value for argument
`num_classes` of task 'organs'. Expected an integer >= 2. Received num_classes=1.").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from sfg_app import arguments
from sfg_app.errors import ConfigError
from sfg_app.registry import LOSSES


class TaskArguments:
    """Checks for the arguments of the task ``task_name``; each returns the checked value."""

    def __init__(self, task_name: str):
        if not isinstance(task_name, str) or not task_name.strip():
            raise ConfigError("Invalid value for argument `name` of a task. Expected a "
                              f"non-empty string. Received name={task_name!r}.")
        self.owner = f"task {task_name!r}"

    def invalid(self, argument: str, value, expected: str):
        raise arguments.invalid(argument, value, expected, owner=self.owner)

    def section_name(self, value, argument: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.invalid(argument, value, "the name of an input section")
        return value

    def flag(self, value, argument: str) -> bool:
        if not isinstance(value, bool):
            self.invalid(argument, value, "true or false")
        return value

    def number(self, value, argument: str, minimum: float | None = None,
               strictly_positive: bool = False) -> float:
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value))
        if ok and strictly_positive:
            ok = value > 0
        if ok and minimum is not None:
            ok = value >= minimum
        if not ok:
            bound = ("a finite number > 0" if strictly_positive else
                     f"a finite number >= {minimum:g}" if minimum is not None else
                     "a finite number")
            self.invalid(argument, value, bound)
        return float(value)

    def count(self, value, argument: str, minimum: int) -> int:
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                or value < minimum):
            self.invalid(argument, value, f"an integer >= {minimum}")
        return int(value)

    def per_channel(self, value, argument: str, channels: int,
                    strictly_positive: bool = False) -> tuple[float, ...]:
        """One number for every channel, or one number per channel."""
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != channels:
                self.invalid(argument, value, f"one number, or {channels} numbers (one "
                             "per output channel)")
            return tuple(self.number(v, argument, strictly_positive=strictly_positive)
                         for v in value)
        return (self.number(value, argument, strictly_positive=strictly_positive),) * channels

    def interp_order(self, value, argument: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
            self.invalid(argument, value,
                         "an integer from 0 (nearest neighbour) to 5 (spline order)")
        return value

    def loss(self, value: str, allowed: Sequence[str], type_name: str):
        """The registered loss ``value``, one of the type's ``allowed`` losses."""
        if value in LOSSES.names() and value not in allowed:
            self.invalid("loss", value, f"a loss for a {type_name} task: {', '.join(allowed)}")
        try:
            return LOSSES.get(value)
        except ConfigError as error:
            raise ConfigError(f"Invalid value for argument `loss` of {self.owner}. "
                              f"{error}") from None
