"""The use cases: what `sfg_train`, `sfg_infer`, `sfg_eval`, `sfg_groups` and
`sfg_export` do with validated settings.

Above both the application (what a run computes) and the engine (how it runs): each
command builds the application the settings name, hands it to a driver, checks what can
be checked before hours of work, and reports. The command-line layer (`sfg_app.cli`)
parses arguments and turns errors into exit statuses around these functions.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import tensorflow as tf

from sfg_app.application.network import ALLOCATION
from sfg_app.config import settings_text
from sfg_app.engine.checkpoints import CheckpointStore, saved_shapes
from sfg_app.engine.inference import InferenceDriver, InferenceOptions
from sfg_app.engine.state import TrainingOptions
from sfg_app.engine.training import TrainingDriver
from sfg_app.errors import ConfigError, DataError
from sfg_app.evaluation.grouping import (describe_agreement, describe_allocation,
                                        plot_history, read_history, write_grouping_report)
from sfg_app.evaluation.metrics import summary_table, write_metrics
from sfg_app.io.atomic import atomic_path
from sfg_app.io.paths import writable_folder
from sfg_app.io.run_folder import RunFolder
from sfg_app.networks.compact import compact_network
from sfg_app.registry import APPLICATIONS


def make_application(settings, inputs=None):
    """The application `[SYSTEM] application` names; `inputs`: image files to infer
    instead of the config's split (`sfg_infer --input`)."""
    return APPLICATIONS.get(settings.system.application)(as_trained(settings),
                                                         inputs=inputs)


def as_trained(settings):
    """`settings` with `[SFG] allocation = auto` as the run in model_dir decided it when
    it started (its recorded identity): auto follows max_iter, and a resume or an
    inference with another max_iter (`--set TRAINING.max_iter=20` to try a config) must
    keep the run's network."""
    sfg = getattr(settings, "sfg", None)
    if sfg is None or sfg.allocation != "auto":
        return settings
    recorded = RunFolder(str(settings.system.model_dir)).recorded_identity()
    if recorded is None:
        return settings
    return dataclasses.replace(settings, sfg=dataclasses.replace(
        sfg, allocation=recorded.get(ALLOCATION, "learned")))


def claim_run(settings, stack, command_line: str) -> str | None:
    """Before `sfg_train` writes anything: the run folder's lock, held in `stack` (a
    RunFolderBusy when another process trains there), and the config's network checked
    against the one the checkpoints hold (a NetworkMismatch listing the differences).
    Returns a message when the checkpoints already reach max_iter: nothing to do, and
    nothing written."""
    model_dir = writable_folder(str(settings.system.model_dir), "the run's checkpoints and logs")
    run = RunFolder(model_dir)
    found = CheckpointStore(model_dir).iterations()
    if found:
        run.check_identity(make_application(settings).network_identity(),
                           "resume training from its checkpoints")
        if settings.training.starting_iter == -1 and found[-1] >= settings.training.max_iter:
            return (f"Nothing to do: the checkpoint is at iteration {found[-1]}, "
                    f"[TRAINING] max_iter = {settings.training.max_iter}.")
    stack.enter_context(run.writer(command_line))
    return None


def check_network(settings, what: str) -> None:
    """A NetworkMismatch, before any work, when the config describes another network
    than the one trained in model_dir (`what`: what the command was about to do)."""
    run = RunFolder(str(settings.system.model_dir))
    if run.recorded_identity() is not None:
        run.check_identity(make_application(settings).network_identity(), what)


def train(settings) -> None:
    """Train (resuming when model_dir has checkpoints), then report the grouping. The
    run's record (settings, the network's identity) is written as training starts."""
    model_dir = writable_folder(str(settings.system.model_dir), "the run's checkpoints and logs")
    run = RunFolder(model_dir)
    application = make_application(settings)
    if not CheckpointStore(model_dir).iterations():
        run.record_identity(application.network_identity())
    run.record_settings(settings_text(settings))
    state = TrainingDriver(application, TrainingOptions.from_settings(settings)).run()
    if state.chief and state.model.grouping_probabilities():
        _write_grouping(application, state.model, model_dir, state.iteration)


def check(settings) -> None:
    """`sfg_train --check`: the config (already validated by loading it), the network it
    builds, and every data file, without training or writing anything; a DataError listing
    every problem."""
    application = make_application(settings)
    data = application.data
    files, problems = data.check_files()
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the data of {len(data.subjects)} "
                        "subject(s):\n  - " + "\n  - ".join(problems))
    application.build_network()
    print(f"Config and data are fine: {len(data.subjects)} subject(s), {files} file(s) read "
          f"and put on the grid of [{data.roles.images[0]}]; the network builds "
          f"({settings.network.name}).", file=sys.stderr)


