"""The learned grouping of an SFG network, as numbers, a YAML file and figures.

``summarise`` takes ``{layer_name: (N, G) probabilities}`` (the network's
``grouping_probabilities()``, layers in depth order) and the group names
``[task_1, ..., task_T, "shared"]``, and gives per layer the fraction of kernels whose
most probable group is each group (ties go to the first group in order) and the mean
probability of each group: ``{layer: {"kernels": N, "fraction": {group: f},
"mean_probability": {group: p}, "mean_max_probability": m}}``. The paper's reading:
lower layers mostly shared, deeper layers increasingly task-specific.

The argmax fractions alone overstate how settled a layer is: kernels all at
p = (0.33, 0.33, 0.34) give a bar that is 100 % one group. ``mean_max_probability``, the
mean over kernels of max_g p, says how decided the layer is (1/G: undecided, 1: every
kernel one-hot), and the figures and table show it beside the fractions.

The training driver appends the same numbers to the run's grouping history
(``RunFolder.grouping_history``) at each log step (``append_history``), with the
columns ``step, layer, group, fraction, mean_probability, mean_max_probability``: one
row per layer and group (the layer's mean max probability repeated on each), a step's
rows written in one block, steps strictly increasing: a run resumed from the checkpoint
of step k first drops the rows after k (``truncate_history``), which a killed run wrote
after its last checkpoint, and appending a step already there replaces the rows from it
on. Files from before that rule may repeat steps; ``read_history`` keeps the last rows
of each (step, layer, group). Files written before ``mean_max_probability`` existed keep
their five columns: appending follows the file's header and reading accepts both.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import yaml

from sfg_app.errors import DataError
from sfg_app.io.atomic import atomic_path, atomic_write_text

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the Agg backend)
from matplotlib.patches import Patch  # noqa: E402

HISTORY_COLUMNS = ("step", "layer", "group", "fraction", "mean_probability",
                   "mean_max_probability")
LEGACY_HISTORY_COLUMNS = HISTORY_COLUMNS[:5]
SHARED = "shared"


def layer_grouping(probabilities: np.ndarray, groups: Sequence[str],
                   layer: str = "layer") -> dict:
    """``{"kernels": N, "fraction": {group: f}, "mean_probability": {group: p},
    "mean_max_probability": m}``."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or p.shape[1] != len(groups) or p.shape[0] == 0:
        raise ValueError(f"Invalid grouping probabilities of layer {layer!r}. Expected shape "
                         f"(kernels, {len(groups)}) for the groups {list(groups)}. "
                         f"Received shape {p.shape}.")
    if not np.all(np.isfinite(p)) or p.min() < 0 or np.abs(p.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError(f"Invalid grouping probabilities of layer {layer!r}. Expected "
                         "finite, non-negative rows summing to 1 (a softmax per kernel).")
    counts = np.bincount(p.argmax(axis=1), minlength=len(groups))
    return {"kernels": int(p.shape[0]),
            "fraction": {g: float(c / p.shape[0]) for g, c in zip(groups, counts)},
            "mean_probability": {g: float(m) for g, m in zip(groups, p.mean(axis=0))},
            "mean_max_probability": float(p.max(axis=1).mean())}


def summarise(probabilities: Mapping[str, np.ndarray], groups: Sequence[str]) -> dict:
    """``{layer: layer_grouping(...)}`` for every layer, in the mapping's (depth) order."""
    groups = [str(g) for g in groups]
    if len(set(groups)) != len(groups) or len(groups) < 2:
        raise ValueError("Invalid value for argument `groups`. Expected at least two "
                         f"distinct names (tasks, then 'shared'). Received groups={groups}.")
    if not probabilities:
        raise ValueError("Invalid value for argument `probabilities`. Expected at least "
                         "one SFG layer. Received an empty mapping.")
    return {str(name): layer_grouping(p, groups, name) for name, p in probabilities.items()}


OWN_KERNELS = 0.25    # a task "has its own kernels" in a layer from this share on
ALL_SHARED = 0.9      # a layer this shared (or more) is read as hard sharing


def describe_allocation(summary: Mapping) -> list[str]:
    """The allocation in sentences a clinician-scientist reads: where each task has
    kernels of its own, how sharing changes with depth, and what that says of the tasks.
    Layers are numbered from 1 (input side)."""
    layers, groups = list(summary.values()), _groups(summary)
    tasks = [g for g in groups if g != SHARED]
    shared = [entry["fraction"][SHARED] for entry in layers]
    decided = np.mean([e["mean_max_probability"] for e in layers])
    lines = []
    if decided < 1.0 / len(groups) + 0.1:
        lines.append(f"The grouping is barely decided (mean max probability {decided:.2f}, "
                     f"{1 / len(groups):.2f} is none): train longer before reading it.")
    for task in tasks:
        own = [entry["fraction"][task] for entry in layers]
        first = next((i for i, f in enumerate(own) if f >= OWN_KERNELS), None)
        if first is None:
            lines.append(f"{task} has no kernels of its own (at most {100 * max(own):.0f} % "
                         "of a layer): it reads only shared features.")
        else:
            lines.append(f"{task} uses its own kernels from layer {first + 1} on "
                         f"({', '.join(f'{100 * f:.0f} %' for f in own[first:])} of layers "
                         f"{first + 1}-{len(own)}).")
    if min(shared) >= ALL_SHARED:
        lines.append("Every layer is shared: the network learned hard sharing, so the tasks "
                     "use the same features throughout.")
    elif shared[-1] < shared[0]:
        lines.append(f"Shared kernels fall from {100 * shared[0]:.0f} % in layer 1 to "
                     f"{100 * shared[-1]:.0f} % in layer {len(shared)}: the tasks share "
                     "low-level features and part ways in the deeper layers.")
    else:
        lines.append(f"Shared kernels: {100 * shared[0]:.0f} % in layer 1, "
                     f"{100 * shared[-1]:.0f} % in layer {len(shared)}.")
    return lines


def describe_agreement(cosines: Mapping[str, np.ndarray], threshold: float) -> list[str]:
    """Why the groups are what they are when the tasks' agreement decided them
    (``[SFG] allocation = agreement``), in words: per layer, the median cosine between the
    tasks' gradients on a kernel, and where the tasks want the same features. Layers are
    numbered from 1 (input side); a layer "agrees" when most of its kernels pass the
    threshold."""
    if not cosines:
        return []
    medians = [float(np.median(c)) for c in cosines.values()]
    agree = [i + 1 for i, c in enumerate(cosines.values()) if np.mean(c > threshold) > 0.5]
    lines = [f"The groups were decided from how the tasks' gradients agree on each kernel "
             f"(cosine 1: a step for one task is a step for the other; 0: unrelated; -1: "
             f"opposed), shared above {threshold:g}: median per layer "
             f"{', '.join(f'{m:.2f}' for m in medians)}."]
    if not agree:
        lines.append("The tasks agree in no layer: they learn from different features (or "
                     "the warm-up ended before every task had started to learn).")
    elif len(agree) == len(medians):
        lines.append("The tasks agree in every layer: they want the same features "
                     "throughout.")
    elif agree == list(range(1, len(agree) + 1)):
        lines.append(f"The tasks want the same features in layer{'s' * (len(agree) > 1)} "
                     f"{_span(agree)} and different ones from layer {agree[-1] + 1} on.")
    else:
        lines.append(f"The tasks agree in layer{'s' * (len(agree) > 1)} "
                     f"{', '.join(map(str, agree))} only.")
    return lines


def _span(layers: Sequence[int]) -> str:
    return str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"


def _groups(summary: Mapping) -> list[str]:
    return list(next(iter(summary.values()))["fraction"])


def write_grouping_yaml(summary: Mapping, path: str | os.PathLike,
                        step: int | None = None) -> Path:
    """The report as YAML (atomically): ``step`` (when given), ``groups``, then
    ``layers``, the summary itself. ``read_grouping_yaml`` gives that document back."""
    document = {} if step is None else {"step": int(step)}
    document.update(groups=_groups(summary), layers={k: dict(v) for k, v in summary.items()})
    atomic_write_text(path, yaml.safe_dump(document, sort_keys=False, default_flow_style=None))
    return Path(path)


def read_grouping_yaml(path: str | os.PathLike) -> dict:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"Cannot read the grouping report {str(path)!r}: {error}") from None
    if not isinstance(document, dict) or not {"groups", "layers"} <= set(document):
        raise DataError(f"The grouping report {str(path)!r} is not one: expected the keys "
                        "'groups' and 'layers'.")
    return document


