"""Train every method of the SFG paper's comparison under one protocol, and tabulate them.

The paper (Bragman et al., ICCV 2019) compares SFG with single-task networks, hard
sharing, cross-stitch networks and SFG with fixed grouping probabilities; that is fair only
when every method has the same data, split, iterations, widths and seeds. A preset
(``presets/<name>.yaml``) fixes them once. In ``--work`` go the phantoms, ``split.csv``
(drawn once and read by every run: sfg would draw each run's split from its seed),
``configs/<method>.ini`` and ``runs/<method>/seed<k>``. Each (method, seed) pair missing
from ``<results>/<preset>.csv`` is trained, inferred and evaluated in one subprocess (one
TensorFlow import) and its row appended at once, so an interrupted experiment keeps its
finished runs. ``test_architectures: {METHOD: [expected, sample]}`` infers and evaluates a
learned SFG method's trained networks again with those test-time architectures, as rows
``<METHOD>_test_<A>`` (in the same subprocess, or alone when the method's row exists); the
CSV,
``<preset>.md`` (mean ± sd over seeds) and the plots in ``<results>/<preset>/`` are then
rebuilt from the CSV and the runs' grouping reports. ``--iterations N`` trains the preset
for another budget, as the experiment ``<preset>_<N>it`` (its own work folder, CSV and
report).
"""
from __future__ import annotations

import argparse
import configparser
import csv
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import yaml

from sfg_app.config import schema
from sfg_app.keys import Path as PathType
from sfg_app.demo import phantoms
from sfg_app.data.dataset import draw_split, write_split_file
from sfg_app.io.run_folder import RunFolder

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ORGANS = {c: name for c, name in phantoms.LABELS.items() if name not in ("background", "body")}
SFG_LAYERS = [f"sfg_{i}" for i in range(5)]  # the grouped layers of SFG-HighRes3DNet
COLUMNS = (["method", "seed", "dice_mean", "mae_hu", *(f"dice_{n}" for n in ORGANS.values()),
            "psnr", "ssim", *(f"maxp_{layer}" for layer in SFG_LAYERS), "iterations",
            "train_minutes", "architecture"])
ARCHITECTURES = ("map", "sample", "expected")  # [INFERENCE] architecture, for SFG networks
TEST_INFIX = "_test_"  # <method>_test_<architecture>: a row of a test-time architecture
ORDER = ("single_seg", "single_reg", "hard_shared", "cross_stitch", "sfg_fixed",
         "sfg_fixed_shared", "sfg")
TABLE = [("dice_mean", 3), ("mae_hu", 1), *((f"dice_{n}", 3) for n in ORGANS.values()),
         ("psnr", 2), ("ssim", 3), ("maxp", 3)]
OWNED = {"SYSTEM.model_dir", "SYSTEM.seed", "SYSTEM.dataset_split_file", "TRAINING.max_iter",
         "<section>.path_to_search"}
REQUIRED = ("base_config", "phantoms", "iterations", "seeds", "methods")
PRESET_KEYS = ("description", *REQUIRED, "set", "test_architectures")
CHECKS = {  # top-level key: (test, what it expects)
    "phantoms": (lambda v: isinstance(v, dict) and sorted(v) == ["seed", "subjects"]
                 and all(isinstance(x, int) for x in v.values()), "{subjects: N, seed: S}"),
    "iterations": (lambda v: isinstance(v, int) and v > 0, "a positive integer"),
    "seeds": (lambda v: isinstance(v, list) and bool(v) and all(
        isinstance(x, int) and x >= 0 for x in v), "a non-empty list of integers >= 0"),
    "methods": (lambda v: isinstance(v, dict) and bool(v) and all(
        re.fullmatch(r"[A-Za-z0-9_-]+", str(x)) and parent_method(str(x)) is None for x in v),
                "a mapping of method names (letters, digits, _ and -, none ending in "
                f"{TEST_INFIX}<architecture>) to overrides"),
}


class CompareError(Exception):
    """A malformed preset, options that do not fit it, or a step before the runs failed."""


Preset = namedtuple("Preset", "name path base_config subjects phantom_seed iterations seeds "
                              "common methods test_architectures")


def architecture_method(method: str, architecture: str) -> str:
    """The row name of ``method``'s trained networks inferred with ``architecture``."""
    return f"{method}{TEST_INFIX}{architecture}"


