"""The learned grouping of an SFG network, as numbers, a YAML file and figures.

``summarise`` takes ``{layer_name: (N, G) probabilities}`` (the network's
``grouping_probabilities()``, layers in depth order) and the group names
``[task_1, ..., task_T, "shared"]``, and gives per layer the fraction of kernels whose
most probable group is each group (ties go to the first group in order) and the mean
probability of each group: ``{layer: {"kernels": N, "fraction": {group: f},
"mean_probability": {group: p}}}``. The paper's reading: lower layers mostly shared,
deeper layers increasingly task-specific.

The training driver appends the same numbers to ``grouping_history.csv`` at each log
step (``append_history``), with the columns ``step, layer, group, fraction,
mean_probability``: one row per layer and group, a step's rows written in one block. A
resumed run may log a step again; ``read_history`` keeps the last rows of each
(step, layer, group).
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

HISTORY_COLUMNS = ("step", "layer", "group", "fraction", "mean_probability")
SHARED = "shared"


def layer_grouping(probabilities: np.ndarray, groups: Sequence[str],
                   layer: str = "layer") -> dict:
    """``{"kernels": N, "fraction": {group: f}, "mean_probability": {group: p}}``."""
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
            "mean_probability": {g: float(m) for g, m in zip(groups, p.mean(axis=0))}}


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


def plot_grouping(summary: Mapping, path: str | os.PathLike, title: str | None = None) -> Path:
    """A stacked bar per SFG layer (depth left to right): the fraction of its kernels in
    each group, as in the paper's figure. Written as PNG, atomically."""
    groups = _groups(summary)
    layers = [{"name": name, **entry} for name, entry in summary.items()]
    colours = _group_colours(groups)
    figure, axes = plt.subplots(figsize=(max(5.0, 2.5 + 0.9 * len(layers)), 4.2))
    positions = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    for group in groups:
        heights = np.array([layer["fraction"][group] for layer in layers])
        axes.bar(positions, heights, bottom=bottom, color=colours[group], label=group,
                 edgecolor="white", linewidth=0.5)
        bottom += heights
    slanted = max(len(layer["name"]) for layer in layers) > 6
    axes.set_xticks(positions, [f"{layer['name']}\n({layer['kernels']})" for layer in layers],
                    rotation=30 if slanted else 0, ha="right" if slanted else "center",
                    fontsize=8)
    axes.set_xlabel("SFG layer (kernels), input to output")
    axes.set_ylabel("fraction of kernels")
    axes.set_ylim(0, 1)
    axes.set_title(title or "Learned filter groups")
    axes.legend(title="group", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return _save_figure(figure, path)


# ---- history over training ----

def append_history(path: str | os.PathLike, step: int, summary: Mapping) -> None:
    """Append the summary of one log step to the history CSV.

    Appending, not rewriting, keeps the cost of a log constant over a long run. A file
    whose last line was cut by a crash is repaired first (that line removed), and the
    header is written when the file is new or empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    with open(path, "a+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end:
            handle.seek(max(0, end - 4096))
            tail = handle.read()
            if not tail.endswith(b"\n"):
                end = end - len(tail) + tail.rfind(b"\n") + 1
                handle.truncate(end)
        if not end:
            writer.writerow(HISTORY_COLUMNS)
        for layer, entry in summary.items():
            for group in entry["fraction"]:
                writer.writerow([int(step), layer, group, repr(entry["fraction"][group]),
                                 repr(entry["mean_probability"][group])])
        handle.write(buffer.getvalue().encode("utf-8"))


def read_history(path: str | os.PathLike) -> dict:
    """``{"groups": [...], "layers": {layer: {group: {"step", "fraction",
    "mean_probability"}: arrays sorted by step}}}``; layers and groups in order of first
    appearance; the last rows of a repeated (step, layer, group) win."""
    latest: dict[tuple, tuple[float, float]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header) != HISTORY_COLUMNS:
                raise DataError(f"The grouping history {str(path)!r} must start with the "
                                f"header {','.join(HISTORY_COLUMNS)}. Received {header}.")
            for row in reader:
                try:
                    step, layer, group, fraction, mean = row
                    latest[int(step), layer, group] = (float(fraction), float(mean))
                except ValueError:
                    raise DataError(f"Line {reader.line_num} of the grouping history "
                                    f"{str(path)!r} is not 'step,layer,group,fraction,"
                                    f"mean_probability'. Received {row}.") from None
    except OSError as error:
        raise DataError(f"Cannot read the grouping history {str(path)!r}: {error}") from None
    series: dict[str, dict[str, list]] = {}
    groups: dict[str, None] = {}
    for (step, layer, group), values in latest.items():
        series.setdefault(layer, {}).setdefault(group, []).append((step, *values))
        groups.setdefault(group, None)
    history = {"groups": list(groups), "layers": {}}
    for layer, per_group in series.items():
        history["layers"][layer] = {}
        for group in groups:
            table = np.array(sorted(per_group.get(group, [])), np.float64).reshape(-1, 3)
            history["layers"][layer][group] = {"step": table[:, 0].astype(np.int64),
                                               "fraction": table[:, 1],
                                               "mean_probability": table[:, 2]}
    return history


def plot_history(history: Mapping, path: str | os.PathLike) -> Path:
    """One panel per group: the fraction of each layer's kernels in that group against
    the training step, a line per layer coloured from shallow to deep. PNG, atomically."""
    groups, layers = history["groups"], list(history["layers"])
    figure, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups) + 1.6, 3.4),
                                sharey=True, squeeze=False)
    depth = plt.get_cmap("viridis")
    for axis, group in zip(axes[0], groups):
        for i, layer in enumerate(layers):
            series = history["layers"][layer][group]
            axis.plot(series["step"], series["fraction"], label=layer,
                      color=depth(i / max(1, len(layers) - 1)), linewidth=1.5)
        axis.set_title(f"group: {group}")
        axis.set_xlabel("training step")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0, 0].set_ylabel("fraction of kernels")
    axes[0, -1].legend(title="SFG layer", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       frameon=False, fontsize=8)
    figure.tight_layout()
    return _save_figure(figure, path)


def write_grouping_report(probabilities: Mapping[str, np.ndarray], groups: Sequence[str],
                          folder: str | os.PathLike, step: int | None = None) -> dict:
    """``grouping.yaml`` and ``grouping.png`` in ``folder``; returns the summary."""
    summary = summarise(probabilities, groups)
    write_grouping_yaml(summary, Path(folder) / "grouping.yaml", step)
    title = None if step is None else f"Learned filter groups at step {step}"
    plot_grouping(summary, Path(folder) / "grouping.png", title)
    return summary