def _group_colours(groups: Sequence[str]) -> dict[str, tuple]:
    """A tab10 colour per task; grey for the shared group, wherever it is."""
    palette = plt.get_cmap("tab10").colors
    tasks = [g for g in groups if g != SHARED]
    colours = {g: palette[i % len(palette)] for i, g in enumerate(tasks)}
    colours[SHARED] = (0.6, 0.6, 0.6)
    return colours


def _save_figure(figure, path: str | os.PathLike) -> Path:
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=120)
    finally:
        plt.close(figure)
    return Path(path)


def _undecided_level(groups: Sequence[str]) -> float:
    """1/G: the mean max probability of a layer whose kernels have not chosen at all."""
    return 1.0 / len(groups)


def _decidedness(mean_max_probability: float, groups: Sequence[str]) -> float:
    """The mean max probability rescaled from [1/G, 1] to [0, 1]."""
    floor = _undecided_level(groups)
    return float(np.clip((mean_max_probability - floor) / (1.0 - floor), 0.0, 1.0))


def _draw_fraction_bars(axes, layers: list[dict], groups: Sequence[str]) -> list:
    """The stacked argmax fractions, faded as a layer nears undecided, so that kernels
    sitting at p = (0.33, 0.33, 0.34) do not read as a confident bar. Returns legend
    handles in full colour, since the bars' own colours vary with the fading."""
    colours = _group_colours(groups)
    alphas = [0.2 + 0.8 * _decidedness(layer["mean_max_probability"], groups)
              for layer in layers]
    positions = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    for group in groups:
        heights = np.array([layer["fraction"][group] for layer in layers])
        axes.bar(positions, heights, bottom=bottom, edgecolor="white", linewidth=0.5,
                 color=[(*colours[group], alpha) for alpha in alphas])
        bottom += heights
    return [Patch(color=colours[group], label=group) for group in groups]