def parent_method(name: str):
    """``(method, architecture)`` of a test-time architecture row's name, else None."""
    match = re.fullmatch(rf"(.+){TEST_INFIX}({'|'.join(ARCHITECTURES)})", name)
    return (match.group(1), match.group(2)) if match else None


def _require(ok: bool, path: Path, key: str, expected: str, value) -> None:
    if not ok:
        raise CompareError(f"{path}: {key}: expected {expected}; got {value!r}.")


def _overrides(raw, path: Path, key: str) -> dict:
    raw = {} if raw is None else raw
    _require(isinstance(raw, dict), path, key, "a mapping of SECTION.key: value", raw)
    for name, value in raw.items():
        _require(isinstance(name, str) and "." in name.strip(".") and name not in OWNED
                 and not name.endswith(".path_to_search"), path,
                 f"{key}.{name}", "SECTION.key, and none the script sets itself "
                 f"({', '.join(sorted(OWNED))})", name)
        _require(not isinstance(value, dict), path, f"{key}.{name}",
                 "a text, number, boolean, list or null", value)
    return dict(raw)


def load_preset(path: Path) -> Preset:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise CompareError(f"Cannot read the preset {path}: {error}") from None
    _require(isinstance(data, dict), path, "the file", "a mapping", data)
    wrong = [k for k in data if k not in PRESET_KEYS] + [k for k in REQUIRED if k not in data]
    if wrong:
        raise CompareError(f"{path}: {'missing' if wrong[0] in REQUIRED else 'unknown'} "
                           f"top-level key {wrong[0]!r} (the keys are {', '.join(PRESET_KEYS)}; "
                           "description and set are optional).")
    base = (path.parent / str(data["base_config"])).resolve()
    _require(base.is_file(), path, "base_config", "a config file, relative to the preset",
             str(base))
    for key, (ok, expected) in CHECKS.items():
        _require(ok(data[key]), path, key, expected, data[key])
    tests = data.get("test_architectures") or {}
    _require(isinstance(tests, dict), path, "test_architectures",
             "a mapping of learned SFG methods to lists of architectures", tests)
    for method, architectures in tests.items():
        _require(method in data["methods"] and is_learned_sfg(str(method)), path,
                 f"test_architectures.{method}", "a learned SFG method of methods", method)
        _require(isinstance(architectures, list) and bool(architectures) and all(
            a in ARCHITECTURES for a in architectures) and len(set(architectures)) == len(
            architectures), path, f"test_architectures.{method}",
            f"a non-empty list of distinct architectures of {', '.join(ARCHITECTURES)}",
            architectures)
    return Preset(path.stem, path, base, data["phantoms"]["subjects"], data["phantoms"]["seed"],
                  data["iterations"], data["seeds"], _overrides(data.get("set"), path, "set"),
                  {m: _overrides(o, path, f"methods.{m}") for m, o in data["methods"].items()},
                  {str(m): list(a) for m, a in tests.items()})


def budget_name(name: str, iterations: int | None) -> str:
    """The experiment ``name`` at a budget of ``iterations`` (``None``: its own):
    ``<name>_<iterations>it``, so that budgets do not mix."""
    if iterations is None:
        return name
    if iterations <= 0:
        raise CompareError(f"--iterations: expected a positive integer; got {iterations}.")
    return f"{name}_{iterations}it"


def with_budget(preset: Preset, iterations: int | None) -> Preset:
    """``preset`` trained ``iterations`` instead of its own (``None``: unchanged), under
    ``budget_name``: the paper's comparison at several budgets."""
    if iterations is None:
        return preset
    return preset._replace(name=budget_name(preset.name, iterations), iterations=iterations)


def preset_path(text: str) -> Path:
    """A preset name (``cpu``: ``presets/cpu.yaml``) or a path to a YAML file."""
    path = Path(text) if text.endswith((".yaml", ".yml")) else HERE / "presets" / f"{text}.yaml"
    return path.resolve()


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _absolute(header: str, key: str, text: str, base: Path) -> str:
    """``text`` with its relative paths taken from ``base`` when the schema types ``key``
    as paths; any other value unchanged."""
    kind = getattr(schema.section_schema(header).keys.get(key.lower()), "type", None)
    if not isinstance(getattr(kind, "item", kind), PathType):
        return text
    return ", ".join(os.path.normpath(base / os.path.expanduser(p.strip()))
                     for p in text.split(","))