def infer(settings, inputs=None, output_dir=None, overwrite: bool = False,
          network=None) -> list[str]:
    """Grid inference on the `dataset_to_infer` split, or on the `inputs` files.

    `network`: an exported compact network (`<task>.keras` of `sfg_export`) to run
    instead of restoring the config's network from `model_dir`; only its task's outputs
    are written, with the config's preprocessing, windows and task settings.

    Everything that can be checked is checked before the first window: a checkpoint (or
    the exported network: it loads, its task is the config's, see
    `check_exported_network`), the output folder writable, every output's name inside it
    and not there already (unless `overwrite` or `[INFERENCE] overwrite`), the inputs'
    channels those the network was trained on."""
    plan = InferenceOptions.from_settings(settings, network)
    output_dir = str(output_dir or settings.inference.save_seg_dir)
    overwrite = overwrite or settings.inference.overwrite
    if network is None:
        # An untrained model_dir fails before the data are read (and a split file written).
        checkpoint = CheckpointStore(str(plan.model_dir)).path(plan.inference_iter)
    writable_folder(output_dir, "the inference outputs")
    application = make_application(settings, inputs)
    driver = InferenceDriver(application, plan)
    # An exported network is loaded and checked before the data are read, too.
    model = None if network is None else driver.load_model()
    tasks = None if model is None else model.task_names  # None: every task of the config
    subjects = application.inference_files()
    application.check_outputs(subjects, output_dir, overwrite, tasks)
    if model is None:
        _check_trained_channels(application, checkpoint, subjects[0])
    else:
        _check_exported_channels(application, model, plan.network, subjects[0])
    written = driver.run(application.inference_subjects(subjects, output_dir, tasks), model)
    source = (f"the checkpoint of iteration {driver.iteration} "
              f"({settings.inference.architecture} architecture)" if model is None else
              f"the exported network {plan.network} (task {tasks[0]!r})")
    print(f"Inference with {source}: {len(written)} file(s) in {output_dir}",
          file=sys.stderr)
    return written


def _input_files(application, subject) -> str:
    return ", ".join(subject.paths[name] for name in application.data.roles.images)


def _check_exported_channels(application, model, path: str, subject) -> None:
    """A DataError naming the input files, the exported network and both counts when
    `subject`'s images have another number of channels than the network takes."""
    channels = application.input_channels
    if channels != model.input_channels:
        raise DataError(
            f"The input {_input_files(application, subject)} has {channels} channel(s), but "
            f"the exported network {path} takes {model.input_channels}. Give images with "
            f"{model.input_channels} channel(s) (one file per [MULTITASK] image section: "
            f"{', '.join(application.data.roles.images)}), or the export of a network "
            "trained on these.")


def _check_trained_channels(application, checkpoint: str, subject) -> None:
    """A DataError naming the input files and both counts when the network in
    `checkpoint` was trained on another number of input channels than `subject`'s images
    have; found from the variables' shapes, before anything is restored (restoring
    would only say that the checkpoint does not fit)."""
    differing = saved_shapes(checkpoint, application.build_network())
    channels = application.input_channels
    # None: a damaged checkpoint, which restoring skips with a warning.
    for built, trained in (differing or {}).values():
        if len(built) < 3 or built[-2] != channels or trained[-2] == channels:
            continue
        files = _input_files(application, subject)
        raise DataError(
            f"The input {files} has {channels} channel(s), but the network in {checkpoint} was "
            f"trained on {trained[-2]}. Give images with {trained[-2]} channel(s) (one file per "
            f"[MULTITASK] image section: {', '.join(application.data.roles.images)}), or "
            "point [SYSTEM] model_dir at a network trained on these.")


def report_groups(settings) -> dict:
    """The learned grouping of each SFG layer: YAML, bar chart, and history plot."""
    application = make_application(settings)
    driver, model = _trained_sfg_network(settings, application,
                                         "sfg_groups reports the grouping of")
    summary = _write_grouping(application, model, str(settings.system.model_dir),
                              driver.iteration)
    print(_grouping_table(summary, application.group_names()))
    print("\n".join(describe_allocation(summary)
                    + describe_agreement(model.grouping_agreement(),
                                         settings.sfg.agreement_threshold)))
    return summary


def _trained_sfg_network(settings, application, what: str):
    """The inference driver and its restored network; a ConfigError unless the network
    has SFG layers (``what`` says what the command does with them)."""
    driver = InferenceDriver(application, InferenceOptions.from_settings(settings))
    model = driver.load_model()
    if not model.grouping_probabilities():
        raise ConfigError(f"[NETWORK] name = {settings.network.name} has no SFG layers: "
                          f"{what} an SFG network such as sfg_highres3dnet or sfg_vgg.")
    return driver, model