def _draw_decidedness(axes, layers: list[dict], groups: Sequence[str]) -> list:
    """Each layer's mean max probability as a marker with its value above the bar, and a
    dashed line at 1/G: a marker on the line is a layer that has not decided, whatever
    its bar says. Returns the legend handles."""
    positions = np.arange(len(layers))
    values = [layer["mean_max_probability"] for layer in layers]
    floor = _undecided_level(groups)
    line = axes.axhline(floor, color="black", linestyle="--", linewidth=1.0,
                        label=f"undecided (1/G = {floor:.2f})")
    markers = axes.plot(positions, values, linestyle="none", marker="D", markersize=6,
                        markerfacecolor="black", markeredgecolor="white",
                        label="mean max p (value above bar)")
    for x, value in zip(positions, values):
        axes.annotate(f"{value:.2f}", (x, 1.0), xytext=(0, 3), textcoords="offset points",
                      ha="center", va="bottom", fontsize=8)
    return [*markers, line]


def plot_grouping(summary: Mapping, path: str | os.PathLike, title: str | None = None) -> Path:
    """A stacked bar per SFG layer (depth left to right): the fraction of its kernels in
    each group, as in the paper's figure, with how decided the layer is drawn over it.
    Written as PNG, atomically."""
    groups = _groups(summary)
    layers = [{"name": name, **entry} for name, entry in summary.items()]
    figure, axes = plt.subplots(figsize=(max(5.0, 2.5 + 0.9 * len(layers)), 4.2))
    handles = _draw_fraction_bars(axes, layers, groups) + _draw_decidedness(axes, layers, groups)
    slanted = max(len(layer["name"]) for layer in layers) > 6
    axes.set_xticks(np.arange(len(layers)),
                    [f"{layer['name']}\n({layer['kernels']})" for layer in layers],
                    rotation=30 if slanted else 0, ha="right" if slanted else "center",
                    fontsize=8)
    axes.set_xlabel("SFG layer (kernels), input to output")
    axes.set_ylabel("fraction of kernels; mean max p")
    axes.set_ylim(0, 1.1)
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_title(title or "Learned filter groups")
    axes.legend(handles=handles, title="group; faded = undecided", loc="upper left",
                bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return _save_figure(figure, path)


# ---- history over training ----

def _repair_cut_line(handle) -> int:
    """Remove a last line cut by a crash; returns the file's length after."""
    end = handle.seek(0, os.SEEK_END)
    if end:
        handle.seek(max(0, end - 4096))
        tail = handle.read()
        if not tail.endswith(b"\n"):
            end = end - len(tail) + tail.rfind(b"\n") + 1
            handle.truncate(end)
    return end


def _header(handle) -> tuple[str, ...]:
    handle.seek(0)
    return tuple(handle.readline().decode("utf-8").rstrip("\r\n").split(","))


def _history_rows(step: int, summary: Mapping, legacy: bool) -> list[list]:
    """The rows of one log step; ``legacy`` leaves out ``mean_max_probability`` so that
    a run resumed on a file of the older format keeps that file readable."""
    rows = []
    for layer, entry in summary.items():
        for group in entry["fraction"]:
            row = [int(step), layer, group, repr(entry["fraction"][group]),
                   repr(entry["mean_probability"][group])]
            rows.append(row if legacy else row + [repr(entry["mean_max_probability"])])
    return rows


def append_history(path: str | os.PathLike, step: int, summary: Mapping) -> None:
    """Append the summary of one log step to the history CSV.

    Appending, not rewriting, keeps the cost of a log constant over a long run. A file
    whose last line was cut by a crash is repaired first (that line removed), and the
    header is written when the file is new or empty. Rows follow the columns of the
    file's header, so a file begun before ``mean_max_probability`` stays consistent.
    A step at or before the file's last one (a run that went back to an older
    checkpoint) replaces the rows from that step on, so that steps stay strictly
    increasing; only then is the file rewritten (atomically).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    with open(path, "a+b") as handle:
        if _repair_cut_line(handle):
            legacy = _header(handle) == LEGACY_HISTORY_COLUMNS
            last = _last_step(handle)
        else:
            legacy, last = False, None
            writer.writerow(HISTORY_COLUMNS)
        writer.writerows(_history_rows(step, summary, legacy))
        if last is None or last < step:
            handle.write(buffer.getvalue().encode("utf-8"))
            return
    _rewrite_history(path, int(step) - 1, buffer.getvalue())


def truncate_history(path: str | os.PathLike, last_step: int) -> None:
    """Remove the rows of the steps after ``last_step`` (atomically; a missing file stays
    missing). A run resumed from the checkpoint of ``last_step`` logs those steps again:
    the rows its killed predecessor wrote for them describe a training that was lost."""
    _rewrite_history(Path(path), int(last_step), "")


def _rewrite_history(path: Path, last_step: int, more: str) -> None:
    """Keep the header and the rows of steps up to ``last_step`` (a last line cut by a
    crash is dropped; a row whose step is not a number is kept, for ``read_history`` to
    report), add ``more``, and rewrite the file if that changes it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return
    complete = lines if not lines or lines[-1].endswith("\n") else lines[:-1]
    kept = complete[:1] + [line for line in complete[1:]
                           if (_step_of(line) is None or _step_of(line) <= last_step)]
    if kept != lines or more:
        atomic_write_text(path, "".join(kept) + more)


def _step_of(line: str) -> int | None:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return None


def _last_step(handle) -> int | None:
    """The step of the file's last row, read from its end; None when it has no row.
    (Called after ``_repair_cut_line``: the last line is whole.)"""
    end = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, end - 4096))
    lines = handle.read().splitlines()
    return _step_of(lines[-1].decode("utf-8", "replace")) if lines else None