def method_config(base: Path, overrides: dict, relative_to: Path) -> configparser.ConfigParser:
    """The base INI with absolute paths, plus ``overrides`` (None: a key removed), without
    the [TASK x] sections that [MULTITASK] tasks does not list."""
    config = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       default_section="\n")
    config.optionxform = str
    config.read(base, encoding="utf-8-sig")
    for header in config.sections():
        for key, value in config.items(header):
            config.set(header, key, _absolute(header, key, value, base.parent))
    for name, value in overrides.items():
        header, _, key = name.rpartition(".")
        if value is None:  # null: the base's key is dropped, so the schema's default applies
            if config.has_section(header):
                config.remove_option(header, key)
            continue
        if not config.has_section(header):
            config.add_section(header)
        config.set(header, key, _absolute(header, key, _text(value), relative_to))
    tasks = re.split(r"\s*,\s*", config.get("MULTITASK", "tasks", fallback="").strip("()[] "))
    for header in config.sections():
        if header.startswith("TASK ") and header[5:].strip() not in tasks:
            config.remove_section(header)
    return config


def data_sections(base: Path) -> list:
    """The sections of the base config that search a folder for images: each run reads
    them from the work folder's phantoms."""
    config = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       default_section="\n")
    config.read(base, encoding="utf-8-sig")
    return [s for s in config.sections() if config.has_option(s, "path_to_search")]


def write_configs(preset: Preset, work: Path, methods) -> dict:
    """``{method: <work>/configs/<method>.ini}``; each run sets its model_dir and seed."""
    (work / "configs").mkdir(parents=True, exist_ok=True)
    paths = {}
    for method in methods:
        forced = {f"{s}.path_to_search": work / "phantoms"
                  for s in data_sections(preset.base_config)}
        forced.update({"SYSTEM.dataset_split_file": work / "split.csv",
                       "SYSTEM.model_dir": work / "runs" / method,
                       "TRAINING.max_iter": preset.iterations})
        config = method_config(preset.base_config, {**preset.common, **preset.methods[method],
                                                    **forced}, preset.path.parent)
        paths[method] = work / "configs" / f"{method}.ini"
        with open(paths[method], "w", encoding="utf-8") as handle:
            handle.write(f"; {method} of {preset.path}, from {preset.base_config}; each run "
                         "sets SYSTEM.model_dir=<model_dir>/seed<k> and SYSTEM.seed=<k>\n")
            config.write(handle)
    return paths


def ensure_phantoms(folder: Path, subjects: int, seed: int) -> None:
    """Generates the phantoms unless ``folder`` holds them; refuses another data set there."""
    readme = folder / "README.md"  # make_phantoms.py writes it after the images
    if readme.exists():
        if f"--subjects {subjects} --seed {seed}" not in readme.read_text(encoding="utf-8"):
            raise CompareError(f"{folder} holds phantoms of another --subjects / --seed than "
                               "the preset: delete it or choose another --work.")
        return
    print(f"generating {subjects} phantoms (seed {seed}) in {folder}", flush=True)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_phantoms.py"), "--out",
                           str(folder), "--subjects", str(subjects), "--seed", str(seed)])
    if done.returncode:
        raise CompareError(f"make_phantoms.py failed (status {done.returncode}) for {folder}.")


def ensure_split(path: Path, preset: Preset) -> None:
    """One split for every run: drawn from the common settings, not from any run's seed."""
    if path.exists():
        return
    common = method_config(preset.base_config, preset.common, preset.path.parent)
    fractions = [common.getfloat("TRAINING", f"exclude_fraction_for_{phase}", fallback=0.0)
                 for phase in ("validation", "inference")]
    ids = [phantoms.subject_id(i) for i in range(preset.subjects)]
    write_split_file(str(path), draw_split(ids, *fractions, seed=preset.phantom_seed))


