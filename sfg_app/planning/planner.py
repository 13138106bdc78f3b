"""``sfg_plan``'s use case: a minimal config and its data -> a complete, commented config.

``plan_config`` reads the minimal config (`request`), takes the dataset's fingerprint
(`fingerprint`), applies the rules (`rules`, through ``make_plan`` below, which decides
the order: geometry, network and window, intensities, tasks, sampler, schedule), writes
the config (`writing`) and loads it back with the project's loader before the file is
written, so that a plan that would not load is never left on disk.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from sfg_app.config import settings_from_text
from sfg_app.errors import SFGError, SFGWarning
from sfg_app.io.paths import output_path
from sfg_app.io.readers import available_memory
from sfg_app.io.atomic import atomic_write_text
from sfg_app.planning import rules
from sfg_app.planning.fingerprint import Fingerprint, take_fingerprint
from sfg_app.planning.request import Request, read_request
from sfg_app.planning.writing import config_text, fingerprint_table

#: Share of the available memory above which preprocessed volumes are cached on disk.
CACHE_SHARE = 0.25
_SHOWN_PROBLEMS = 5


@dataclass
class Result:
    text: str
    table: str
    plan: rules.Plan
    fingerprint: Fingerprint


def plan_config(config, output, overrides: Iterable[str] = (), device: str = "cpu",
                memory_gb: float | None = None, max_subjects: int = 20,
                overwrite: bool = False, progress: bool = True) -> Result:
    """Plans the config for the minimal config ``config`` and writes it to ``output``;
    each warning of the plan is also issued as an `SFGWarning`."""
    output = pathlib.Path(output).absolute()
    if output.suffix.lower() not in (".ini", ".cfg"):
        raise SFGError(f"Invalid value for argument `--output`. Expected an INI file name "
                       f"(.ini or .cfg). Received --output={output}.")
    if os.path.realpath(output) == os.path.realpath(config):
        raise SFGError(f"Invalid value for argument `--output`. Expected a file other than "
                       f"the minimal config. Received --output={output}.")
    output_path(output.parent, output.name, overwrite)   # refuses an existing file early
    kind, gpu_gb = rules.parse_device(device)
    if memory_gb is not None and not memory_gb > 0:
        raise SFGError(f"Invalid value for argument `--memory-gb`. Expected a number of GB "
                       f"> 0. Received --memory-gb={memory_gb}.")
    request = read_request(config, overrides)
    fingerprint = take_fingerprint(request, max_subjects=max_subjects, progress=progress)
    plan = make_plan(request, fingerprint, output, kind, gpu_gb, memory_gb,
                     available_memory())
    text = config_text(request, plan, output, fingerprint)
    try:
        settings_from_text(text, "ini", str(output), output.parent)
    except SFGError as error:
        raise SFGError(f"sfg_plan planned a config that does not load; nothing was written "
                       f"(please report it with the minimal config): {error}") from error
    atomic_write_text(output, text)
    for message in plan.warnings:
        warnings.warn(message, SFGWarning, stacklevel=2)
    return Result(text, fingerprint_table(fingerprint), plan, fingerprint)


class _Choices:
    """The plan, and each value in force: the minimal config's where it set the key
    (kept as written), the planned one otherwise."""

    def __init__(self, request: Request, plan: rules.Plan):
        self.request, self.plan = request, plan

    def __call__(self, header: str, key: str, value, reason: str):
        if self.request.gave(header, key):
            return self.request.given_value(header, key)
        self.plan.set(header, key, value, reason)
        return value


def make_plan(request: Request, fp: Fingerprint, output: pathlib.Path, device: str = "cpu",
              gpu_gb: float | None = None, memory_gb: float | None = None,
              available: int | None = None, cores: int | None = None) -> rules.Plan:
    """Every planned value, with its reason (the rules' module docstring)."""
    settings = request.settings
    available = available_memory() if available is None else available
    cores = rules.cpu_cores() if cores is None else cores
    plan = rules.Plan()
    choose = _Choices(request, plan)
    ref = fp.reference
    tasks = settings.tasks
    count = len(fp.subjects)

    choose("SYSTEM", "model_dir", output.parent / "runs" / output.stem,
           "a run folder beside this config, named after it")
    if device == "cpu":
        choose("SYSTEM", "num_threads", rules.cpu_threads(),
               f"half of this machine's {os.cpu_count()} cores load and sample data")

    # Geometry.
    headers = fp.reference_headers()
    axcodes, ax_reason = rules.choose_axcodes(headers)
    axcodes = tuple(request.given_value(ref, "axcodes") or axcodes)
    spacing = rules.choose_spacing(headers, axcodes)
    pixdim = spacing.pixdim
    two_d = spacing.coarse_axis is not None or all(h.shape[2] == 1 for h in headers)
    if spacing.coarse_axis not in (None, 2) and not request.gave(ref, "axcodes"):
        axcodes, pixdim = rules.coarse_axis_last(axcodes, pixdim, spacing.coarse_axis)
        ax_reason += f"; the coarse axis ({axcodes[2]}) last, for 2D windows across it"
    axcodes = choose(ref, "axcodes", axcodes, ax_reason)
    pixdim = tuple(choose(ref, "pixdim", pixdim, spacing.reason))
    given_window = request.given_value(ref, "spatial_window_size")
    if given_window is not None:
        two_d = given_window[2] == 1
    shapes = rules.resampled_shapes(headers, axcodes, pixdim)
    smallest = shapes.min(axis=0)

    # Network, window and batch.
    voxel_tasks = [n for n, t in tasks.items()
                   if settings.inputs[t.target].value_column is None]
    network = choose("NETWORK", "name",
                     "sfg_highres3dnet" if len(tasks) > 1 else "highres3dnet",
                     "several tasks: HighRes3DNet with Stochastic Filter Groups" if
                     len(tasks) > 1 else "one task: the dense HighRes3DNet")
    stages = rules.stages_of(network)
    layer_scale = settings.network.layer_scale
    if device == "cpu":
        layer_scale = choose("NETWORK", "layer_scale", rules.CPU_LAYER_SCALE,
                             "on a CPU, half width: a quarter of the arithmetic per voxel, "
                             "so that a step of a few seconds holds larger windows")
    columns = len(tasks) if network == "cross_stitch" else 1
    per_voxel = rules.activation_bytes(stages, layer_scale, columns)
    budget, budget_reason = rules.memory_budget(device, gpu_gb, memory_gb, available)
    flops, flops_reason = rules.compute_budget(device, cores)
    step_voxels = flops / rules.training_flops(stages, layer_scale, two_d, columns,
                                               len(settings.multitask.image))
    dataset_voxels = float(shapes.prod(axis=1).sum())
    window_plan = rules.choose_window(smallest, pixdim, two_d, budget, per_voxel,
                                      rules.pooling_divisor(stages), dataset_voxels,
                                      step_voxels, flops_reason)
    if not window_plan.fits:
        plan.warnings.append(
            f"The memory budget ({budget_reason}) is below what the smallest window "
            f"{window_plan.window} needs for {network} at layer_scale {layer_scale:g}; "
            "the plan uses it anyway. Lower [NETWORK] layer_scale, or plan for a machine "
            "with more memory (--device gpu:NN, --memory-gb).")
    window = given_window or window_plan.window
    reason = window_plan.reason + f"; budget: {budget_reason}"
    if two_d:
        reason = "2D windows (x, y, 1): " + reason
    for name in settings.multitask.image:
        choose(name, "spatial_window_size", window, reason if name == ref else
               f"the window of [{ref}]")
    batch = choose("NETWORK", "batch_size", window_plan.batch, window_plan.batch_reason)
    dense_cache = dataset_voxels * 4 * max(1, len(fp.sections))
    if dense_cache > CACHE_SHARE * available:
        choose("NETWORK", "cache", "disk",
               f"the preprocessed volumes take about {dense_cache / 2 ** 30:.1f} GiB, more "
               f"than {100 * CACHE_SHARE:g} % of the available memory")

    # Intensities.
    for name in settings.multitask.image:
        stats = fp.sections[name].intensities
        if stats is None or request.gave(name, "normalisation"):
            continue
        for key, planned in rules.normalisation_keys(name, stats).items():
            choose(name, key, planned.value, planned.reason)

    # Tasks.
    sampler = None
    for task_name, task in tasks.items():
        header = f"TASK {task_name}"
        section = fp.sections[task.target]
        if task.target in fp.lacking:
            missing = fp.lacking[task.target]
            plan.warnings.append(
                f"[TASK {task_name}]: {len(missing)} of {count} subjects lack the target "
                f"[{task.target}] ({', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}); "
                "planned optional_target = true, so they train the other tasks only. Add "
                "the files if they exist.")
            choose(header, "optional_target", True,
                   f"{len(missing)} subject(s) lack [{task.target}]")
        if section.role == "label" and section.labels is not None:
            planned = rules.segmentation_classes(task_name, task.target, section.labels)
            choose(header, "num_classes", planned.value, planned.reason)
            if sampler is None:
                sampler = (task_name, task.target,
                           *rules.choose_sampler(task_name, task.target, section.labels))
        elif section.role == "values" and section.values is not None:
            shift, scale = rules.regression_scaling(section.values)
            choose(header, "target_shift", shift.value, shift.reason)
            choose(header, "target_scale", scale.value, scale.reason)
        elif section.role == "table" and section.values is not None:
            if getattr(task, "num_classes", None) is not None:
                planned = rules.classification_classes(task_name, task.target,
                                                       section.values)
                choose(header, "num_classes", planned.value, planned.reason)
            else:
                shift, scale = rules.regression_scaling(section.values)
                choose(header, "target_shift", shift.value, shift.reason)
                choose(header, "target_scale", scale.value, scale.reason)
    if sampler is not None and not request.gave("NETWORK", "window_sampling"):
        _, target, kind, why = sampler
        choose("NETWORK", "window_sampling", kind, why)
        if kind == "balanced":
            choose("NETWORK", "sampling_map", target, "the label map the balanced sampler "
                                                      "centres windows on")
    if len(tasks) > 1:
        choose("MULTITASK", "weighting", "uncertainty",
               "the tasks' losses are in different units: learned uncertainty weights "
               "balance them")

    # Split and schedule.
    validation, inference, split_reason = rules.split_fractions(count)
    choose("TRAINING", "exclude_fraction_for_validation", validation, split_reason)
    choose("TRAINING", "exclude_fraction_for_inference", inference, split_reason)
    held_out = sum(max(1, round(_fraction(f) * count)) if _fraction(f) > 0 else 0
                   for f in (validation, inference))
    train_count = max(1, count - held_out)
    mean_voxels = float(np.mean(shapes.prod(axis=1)))
    max_iter_plan = rules.choose_max_iter(train_count * mean_voxels, window, batch)
    max_iter = choose("TRAINING", "max_iter", max_iter_plan.value, max_iter_plan.reason)
    choose("TRAINING", "save_every_n", max(1, max_iter // 10),
           "ten checkpoints over the run")
    if validation != "0":
        choose("TRAINING", "validation_every_n", max(1, max_iter // 20),
               "twenty validations over the run")
        choose("TRAINING", "validation_max_iter", 2, "two batches per validation")
    radius = rules.receptive_radius(stages)
    border = rules.choose_border(window, radius)
    choose("INFERENCE", "border", border.value, border.reason)
    choose("INFERENCE", "blending", "gaussian",
           "overlapping windows averaged, weighted to their centres: no seams")
    if count == 1:
        choose("INFERENCE", "dataset_to_infer", "training", "the one subject is the training "
                                                            "subject")

    # What the plan cannot fix.
    if count == 1:
        plan.warnings.append(
            f"One subject ({fp.subjects[0].subject_id}): it trains and is inferred; nothing "
            "is held out, so no metric measures generalisation. Add subjects.")
    if fp.grid_problems:
        shown = "; ".join(fp.grid_problems[:_SHOWN_PROBLEMS])
        more = len(fp.grid_problems) - _SHOWN_PROBLEMS
        plan.warnings.append(
            f"{len(fp.grid_problems)} file(s) are not on their subject's [{ref}] grid: "
            f"{shown}{f' ... and {more} more' if more > 0 else ''}. sfg_train stops on "
            "them; if they are registered to the image (the same place in the world), set "
            "match_space = resample in their sections, else register them first.")
    return plan


def _fraction(text: str) -> float:
    numerator, _, denominator = str(text).partition("/")
    return float(numerator) / float(denominator or 1)