def _latest_rows(path: str | os.PathLike) -> dict[tuple, tuple]:
    """``{(step, layer, group): (fraction, mean_probability[, mean_max_probability])}``,
    the last row of each key winning; the third value only in files that have it."""
    latest: dict[tuple, tuple] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = tuple(next(reader, None) or ())
            if header not in (HISTORY_COLUMNS, LEGACY_HISTORY_COLUMNS):
                raise DataError(f"The grouping history {str(path)!r} must start with the "
                                f"header {','.join(HISTORY_COLUMNS)} (or, from older runs, "
                                f"{','.join(LEGACY_HISTORY_COLUMNS)}). Received "
                                f"{list(header) or None}.")
            for row in reader:
                try:
                    if len(row) != len(header):
                        raise ValueError
                    latest[int(row[0]), row[1], row[2]] = tuple(map(float, row[3:]))
                except ValueError:
                    raise DataError(f"Line {reader.line_num} of the grouping history "
                                    f"{str(path)!r} is not '{','.join(header)}'. "
                                    f"Received {row}.") from None
    except OSError as error:
        raise DataError(f"Cannot read the grouping history {str(path)!r}: {error}") from None
    return latest


def _by_step(points: Mapping[int, float]) -> dict[str, np.ndarray]:
    steps = sorted(points)
    return {"step": np.array(steps, np.int64),
            "value": np.array([points[s] for s in steps], np.float64)}