def architecture_of(config: Path) -> str:
    """The ``[INFERENCE] architecture`` a method's config infers with; empty for a network
    without SFG layers."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       default_section="\n")
    parser.read(config, encoding="utf-8")
    if not parser.get("NETWORK", "name", fallback="").strip().lower().startswith("sfg"):
        return ""
    default = schema.section_schema("INFERENCE").keys["architecture"].default
    return parser.get("INFERENCE", "architecture", fallback=default).strip().lower()


def architecture_sets(run_dir: Path, architecture: str) -> list:
    """The ``--set`` values that infer and evaluate ``architecture`` beside the run's own
    outputs (``mc_samples`` stays the config's)."""
    run = RunFolder(run_dir)
    return [f"INFERENCE.architecture={architecture}",
            f"INFERENCE.save_seg_dir={run.inference(architecture)}",
            f"EVALUATION.save_csv_dir={run.evaluation(architecture)}"]


def run_steps(train: bool, architectures, run_dir: Path) -> list:
    """``[(row key, command, extra --set values)]`` of one subprocess: train, infer and
    evaluate (row key None) when ``train``, then infer and evaluate each test architecture."""
    steps = [(None, command, []) for command in ("train", "infer", "evaluate")] if train else []
    for architecture in architectures:
        steps += [(architecture, command, architecture_sets(run_dir, architecture))
                  for command in ("infer", "evaluate")]
    return steps


def one_run(plan: dict) -> int:
    """The internal ``--_one-run`` mode: runs the plan's sfg commands in this process, in
    order, and records after each in ``plan["status"]`` the train minutes, the steps done
    and the failed one. Stops at the first non-zero status."""
    import importlib
    import traceback

    status = {"train_minutes": None, "done": [], "failed": None}

    def record():
        Path(plan["status"]).write_text(json.dumps(status), encoding="utf-8")

    record()
    # A run started again after a failure replaces the outputs of its own folder.
    common = ["--config", plan["config"], "--set", f"SYSTEM.model_dir={plan['model_dir']}",
              "--set", f"SYSTEM.seed={plan['seed']}", "--set", "INFERENCE.overwrite=true"]
    for index, (_, command, extra) in enumerate(plan["steps"]):
        argv = common + [x for value in extra for x in ("--set", value)]
        print(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} sfg_{command} {' '.join(argv)}",
              flush=True)
        start = time.monotonic()
        try:
            code = importlib.import_module(f"sfg_app.cli.{command}").main(argv)
        except Exception:  # noqa: BLE001 - a crash is a failed step, logged
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        if command == "train":
            status["train_minutes"] = (time.monotonic() - start) / 60
        if code:
            print(f"=== sfg_{command} exited with status {code}", flush=True)
            status["failed"] = index
            record()
            return int(code)
        status["done"].append(index)
        record()
    return 0


