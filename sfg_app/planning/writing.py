"""The planned config as INI text, every key under a comment saying why, and the
fingerprint as a short table.

The minimal config's own keys are written as it set them (``; as in minimal.ini``);
paths are written relative to the planned config's folder, as a config's relative paths
are read. Keys neither planned nor set keep the schema's defaults (``sfg_train
--help-config``).
"""

from __future__ import annotations

import os
import pathlib
import textwrap
from typing import Any

import numpy as np

from sfg_app.config.schema import FIXED_SECTIONS
from sfg_app.planning import rules
from sfg_app.planning.fingerprint import Fingerprint
from sfg_app.planning.request import Request

WIDTH = 88
_FIXED_BEFORE_INPUTS = ("SYSTEM",)


def ini_value(value: Any, folder: pathlib.Path, key: str = "") -> str:
    """A value as config text: tuples of numbers and axcodes in parentheses, lists of
    names and paths comma-separated, paths relative to ``folder``."""
    if isinstance(value, pathlib.PurePath):
        return _relative(value, folder)
    if isinstance(value, (tuple, list)):
        if key == "axcodes" or all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   for v in value):
            items = [ini_value(v, folder) for v in value]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return ", ".join(ini_value(v, folder) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _relative(path: pathlib.PurePath, folder: pathlib.Path) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive
        return str(path)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH - 2, initial_indent="; ", subsequent_indent=";   ",
                         break_on_hyphens=False)


def _section_order(request: Request, plan: rules.Plan) -> list[str]:
    headers = list(request.settings.explicit)
    headers += [h for h in plan.sections if h not in headers]
    fixed_first = [h for h in _FIXED_BEFORE_INPUTS if h in headers]
    inputs = [h for h in headers if h not in FIXED_SECTIONS and not h.startswith("TASK ")]
    later = [h for h in FIXED_SECTIONS if h in headers and h not in fixed_first]
    tasks = [f"TASK {name}" for name in request.settings.tasks]
    ordered = fixed_first + inputs + later[:later.index("MULTITASK") + 1 if "MULTITASK"
                                           in later else len(later)]
    ordered += tasks + [h for h in later if h not in ordered]
    return ordered


def config_text(request: Request, plan: rules.Plan, output: pathlib.Path,
                fingerprint: Fingerprint) -> str:
    """The planned config (module docstring)."""
    folder = output.parent
    source = request.path.name
    fp = fingerprint
    lines = _comment(
        f"Planned by sfg_plan from {source} and the data it names: {len(fp.subjects)} "
        f"subject(s), {len(fp.sampled)} sampled for their voxels. Each planned key has its "
        f"reason above it; the keys of {source} are kept as written. Every other key "
        "takes the schema's default (sfg_train --help-config). Check it with sfg_train "
        "--check --config <this file>.")
    for header in _section_order(request, plan):
        given = {key: value for key, value in request.settings.explicit.get(header,
                                                                             {}).items()
                 if request.gave(header, key)}
        planned = plan.sections.get(header, {})
        if not given and not planned:
            continue
        lines += ["", f"[{header}]"]
        for key, value in given.items():
            lines += [f"; as in {source}", f"{key} = {ini_value(value, folder, key)}"]
        for key, item in planned.items():
            lines += _comment(item.reason)
            lines.append(f"{key} = {ini_value(item.value, folder, key)}")
    return "\n".join(lines) + "\n"


def fingerprint_table(fp: Fingerprint) -> str:
    """Subjects, spacings, shapes, intensity percentiles and class frequencies."""
    rows = [f"subjects: {len(fp.subjects)} ({len(fp.sampled)} sampled for voxels)"]
    for name, section in fp.sections.items():
        headers = list(section.headers.values())
        if headers:
            spacings = np.array([h.spacing for h in headers])
            shapes = np.array([h.shape for h in headers])
            orientations = sorted({"".join(h.axcodes) for h in headers})
            rows.append(
                f"[{name}] {section.role}, {len(headers)} file(s): spacing median "
                f"{rules.triple(np.median(spacings, 0))} mm (min "
                f"{rules.triple(spacings.min(0))}, max {rules.triple(spacings.max(0))}); "
                f"shape median {tuple(int(v) for v in np.median(shapes, 0))} (min "
                f"{tuple(int(v) for v in shapes.min(0))}, max "
                f"{tuple(int(v) for v in shapes.max(0))}); "
                f"{', '.join(orientations[:4])}")
        else:
            rows.append(f"[{name}] {section.role}")
        if section.intensities is not None:
            p = section.intensities.percentiles
            rows.append("    intensity percentiles " + ", ".join(
                f"p{q:g} {rules.fmt(p[q])}" for q in (0.5, 5, 50, 95, 99.5))
                + f"; {100 * section.intensities.below_air:.0f} % below -500")
        if section.labels is not None:
            shares = section.labels.fractions()
            rows.append("    classes " + ", ".join(f"{v}: {100 * s:.3g} %"
                                                   for v, s in list(shares.items())[:12]))
        if section.values is not None:
            v = section.values
            rows.append(f"    values p1 {rules.fmt(v.percentiles[1])}, median "
                        f"{rules.fmt(v.percentiles[50])}, p99 {rules.fmt(v.percentiles[99])}"
                        + (f" (in [{v.in_mask}])" if v.in_mask else ""))
    return "\n".join(rows) + "\n"