def read_history(path: str | os.PathLike) -> dict:
    """``{"groups": [...], "layers": {layer: {group: {"step", "fraction",
    "mean_probability"}: arrays sorted by step}}, "mean_max_probability": {layer:
    {"step", "value"}: arrays sorted by step}}``; layers and groups in order of first
    appearance; the last rows of a repeated (step, layer, group) win. A file of the
    older, five-column format gives an empty ``mean_max_probability``."""
    series: dict[str, dict[str, list]] = {}
    groups: dict[str, None] = {}
    decided: dict[str, dict[int, float]] = {}
    for (step, layer, group), values in _latest_rows(path).items():
        series.setdefault(layer, {}).setdefault(group, []).append((step, *values[:2]))
        groups.setdefault(group, None)
        if len(values) == 3:
            decided.setdefault(layer, {})[step] = values[2]
    history = {"groups": list(groups), "layers": {},
               "mean_max_probability": {layer: _by_step(p) for layer, p in decided.items()}}
    for layer, per_group in series.items():
        history["layers"][layer] = {}
        for group in groups:
            table = np.array(sorted(per_group.get(group, [])), np.float64).reshape(-1, 3)
            history["layers"][layer][group] = {"step": table[:, 0].astype(np.int64),
                                               "fraction": table[:, 1],
                                               "mean_probability": table[:, 2]}
    return history


def _plot_layer_lines(axis, lines: list[tuple], title: str) -> None:
    """``lines``: ``(layer, steps, values)`` from shallow to deep, coloured so."""
    depth = plt.get_cmap("viridis")
    for i, (layer, steps, values) in enumerate(lines):
        axis.plot(steps, values, label=layer, color=depth(i / max(1, len(lines) - 1)),
                  linewidth=1.5)
    axis.set_title(title)
    axis.set_xlabel("training step")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)


def plot_history(history: Mapping, path: str | os.PathLike) -> Path:
    """One panel per group: the fraction of each layer's kernels in that group against
    the training step, a line per layer coloured from shallow to deep; then, when the
    history has it, a panel of each layer's mean max probability, so that fractions
    which settle while the kernels stay near 1/G are seen as undecided. PNG, atomically."""
    groups, layers = history["groups"], list(history["layers"])
    decided = history["mean_max_probability"]
    panels = len(groups) + bool(decided)
    figure, axes = plt.subplots(1, panels, figsize=(3.6 * panels + 1.6, 3.4), sharey=True,
                                squeeze=False)
    for axis, group in zip(axes[0], groups):
        _plot_layer_lines(axis, [(layer, history["layers"][layer][group]["step"],
                                  history["layers"][layer][group]["fraction"])
                                 for layer in layers], f"group: {group}")
    axes[0, 0].set_ylabel("fraction of kernels")
    if decided:
        axis = axes[0, -1]
        _plot_layer_lines(axis, [(layer, decided[layer]["step"], decided[layer]["value"])
                                 for layer in layers], "decidedness")
        axis.axhline(_undecided_level(groups), color="black", linestyle="--", linewidth=1.0,
                     label="undecided (1/G)")
        axis.set_ylabel("mean max p")
    axes[0, -1].legend(title="SFG layer", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       frameon=False, fontsize=8)
    figure.tight_layout()
    return _save_figure(figure, path)


def write_grouping_report(probabilities: Mapping[str, np.ndarray], groups: Sequence[str],
                          yaml_path: str | os.PathLike, png_path: str | os.PathLike,
                          step: int | None = None) -> dict:
    """The report as YAML (``write_grouping_yaml``) and as a bar chart
    (``plot_grouping``); returns the summary. Where they go is the caller's: the run
    folder names them."""
    summary = summarise(probabilities, groups)
    write_grouping_yaml(summary, yaml_path, step)
    title = None if step is None else f"Learned filter groups at step {step}"
    plot_grouping(summary, png_path, title)
    return summary