def run_pair(config: Path, run_dir: Path, seed: int, keras_home: Path, steps: list) -> dict:
    """Runs ``steps`` (see run_steps) in one subprocess logging to ``compare.log``; its
    status: train_minutes, done (indices of the steps done) and failed (an index or None)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
               PYTHONUNBUFFERED="1")
    env.setdefault("KERAS_HOME", str(keras_home))
    status_path = run_dir / "compare_status.json"
    status_path.unlink(missing_ok=True)
    plan = {"config": str(config), "model_dir": str(run_dir), "seed": seed,
            "status": str(status_path), "steps": steps}
    argv = [sys.executable, str(Path(__file__).resolve()), "--_one-run", json.dumps(plan)]
    with open(run_dir / "compare.log", "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv[:3])} "
                  f"(steps: {', '.join(c + (f' {k}' if k else '') for k, c, _ in steps)})\n")
        log.flush()
        code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=REPO).returncode
    try:
        status = json.loads(status_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {"train_minutes": None, "done": [], "failed": 0}
    if code and status.get("failed") is None:  # died outside a step
        status["failed"] = len(status["done"])
    return status


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def read_csv(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_grouping(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None


def result_row(method: str, seed: int, metric_rows: list, grouping, iterations: int,
               train_minutes: float, architecture: str = "") -> dict:
    """One CSV row: means over the evaluated subjects (a subject's dice_mean is the mean of
    its organs' Dice), and each SFG layer's mean max probability when the report has it."""
    values = {}
    for row in metric_rows:
        organs = {f"dice_{name}": float(row[f"dice_{c}"]) for c, name in ORGANS.items()
                  if row.get(f"dice_{c}")}
        if organs:
            organs["dice_mean"] = _mean(organs.values())
        for column, value in {**organs, **{column: float(row[key]) for key, column in (
                ("mae", "mae_hu"), ("psnr", "psnr"), ("ssim", "ssim")) if row.get(key)}}.items():
            values.setdefault(column, []).append(value)
    cells = {column: _mean(v) for column, v in values.items()}
    for layer, entry in ((grouping or {}).get("layers") or {}).items():
        if f"maxp_{layer}" not in COLUMNS:
            raise CompareError(f"SFG layer {layer!r} has no column (expected {SFG_LAYERS}).")
        if "mean_max_probability" in entry:
            cells[f"maxp_{layer}"] = float(entry["mean_max_probability"])
    cells.update(method=method, seed=seed, iterations=iterations, train_minutes=train_minutes,
                 architecture=architecture)
    return {c: f"{cells[c]:.6g}" if isinstance(cells.get(c), float) else str(cells.get(c, ""))
            for c in COLUMNS}


def architecture_row(parent: dict, architecture: str, metric_rows: list) -> dict:
    """The row of ``parent``'s trained networks inferred with ``architecture``: its metrics,
    and the parent's seed, iterations, train minutes and grouping (maxp) columns."""
    row = result_row(architecture_method(parent["method"], architecture), int(parent["seed"]),
                     metric_rows, None, int(parent["iterations"]), 0.0, architecture)
    row.update({c: parent[c] for c in COLUMNS if c.startswith("maxp_")},
               train_minutes=parent["train_minutes"])
    return row


def plan_runs(methods, seeds, test_architectures: dict, done) -> list:
    """``[(method, seed, train, architectures)]``: the pairs to run, whether to train (the
    pair has no row) and the test architectures whose rows are missing; nothing for a pair
    with every row."""
    plans = []
    for method, seed in itertools.product(methods, seeds):
        train = (method, seed) not in done
        missing = [a for a in test_architectures.get(method, ())
                   if (architecture_method(method, a), seed) not in done]
        if train or missing:
            plans.append((method, seed, train, missing))
    return plans


def read_results(path: Path) -> list:
    rows = read_csv(path) if path.exists() else []
    if rows and list(rows[0]) != COLUMNS:
        raise CompareError(f"{path} has the columns {list(rows[0])}, not {COLUMNS}: move it "
                           "away to start a new table.")
    return rows


def write_results(path: Path, rows: list, append: bool = False) -> None:
    header = not (append and path.exists())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)


def method_order(names) -> list:
    """ORDER first, then the others as given; each ``<method>_test_<A>`` right after its
    method (in the order given), or as given when its method is not among ``names``."""
    names = list(dict.fromkeys(names))
    tests = {n: parent_method(n) for n in names}
    tests = {n: p[0] for n, p in tests.items() if p and p[0] in names}
    plain = [n for n in names if n not in tests]
    ordered = []
    for method in [m for m in ORDER if m in plain] + [m for m in plain if m not in ORDER]:
        ordered += [method, *(n for n, parent in tests.items() if parent == method)]
    return ordered


def is_learned_sfg(method: str) -> bool:
    """``sfg`` and its variants ``sfg_<x>``; not ``sfg_fixed`` nor ``sfg_fixed_<x>``."""
    return parent_method(method) is None and (
        method == "sfg" or (method.startswith("sfg_") and method != "sfg_fixed"
                            and not method.startswith("sfg_fixed_")))


