"""Sweep how related two tasks are, and see whether SFG's allocation follows.

The pair: organ segmentation from the MR, and the phantoms' ``signal`` regression task
(``scripts/make_phantoms.py --relatedness R``: at R = 0 a random field unrelated to the
anatomy, seen through its own input channel; at R = 1 the CT in thousands of HU; a mix
between). A relatedness preset (``presets/relatedness.yaml``) is a ``compare.py`` preset
plus ``levels`` (the values of R) and ``level_free`` (methods whose data do not change with
R: the MR, labels and view channel are the same at every level, so they run at the first
level only and their rows stand for every level). Each level is one ``compare.py``
experiment in ``<work>/r<R>`` (resumable run by run); the sweep's table,
``<results>/<preset>.csv``, has one row per method, seed and level: each task's metric
(``organs_dice``: mean organ Dice; ``signal_mae``: MAE of the signal in its own units), and
for SFG runs ``shared_<layer>``, the fraction of the layer's kernels whose most probable
group is the shared one. ``<results>/<preset>/shared_fraction.png`` plots that fraction per
layer against R (mean over seeds), ``<results>/<preset>.md`` tabulates mean ± sd.

    python scripts/experiments/relatedness.py relatedness
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from sfg_app.io.run_folder import RunFolder

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("compare", HERE / "compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

METRICS = {"organs_dice": "dice_mean", "signal_mae": "mae_hu"}  # sweep column: compare's
COLUMNS = (["method", "seed", "relatedness", *METRICS,
            *(f"shared_{layer}" for layer in compare.SFG_LAYERS), "train_minutes"])
SWEEP_KEYS = ("levels", "level_free")


def load_sweep(path: Path) -> tuple[dict, list, list]:
    """The preset's compare part (a mapping), its levels and its level-free methods."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise compare.CompareError(f"Cannot read the preset {path}: {error}") from None
    if not isinstance(data, dict):
        raise compare.CompareError(f"{path}: expected a mapping; got {data!r}.")
    levels = data.pop("levels", None)
    if (not isinstance(levels, list) or not levels or len(set(levels)) != len(levels)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and 0 <= v <= 1 for v in levels)):
        raise compare.CompareError(f"{path}: levels: expected a list of distinct numbers in "
                                   f"[0, 1]; got {levels!r}.")
    free = data.pop("level_free", None) or []
    unknown = [m for m in free if m not in (data.get("methods") or {})]
    if not isinstance(free, list) or unknown:
        raise compare.CompareError(f"{path}: level_free: expected a list of methods of "
                                   f"methods; got {free!r}.")
    data["base_config"] = str((path.parent / str(data.get("base_config", ""))).resolve())
    return data, [float(v) for v in levels], free


def level_name(level: float) -> str:
    return f"r{level:g}"


def ensure_level_phantoms(folder: Path, subjects: int, seed: int, level: float) -> None:
    """The phantoms of one level, unless ``folder`` holds them; refuses another data set."""
    readme, command = folder / "README.md", f"--subjects {subjects} --seed {seed} " \
                                            f"--relatedness {level:g}"
    if readme.exists():
        if command not in readme.read_text(encoding="utf-8"):
            raise compare.CompareError(f"{folder} holds other phantoms than `{command}`: "
                                       "delete it or choose another --work.")
        return
    print(f"generating the phantoms of {command} in {folder}", flush=True)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_phantoms.py"),
                           "--out", str(folder), *command.split()])
    if done.returncode:
        raise compare.CompareError(f"make_phantoms.py failed (status {done.returncode}).")


def run_level(data: dict, name: str, level: float, methods: list, work: Path,
              seeds) -> int:
    """One level as one compare.py experiment over ``methods``; its exit status."""
    folder = work / level_name(level)
    ensure_level_phantoms(folder / "phantoms", data["phantoms"]["subjects"],
                          data["phantoms"]["seed"], level)
    preset = dict(data, methods={m: data["methods"][m] for m in methods})
    with tempfile.TemporaryDirectory() as temporary:
        path = Path(temporary) / f"{name}_{level_name(level)}.yaml"
        path.write_text(yaml.safe_dump(preset, sort_keys=False), encoding="utf-8")
        argv = [str(path), "--work", str(folder), "--results", str(folder / "results")]
        argv += ["--seeds", *map(str, seeds)] if seeds else []
        return compare.main(argv)


def shared_fractions(run: Path) -> dict:
    """``{shared_<layer>: fraction}`` from a run's grouping report; empty without one."""
    report = compare.read_grouping(RunFolder(run).grouping_yaml) or {}
    return {f"shared_{layer}": entry["fraction"]["shared"]
            for layer, entry in (report.get("layers") or {}).items()}