def _write_grouping(application, model, model_dir: str, iteration: int) -> dict:
    run = RunFolder(model_dir)
    folder = writable_folder(str(run.grouping), "the grouping report")
    summary = write_grouping_report(model.grouping_probabilities(), application.group_names(),
                                    run.grouping_yaml, run.grouping_png, step=iteration)
    if run.grouping_history.exists():
        plot_history(read_history(run.grouping_history), run.grouping_history_png)
    print(f"Grouping report in {folder}", file=sys.stderr)
    return summary


def _grouping_table(summary: dict, groups: list[str]) -> str:
    """Per layer the argmax fractions, then `max p` (the mean max probability), since
    fractions alone show a layer of undecided kernels (max p near 1/G) as settled."""
    header = ["layer", "kernels"] + [f"{g} %" for g in groups] + ["max p"]
    rows = [[layer, str(entry["kernels"])] +
            [f"{100 * entry['fraction'][g]:.0f}" for g in groups] +
            [f"{entry['mean_max_probability']:.2f}"]
            for layer, entry in summary.items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows)


def evaluate(settings) -> list[dict]:
    """Metrics of the written outputs against the targets, per subject and task."""
    split_file = str(settings.system.dataset_split_file)
    if not os.path.exists(split_file):
        raise DataError(f"No split file {split_file}: nothing was trained or inferred in "
                        f"{settings.system.model_dir}. Run sfg_train and sfg_infer with the "
                        "same config first.")
    folder = writable_folder(str(settings.evaluation.save_csv_dir), "the evaluation's metrics")
    application = make_application(settings)
    rows = application.evaluate_outputs(str(settings.inference.save_seg_dir))
    if not rows:
        raise DataError(f"Nothing to evaluate in the {settings.inference.dataset_to_infer!r} "
                        "split: no subject has a target.")
    run = RunFolder(str(settings.system.model_dir))
    write_metrics(rows, run.metrics(folder), run.metrics_summary(folder))
    print(summary_table(rows))
    print(f"Per-subject metrics in {run.metrics(folder)}", file=sys.stderr)
    return rows


def export(settings, task: str, output_dir=None, overwrite: bool = False) -> dict:
    """The compact network of one task (`sfg_export`): only the kernels of the trained
    SFG network's map architecture that reach the task's head, saved as `<task>.keras`
    and as the TensorFlow SavedModel `<task>_savedmodel/` in `output_dir`
    (default `<model_dir>/export`). Returns the written paths and the compact export."""
    application = make_application(settings)
    tasks = list(application.tasks)
    if task not in tasks:
        raise ConfigError(f"--task {task!r} is not a task of this config. Expected one of: "
                          f"{', '.join(tasks)} ([MULTITASK] tasks).")
    run = RunFolder(str(settings.system.model_dir))
    output_dir = writable_folder(str(output_dir or run.export), "the exported network")
    keras_path = str(run.exported_keras(task, output_dir))
    saved_path = str(run.exported_savedmodel(task, output_dir))
    existing = [p for p in (keras_path, saved_path) if os.path.exists(p)]
    if existing and not overwrite:
        raise DataError(f"{', '.join(existing)} already exist(s). Choose another --output "
                        "or pass --overwrite to replace.")
    driver, model = _trained_sfg_network(settings, application, "sfg_export compacts")
    try:
        result = compact_network(model, task)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    compact = result.model
    with atomic_path(keras_path) as temporary:
        compact.save(temporary)
    signature = [tf.TensorSpec((None,) * (compact.spatial_rank + 1) + (compact.input_channels,),
                               tf.float32, name="image")]
    with atomic_path(saved_path) as temporary:
        compact.export(temporary, format="tf_saved_model", input_signature=signature,
                       verbose=False)
    print(_export_table(settings.network.name, model, result))
    print(f"Compact network of task {task!r} (checkpoint of iteration {driver.iteration}): "
          f"{keras_path} (load after `import sfg_app.networks.compact`), SavedModel "
          f"{saved_path} (signature `serve`)", file=sys.stderr)
    return {"keras": keras_path, "savedmodel": saved_path, "export": result}


def _export_table(network_name: str, model, result) -> str:
    """Full and compact network: kernels per SFG layer, multiply-adds per voxel of the
    input grid (the fused SFG network counted as the dense network it computes with),
    trainable parameters (grouping logits excluded)."""
    header = ["network", "kernels per SFG layer", "multiply-adds / voxel", "parameters"]
    rows = [
        [f"{network_name} ({', '.join(model.task_names)})",
         "/".join(str(n) for n in result.kernels_full.values()),
         f"{result.flops_full:,.0f}", f"{result.params_full:,}"],
        [f"compact ({result.task})",
         "/".join(str(len(k)) for k in result.kept.values()),
         f"{result.flops_compact:,.0f} ({result.flops_compact / result.flops_full:.0%})",
         f"{result.params_compact:,} ({result.params_compact / result.params_full:.0%})"],
    ]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header] + rows)