def mean_sd(values, digits: int) -> str:
    """``mean ± sd`` (sample sd over seeds), the mean alone for one value, ``–`` for none."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    spread = f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{np.mean(values):.{digits}f}{spread}"


def _number(row: dict, column: str) -> float:
    if column == "maxp":
        return _mean([float(row[f"maxp_{x}"]) for x in SFG_LAYERS if row[f"maxp_{x}"]])
    return float(row[column]) if row[column] else math.nan


def summary_table(rows: list, methods: list) -> str:
    """Markdown: per method, the number of seeds and mean ± sd of each metric."""
    lines = ["| method | seeds | " + " | ".join(c for c, _ in TABLE) + " |",
             "|---|---:|" + "---:|" * len(TABLE)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cells = [mean_sd([_number(r, column) for r in mine], digits) for column, digits in TABLE]
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mean_grouping(documents: list) -> tuple:
    """The groups, and per layer the mean over seeds of max p, fraction and mean p."""
    groups, layers = documents[0]["groups"], {}
    for layer in documents[0]["layers"]:
        entries = [d["layers"][layer] for d in documents]
        layers[layer] = {"maxp": _mean([e.get("mean_max_probability", math.nan)
                                        for e in entries])}
        for key in ("fraction", "mean_probability"):
            layers[layer][key] = {g: _mean([e[key][g] for e in entries]) for g in groups}
    return groups, layers


def grouping_line(method: str, seeds: int, groups: list, layers: dict) -> str:
    parts = [f"{layer} max p {e['maxp']:.3f}, fraction "
             + "/".join(f"{e['fraction'][g]:.2f}" for g in groups) + ", mean p "
             + "/".join(f"{e['mean_probability'][g]:.2f}" for g in groups)
             for layer, e in layers.items()]
    return f"- **{method}** (seeds: {seeds}; groups {'/'.join(groups)}): " + "; ".join(parts)


def plot_allocation(groups: list, layers: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(2.5 + 0.9 * len(layers), 4))
    bottom = np.zeros(len(layers))
    for group in groups:
        heights = np.array([e["mean_probability"][group] for e in layers.values()])
        axes.bar(list(layers), heights, bottom=bottom, label=group,
                 color=(0.6, 0.6, 0.6) if group == "shared" else None)
        bottom += heights
    axes.set(ylim=(0, 1), title=title, xlabel="SFG layer, input to output",
             ylabel="mean probability of the group")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def architecture_note(rows: list, methods: list) -> str:
    """A sentence naming the test-time architecture of each SFG method's own rows, and what
    the ``<method>_test_<A>`` rows are; empty when no row has an architecture."""
    used = {m: sorted({r["architecture"] for r in rows if r["method"] == m and r["architecture"]})
            for m in methods if parent_method(m) is None}
    used = {m: a for m, a in used.items() if a}
    if not used:
        return ""
    text = " Test-time architecture of the SFG methods: " + ", ".join(
        f"{m} {'/'.join(a)}" for m, a in used.items()) + "."
    if any(parent_method(m) for m in methods):
        text += (" <method>_test_<A>: the same trained networks inferred with architecture A"
                 " (train_minutes and maxp are the method's).")
    return text


def write_report(preset: Preset, work: Path, results: Path) -> None:
    """The CSV in a fixed order, ``<preset>.md`` and the plots, from the CSV and the runs."""
    csv_path, plots = results / f"{preset.name}.csv", results / preset.name
    rows = read_results(csv_path)
    methods = [m for m in method_order([*preset.methods, *(r["method"] for r in rows)])
               if any(r["method"] == m for r in rows)]
    rows.sort(key=lambda r: (methods.index(r["method"]), int(r["seed"])))
    write_results(csv_path, rows)
    plots.mkdir(parents=True, exist_ok=True)
    lines = []
    for method in filter(is_learned_sfg, methods):
        runs = [RunFolder(work / "runs" / method / f"seed{r['seed']}")
                for r in rows if r["method"] == method]
        for run in runs:
            if run.grouping_history_png.exists():
                shutil.copyfile(run.grouping_history_png,
                                plots / f"history_{method}_{run.path.name}.png")
        documents = [d for d in (read_grouping(run.grouping_yaml) for run in runs) if d]
        if documents:
            groups, layers = mean_grouping(documents)
            lines.append(grouping_line(method, len(documents), groups, layers))
            plot_allocation(groups, layers, plots / f"allocation_{method}.png",
                            f"{method}: allocation across depth (seeds: {len(documents)})")
    text = (f"# {preset.name}: held-out subjects, mean ± sd over seeds\n\n"
            f"Preset {preset.path.name}, {preset.iterations} iterations. dice_mean: mean "
            "Dice of bladder, prostate, rectum and bone; mae_hu: MAE in HU inside the body; "
            "maxp: mean over SFG layers of the mean max grouping probability."
            + architecture_note(rows, methods) + "\n\n" + summary_table(rows, methods))
    if lines:
        text += ("\n## Learned grouping (per layer, mean over seeds; fraction: share of kernels "
                 "by most probable group; mean p: mean probability of each group)\n\n"
                 + "\n".join(lines) + "\n")
    (results / f"{preset.name}.md").write_text(text, encoding="utf-8")


def run_all(preset: Preset, work: Path, csv_path: Path, methods, seeds) -> list:
    """Runs every (method, seed) pair and test architecture missing from the CSV; the logs
    of the failed ones."""
    rows = read_results(csv_path)
    done = {(r["method"], int(r["seed"])) for r in rows}
    plans = plan_runs(methods, seeds, preset.test_architectures, done)
    planned = {(m, s) for m, s, _, _ in plans}
    for method, seed in itertools.product(methods, seeds):
        if (method, seed) not in planned:
            print(f"{method} seed {seed}: in {csv_path} already, skipped", flush=True)
    if not plans:
        return []
    ensure_phantoms(work / "phantoms", preset.subjects, preset.phantom_seed)
    ensure_split(work / "split.csv", preset)
    configs = write_configs(preset, work, dict.fromkeys(m for m, *_ in plans))
    failed = []
    for method, seed, train, architectures in plans:
        run_dir, start = work / "runs" / method / f"seed{seed}", time.monotonic()
        run = RunFolder(run_dir)
        steps = run_steps(train, architectures, run_dir)
        status = run_pair(configs[method], run_dir, seed, work / ".keras_home", steps)
        took = (time.monotonic() - start) / 60
        if status["failed"] is not None:
            failed.append(str(run_dir / "compare.log"))
            key, command, _ = steps[status["failed"]]
            print(f"{method} seed {seed}: FAILED in {command}"
                  f"{f' ({key} architecture)' if key else ''} after {took:.1f} min; see "
                  f"{failed[-1]}", flush=True)
        complete = {key for key in (None, *architectures) if all(
            i in status["done"] for i, step in enumerate(steps) if step[0] == key)}
        if train and None not in complete:
            continue
        if train:
            parent = result_row(method, seed, read_csv(run.metrics()),
                                read_grouping(run.grouping_yaml),
                                preset.iterations, status["train_minutes"] or 0.0,
                                architecture_of(configs[method]))
            write_results(csv_path, [parent], append=True)
            print(f"{method} seed {seed}: {took:.1f} min, dice_mean {parent['dice_mean'] or '–'}"
                  f", mae_hu {parent['mae_hu'] or '–'}", flush=True)
        else:
            parent = next(r for r in rows if r["method"] == method and int(r["seed"]) == seed)
        for architecture in architectures:
            if architecture not in complete:
                continue
            row = architecture_row(parent, architecture, read_csv(
                run.metrics(run.evaluation(architecture))))
            write_results(csv_path, [row], append=True)
            print(f"{row['method']} seed {seed}: dice_mean {row['dice_mean'] or '–'}, "
                  f"mae_hu {row['mae_hu'] or '–'}", flush=True)
    return failed


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_one-run"]:  # internal: one run's sfg commands in this process
        return one_run(json.loads(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a preset name (cpu, gpu, smoke) or a YAML file")
    parser.add_argument("--work", type=Path, help="phantoms, split, configs and runs "
                        "(default runs/compare/<preset>)")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="folder of <preset>.csv, <preset>.md and the <preset>/ plots")
    parser.add_argument("--only", nargs="+", metavar="METHOD", help="run only these methods")
    parser.add_argument("--seeds", nargs="+", type=int, help="run only these seeds")
    parser.add_argument("--iterations", type=int, metavar="N",
                        help="train N iterations instead of the preset's: the experiment "
                        "is then named <preset>_<N>it (its work folder, CSV and report), "
                        "so budgets do not mix")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: rebuild the report from the CSV")
    args = parser.parse_args(argv)
    try:
        preset = with_budget(load_preset(preset_path(args.preset)), args.iterations)
        for option, chosen, known in (("--only", args.only, preset.methods),
                                      ("--seeds", args.seeds, preset.seeds)):
            unknown = [x for x in chosen or () if x not in known]
            if unknown:
                raise CompareError(f"{option} {unknown}: not in {preset.path} ({list(known)}).")
        work = (args.work or REPO / "runs" / "compare" / preset.name).resolve()
        results = args.results.resolve()
        failed = [] if args.report_only else run_all(
            preset, work, results / f"{preset.name}.csv", args.only or list(preset.methods),
            args.seeds or preset.seeds)
        write_report(preset, work, results)
    except CompareError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    print(f"Results: {results / preset.name}.csv, .md and {results / preset.name}/", flush=True)
    if failed:
        print(f"{len(failed)} run(s) failed; logs:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