def sweep_rows(name: str, levels: list, free: list, work: Path) -> list:
    """The sweep's rows: each level's own runs, and the level-free methods' runs (made at
    the first level) repeated for every level."""
    rows = []
    for level in levels:
        for source, keep in ((level, lambda m: m not in free), (levels[0], free.__contains__)):
            folder = work / level_name(source)
            path = folder / "results" / f"{name}_{level_name(source)}.csv"
            for row in compare.read_results(path) if path.exists() else []:
                if not keep(row["method"]):
                    continue
                run = folder / "runs" / row["method"] / f"seed{row['seed']}"
                cells = {"method": row["method"], "seed": row["seed"],
                         "relatedness": f"{level:g}", "train_minutes": row["train_minutes"],
                         **{column: row[source_column]
                            for column, source_column in METRICS.items()},
                         **shared_fractions(run)}
                rows.append({c: cells.get(c, "") for c in COLUMNS})
    return rows


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def write_report(name: str, rows: list, results: Path) -> None:
    """The CSV, the mean ± sd table and the shared-fraction plot."""
    results.mkdir(parents=True, exist_ok=True)
    with open(results / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    methods = compare.method_order(r["method"] for r in rows)
    levels = sorted({float(r["relatedness"]) for r in rows})
    layers = [c for c in COLUMNS if c.startswith("shared_")]
    lines = ["| method | relatedness | seeds | organs_dice | signal_mae | "
             + " | ".join(layers) + " |", "|---|---:|---:|---:|---:|" + "---:|" * len(layers)]
    for method in methods:
        for level in levels:
            mine = [r for r in rows if r["method"] == method and float(r["relatedness"]) == level]
            if mine:
                cells = [compare.mean_sd([_number(r[c]) for r in mine], 3)
                         for c in (*METRICS, *layers)]
                lines.append(f"| {method} | {level:g} | {len(mine)} | " + " | ".join(cells)
                             + " |")
    (results / f"{name}.md").write_text(
        f"# {name}: held-out subjects, mean ± sd over seeds\n\norgans_dice: mean Dice of "
        "bladder, prostate, rectum and bone; signal_mae: MAE of the signal task inside the "
        "body, in its own units; shared_<layer>: fraction of the layer's kernels whose most "
        "probable group is the shared one (SFG).\n\n" + "\n".join(lines) + "\n",
        encoding="utf-8")
    plot_shared(rows, levels, layers, results / name / "shared_fraction.png")


def _mean_of_runs(values: list) -> float:
    """The mean of the runs that have a value; NaN (a gap in the line) for none."""
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def plot_shared(rows: list, levels: list, layers: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    sfg = sorted({r["method"] for r in rows if r[layers[0]] != ""})
    if not sfg:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, len(sfg), figsize=(4.5 * len(sfg), 3.6), squeeze=False)
    for axis, method in zip(axes[0], sfg):
        for layer in layers:
            means = [_mean_of_runs([_number(r[layer]) for r in rows if r["method"] == method
                                    and float(r["relatedness"]) == level])
                     for level in levels]
            axis.plot(levels, means, marker="o", label=layer[len("shared_"):])
        axis.set(xlabel="relatedness (0 unrelated, 1 identical content)", ylim=(-0.02, 1.02),
                 ylabel="shared fraction of kernels", title=method)
    axes[0][-1].legend(title="SFG layer", frameon=False, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a preset name (presets/<name>.yaml) or a YAML file")
    parser.add_argument("--work", type=Path, help="default runs/compare/<preset>")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--levels", nargs="+", type=float, help="run only these levels")
    parser.add_argument("--only", nargs="+", metavar="METHOD", help="run only these methods")
    parser.add_argument("--seeds", nargs="+", type=int, help="run only these seeds")
    parser.add_argument("--iterations", type=int, metavar="N",
                        help="train N iterations instead of the preset's: the sweep is "
                        "then named <preset>_<N>it (work folder, CSV, report)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    path = compare.preset_path(args.preset)
    try:
        name = compare.budget_name(path.stem, args.iterations)
        data, levels, free = load_sweep(path)
        if args.iterations is not None:
            data["iterations"] = args.iterations
        work = (args.work or REPO / "runs" / "compare" / name).resolve()
        failed = 0
        for level in levels if not args.report_only else ():
            if args.levels and level not in args.levels:
                continue
            methods = [m for m in data["methods"] if (not args.only or m in args.only)
                       and (m not in free or level == levels[0])]
            if methods:
                failed |= run_level(data, name, level, methods, work, args.seeds)
        write_report(name, sweep_rows(name, levels, free, work),
                     args.results.resolve())
    except compare.CompareError as error:
        print(f"relatedness: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
