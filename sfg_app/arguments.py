"""Checks of constructor arguments, each naming the argument it checks: the one home of
the rules that a component and the config schema both apply (the config's cross-key
checks call these, so a value the config accepts is one the component accepts).

Every message has the Keras shape: the argument in backticks, what was expected, what was
received ("Invalid value for argument `filters`. Expected a strictly positive integer.
Received filters=0."). The values come from config keys of the same names, so the
message points the user at the key to fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sfg_app.errors import ConfigError


def invalid(name: str, value, expected: str, hint: str = "", owner: str = "") -> ConfigError:
    """``owner`` names what takes the argument when the name alone is ambiguous, e.g.
    "task 'organs'"."""
    of = f" of {owner}" if owner else ""
    return ConfigError(f"Invalid value for argument `{name}`{of}. Expected {expected}. "
                       f"Received {name}={value!r}. {hint}".rstrip())


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(name, value, "a strictly positive integer")
    return value


def non_negative_int(value, name: str) -> int:
    return integer(value, name, minimum=0)


def integer(value, name: str, minimum: int) -> int:
    """An integer (numpy's too) of at least ``minimum``, as a Python int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise invalid(name, value, f"an integer >= {minimum}")
    return int(value)


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


def schedule_iterations(length, max_iter: int) -> int:
    """A schedule's length in iterations: ``length`` itself (an int), or a fraction (a
    float in (0, 1)) of ``max_iter``, rounded and at least 1: a schedule given as a share
    of the run lasts a step even in the shortest run."""
    if isinstance(length, float):
        return max(1, int(round(length * max_iter)))
    return int(length)


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(name, value, "True or False")
    return value


def one_of(value, name: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``, spelled as the config's choices are ("one of a, b, c")."""
    if not isinstance(value, str) or value not in allowed:
        raise invalid(name, value, "one of " + ", ".join(allowed))
    return value


def optional_seed(value, name: str = "seed") -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 0):
        raise invalid(name, value, "None or an integer >= 0")
    return value


#: The inner landmarks (percentiles, 0..1) of histogram normalisation for each
#: ``norm_type``; ``cutoff`` must lie outside them.
HISTOGRAM_LANDMARKS = {"percentile": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                       "quartile": (0.25, 0.5, 0.75)}


def histogram_cutoff_problem(cutoff, norm_type: str) -> str | None:
    """What ``cutoff`` should be for ``norm_type`` (a known type), or None when it fits:
    histogram normalisation maps the cutoffs and the inner landmarks in order."""
    inner = HISTOGRAM_LANDMARKS[norm_type]
    low, high = cutoff
    if 0.0 <= low < inner[0] and inner[-1] < high <= 1.0:
        return None
    return (f"two fractions (low, high) with 0 <= low < {inner[0]} and {inner[-1]} < high "
            f"<= 1 for norm_type = {norm_type}")


def inference_window_problem(window, training_window) -> str | None:
    """What an inference window should be, given the training window (both three ints),
    or None when it fits: at least the training window on every axis (the network was
    trained to see that much around a voxel), and 2D, (x, y, 1), when training is."""
    window, training = tuple(window), tuple(training_window)
    if training[2] == 1 and window[2] != 1:
        return (f"a 2D window (x, y, 1), as the training window {training} is 2D, at least "
                f"{training[:2]} on x and y")
    if any(w < t for w, t in zip(window, training)):
        return f"at least the training window {training} on every axis"
    return None


def grouping_problems(values, num_groups: int | None = None) -> list[tuple[str, str, str]]:
    """The rules between the grouping's settings (``[SFG]`` keys: ``tau``, ``tau_min``,
    ``sample_per``, ``impl``, ``init``, ``prior``) that ``values`` (a mapping) breaks, as
    ``(key, expected, hint)``; each value already has its key's own type. The config
    reports them with the place of each key when it is loaded, the grouping layers
    raise the first: one statement of each rule for both."""
    problems = []
    if values["tau_min"] > values["tau"]:
        problems.append(("tau_min", f"a temperature at most tau = {values['tau']:g}", ""))
    if values["sample_per"] == "example" and values["impl"] != "reference":
        problems.append(("sample_per", "step with impl = fused", "Per-example groups give "
                         "per-example weights, which one fused convolution cannot apply: "
                         "set impl = reference, or sample_per = step."))
    if values.get("allocation") == "agreement" and values.get("warmup_iter") == 0:
        problems.append(("allocation", "learned, or agreement with warmup_iter above 0",
                         "allocation = agreement measures the tasks' agreement during "
                         "the warm-up: give warmup_iter (e.g. 1/3)."))
    for key in ("init", "prior"):
        vector = values[key]
        if isinstance(vector, str):
            continue
        count = "G" if num_groups is None else str(num_groups)
        expected = f"{count} probabilities (one per task, then the shared group) summing to 1"
        if num_groups is not None and len(vector) != num_groups:
            problems.append((key, expected, f"It has {len(vector)} values."))
        elif abs(sum(vector) - 1.0) > 1e-3:
            problems.append((key, expected, f"They sum to {sum(vector):g}."))
    return problems
