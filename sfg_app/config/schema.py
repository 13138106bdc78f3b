"""The config schema: every section and key, declared once, with its type, default and doc.

Everything else about configs is derived from these tables: parsing and checking, the
defaults of the saved settings, ``--help-config`` and ``docs/config_reference.md``. Key
names and sections follow NiftyNet's where NiftyNet had the key. There is no switch that
allows undeclared keys.
"""

from __future__ import annotations

import dataclasses
import functools

from sfg_app import registry
from sfg_app.run_layout import RunLayout
from sfg_app.config.types import Registered
from sfg_app.keys import (
    Axcodes, Bool, Choice, FlipAxes, Float, Int, Key, Name, Path, Range, Regex, Str, Tuple,
    Union, key, list_of)

#: Version of the config format this code reads; ``[SYSTEM] config_version`` above it is
#: refused, so an old installation never misreads a newer file.
CONFIG_VERSION = 1


class Derived:
    """A default computed from other settings; ``text`` says how, for the reference."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


class UnderModelDir(Derived):
    """A default path inside ``[SYSTEM] model_dir``."""

    def __init__(self, name: str):
        super().__init__(f"<model_dir>/{name}")
        self.name = name


class SectionSchema:
    """A kind of section: its title in the reference, its doc and its keys by name."""

    def __init__(self, title: str, doc: str, *keys: Key):
        self.title = title
        self.doc = doc
        self.keys = {k.name: k for k in keys}


_PROBABILITIES = Tuple(Float(0, low_open=True), min_length=2,
                       expected="a tuple of G probabilities (numbers > 0 summing to 1)")
_FRACTION_BELOW_1 = Float(0, 1, high_open=True)
_POSITIVE = Float(0, low_open=True)
#: A schedule's length: iterations, or a fraction of max_iter (travels across run lengths).
_ITERATIONS = Union(Int(0), Float(0, 1, low_open=True, high_open=True),
                    expected="an integer >= 0 (iterations) or a number > 0 and < 1 (a "
                             "fraction of [TRAINING] max_iter)")
_ORDER = Int(0, 5)
#: Sizes in voxels or windows are bounded where arrays need them (2^16 - 1 per axis).
_SIZE = 2 ** 16 - 1
_INPUT_NAME = Name("the name of an input section")
_IMAGE_ONLY = ("image",)

SYSTEM = SectionSchema(
    "SYSTEM", "Where a run lives and how it runs.",
    key("model_dir", Path(), None, "Folder of the run: checkpoints, logs, TensorBoard "
        f"events and the resolved settings ({RunLayout.SETTINGS}).", required=True),
    key("dataset_split_file", Path(), UnderModelDir(RunLayout.SPLIT),
        "CSV of `subject_id,training|validation|inference` rows, made once from the "
        "exclude fractions and the seed, then reused."),
    key("seed", Int(0, 2 ** 32 - 1), 0, "Seed of the data split, window sampling, augmentation and "
        "weight initialisation."),
    key("strategy", Choice("default", "mirrored", "multi_worker"), "default",
        "Distribution: one device, every local GPU (mirrored), or several machines."),
    key("mixed_precision", Choice("none", "float16", "bfloat16"), "none",
        "Mixed-precision policy: none (float32 throughout), float16 (with loss scaling) or "
        "bfloat16."),
    key("num_threads", Int(0), 2, "Data workers that load, preprocess and sample windows; "
        "0 works in the main process."),
    key("worker_kind", Choice("auto", "thread", "process"), "auto",
        "Kind of the data workers: thread, process (spawned; each gets the window source "
        "once), or auto: process when a GPU runs the training step, num_threads >= 2, "
        "the machine has more cores than num_threads + 1 and [NETWORK] cache = disk (a "
        "memory cache would be copied into every process), thread otherwise. process "
        "needs cache = disk or memory. Training logs the kind chosen and why."),
    key("application", Registered(registry.APPLICATIONS), "multitask",
        "Registered application that maps the settings to data, network and tasks."),
    key("config_version", Int(1), CONFIG_VERSION, "Version of the config format; a file "
        f"newer than this code (version {CONFIG_VERSION}) is refused."),
)

NETWORK = SectionSchema(
    "NETWORK", "The network and how training windows are made.",
    key("name", Registered(registry.NETWORKS), None, "Registered network.", required=True),
    key("batch_size", Int(1, _SIZE), 2, "Windows per training step."),
    key("layer_scale", _POSITIVE, 1.0, "Multiplier of every layer's number of kernels."),
    key("activation_function", Choice("relu", "leaky_relu", "elu", "prelu"), "relu",
        "Activation after each convolution."),
    key("norm_layer", Choice("batch", "instance", "none"), "instance",
        "Normalisation after each convolution (per group in SFG layers). With batch, an "
        "SFG network's moving statistics average over the architectures sampled in "
        "training, and can misfit the one used in map, sample or expected mode."),
    key("decay", Float(0), 0.0, "Weight decay lambda: lambda * ||W||^2 is added to the "
        "loss."),
    key("window_sampling", Registered(registry.SAMPLERS), "uniform",
        "Registered sampler of training windows."),
    key("sampling_map", _INPUT_NAME, Derived("with balanced: the target of the first "
                                        "task whose target holds labels (segmentation)"),
        "Input section of the probability map of `weighted`, or of the label map of "
        "`balanced`.", applies_to=("weighted", "balanced")),
    key("queue_length", Int(1), 8, "Windows buffered between the data workers and the "
        "training loop."),
    key("volume_padding_size", Tuple(Int(0, _SIZE), 3), (0, 0, 0),
        "Voxels added on each side of every axis of a volume before sampling."),
    key("volume_padding_mode",
        Choice("constant", "edge", "reflect", "symmetric", "minimum"), "minimum",
        "How padded voxels are filled (numpy.pad modes; constant pads zeros)."),
    key("histogram_ref_file", Path(), UnderModelDir(RunLayout.HISTOGRAM_REF),
        "Landmarks of `normalisation = histogram`, learned from the training subjects "
        "when the file does not exist."),
    key("cutoff", Range(Float(0, 1), strict=True), (0.01, 0.99),
        "Lowest and highest intensity quantiles of histogram normalisation."),
    key("norm_type", Choice("percentile", "quartile"), "percentile",
        "Landmarks of histogram normalisation: deciles or quartiles."),
    key("cache", Choice("memory", "disk", "none"), "memory",
        "Where preprocessed volumes are kept between uses."),
)

SFG = SectionSchema(
    "SFG", "Stochastic filter groups: G = number of tasks + 1 groups, the shared one last. "
    "The defaults are the recipes chosen by scripts/experiments/compare.py and "
    "relatedness.py (docs/results.md): in a run of about 900 iterations or more, the "
    "groups decided from the tasks' agreement over its first third (allocation, "
    "agreement_threshold, agreement_split); in a shorter one, the learned recipe (logits "
    "learned 30x faster than the weights from 0.8 shared, a warm-up and a fine-tuning). "
    "The paper's own: allocation = learned, init = uniform, prior = uniform, "
    "kl_weight = 0.001, logit_lr_multiplier = 1, warmup_iter = 0, finetune_iter = 0, "
    "norm_parameters = per_group.",
    key("tau", _POSITIVE, 1.0, "Initial temperature of the Gumbel-softmax relaxation."),
    key("tau_min", _POSITIVE, 0.2, "Lowest temperature annealing reaches (at most tau)."),
    key("anneal_rate", Float(0), 0.005, "r in tau(i) = max(tau_min, tau * exp(-r * i)); "
        "0 keeps the temperature constant."),
    key("straight_through", Bool(), True, "Hard one-hot assignments in the forward pass, "
        "soft gradients in the backward pass."),
    key("sample_per", Choice("step", "example"), "step",
        "One architecture sample per training step, or one per example (needs "
        "impl = reference)."),
    key("learn_probabilities", Bool(), True, "Learn the grouping probabilities; false "
        "keeps them at their initial values."),
    key("init", Union(Choice("uniform", "dirichlet", "shared"), _PROBABILITIES,
                      expected="uniform, dirichlet, shared, or " + _PROBABILITIES.expected),
        "shared", "Initial grouping probabilities of every kernel: uniform, a Dirichlet "
        "draw per kernel, shared (init_shared on the shared group, the rest split evenly "
        "over the tasks), or G probabilities."),
    key("init_alpha", _POSITIVE, 1.0, "Concentration of the Dirichlet of init = dirichlet."),
    key("init_shared", Float(0, 1, low_open=True, high_open=True), 0.8,
        "Probability of the shared group of init = shared and prior = shared."),
    key("logit_lr_multiplier", _POSITIVE, 30.0,
        "The grouping logits are held divided by this factor, so that an Adam (AdamW, "
        "RMSprop) step moves them this many times faster than the weights (with sgd and "
        "momentum, its square). At 1 the grouping barely moves in a run of a few "
        "hundred steps."),
    key("warmup_iter", _ITERATIONS, Derived("a third of max_iter with allocation = "
                                            "agreement, 150 iterations with learned"),
        "Iterations (or a fraction of max_iter, e.g. 1/3). allocation = agreement: the "
        "iterations that train every kernel shared and measure the tasks' agreement "
        "before the groups are decided. allocation = learned: the iterations over which "
        "training moves linearly from the expected architecture (soft masks equal to the "
        "probabilities) to sampled ones; 0 samples from the first step."),
    key("finetune_iter", _ITERATIONS, 100,
        "allocation = learned: the last iterations of training (or a fraction of "
        "max_iter) that run the map architecture (each kernel in its most probable group) "
        "with the grouping fixed, so that the weights are tuned for the network inference "
        "runs; 0 samples to the end. With agreement the groups are fixed from the end of "
        "the warm-up instead."),
    key("transition_iter", _ITERATIONS, 0,
        "Iterations (or a fraction of max_iter) over which training moves from the "
        "architecture before the groups are fixed (finetune_iter; with allocation = "
        "agreement, the end of the warm-up) to the decided one: a kernel leaving the "
        "shared group feeds the other tasks less each step, from all to nothing, so that "
        "they re-route instead of losing it at once; 0: at once."),
    key("norm_parameters", Choice("per_group", "shared"), "shared",
        "Normalisation scale and offset held per (group, channel), or one per channel "
        "shared by the groups (moving statistics stay per group)."),
    key("prior", Union(Choice("uniform", "shared"), _PROBABILITIES,
                       expected="uniform, shared, or " + _PROBABILITIES.expected),
        "shared", "Prior over groups of the KL term: uniform, shared (init_shared on "
        "the shared group, the rest split evenly over the tasks), or G probabilities."),
    key("connectivity", Choice("mixed", "separate", "dense"), "mixed",
        "Which groups feed which: mixed (a specialist reads its own group and the shared "
        "one), separate (own group only) or dense (every group)."),
    key("kl_weight", Float(0), 0.01, "beta: weight of KL(q || prior) in the loss."),
    key("logit_gradient", Choice("sum", "shared_mean", "balanced"), "sum",
        "What moves the grouping logits: sum (the gradient of the whole loss); "
        "shared_mean (the shared group's gradient divided by the number of tasks it "
        "serves: a kernel is shared when it helps the tasks alike, not because it reaches "
        "more heads); balanced (shared_mean, and each task's gradient scaled to the same "
        "size first; one backward pass per task). What each measured: docs/results.md."),
    key("allocation", Choice("auto", "learned", "agreement"), "auto",
        "How kernels get their groups: auto (agreement when its warm-up holds at least "
        "300 iterations and ends before the run does, else learned: measured over fewer, "
        "the agreement split related tasks too; docs/results.md), learned (the paper's: "
        "logits learned through "
        "sampled architectures) or agreement (the first warmup_iter iterations train every "
        "kernel shared and measure, per kernel, how well the tasks' gradients on its "
        "weights agree; a kernel whose agreement passes agreement_threshold is shared, "
        "any other goes to one task (agreement_split), and training goes on with that "
        "architecture fixed; docs/results.md measures both)."),
    key("agreement_threshold", Float(-1, 1), 0.1,
        "allocation = agreement: the cosine between the tasks' gradients on a kernel's "
        "weights (moving averages over the warm-up) above which the kernel is shared."),
    key("agreement_split", Choice("pull", "even"), "even",
        "allocation = agreement: how a layer's kernels that are not shared are split "
        "between the tasks: pull (each to the task whose weighted loss pulls hardest on "
        "it) or even (each task an equal number, each taking those that carry most of its "
        "own gradient energy: no task's capacity depends on its loss's scale)."),
    key("impl", Choice("fused", "reference"), "fused",
        "fused: one masked convolution a layer; reference: one convolution a group."),
)

MULTITASK = SectionSchema(
    "MULTITASK", "What the network reads and which tasks it learns.",
    key("image", list_of(Name(), "input sections"), None,
        "Input sections fed to the network, stacked as channels.", required=True),
    key("tasks", list_of(Name(), "task names"), None,
        "Tasks to learn, each described by a [TASK name] section.", required=True),
    key("weighting", Choice("fixed", "uncertainty"), "fixed",
        "Task weights: fixed ([TASK] weight) or learned homoscedastic uncertainty."),
)

#: The keys of every `[TASK name]` section; each task type declares its own beside them
#: (its class attribute ``keys``, see `sfg_app.tasks.base`).
TASK_COMMON = (
    key("type", Registered(registry.TASKS), None, "Registered task type.", required=True),
    key("target", _INPUT_NAME, None, "Input section of the target.", required=True),
    key("loss", Registered(registry.LOSSES), Derived("the task type's first loss"),
        "Registered loss."),
    key("weight", Float(0), 1.0, "Fixed weight of this task's loss (weighting = fixed)."),
    key("mask", _INPUT_NAME, None, "Input section of a mask: loss and metrics count only what "
        "lies inside it."),
    key("optional_target", Bool(), False, "Subjects without the target are kept; they "
        "contribute nothing to this task."),
)
_TASK_TITLE, _TASK_DOC = "TASK <name>", "One task: its target, head, loss and outputs."


def task_type(name: str | None):
    """The registered task type class ``name``; None when no such type is registered
    (the ``type`` key's own check reports it)."""
    return registry.TASKS.get(name) if name in registry.TASKS else None


def task_schema(type_name: str | None = None) -> SectionSchema:
    """The keys of a `[TASK]` section of the task type ``type_name``: the common ones,
    then the type's own. With None, every registered type's keys, each type-specific
    key with the types that take it in ``applies_to`` (for typing a section before its
    type is known, the reference and the hints of unknown keys)."""
    names = tuple(registry.TASKS.names()) if type_name is None else (type_name,)
    return _task_schema(names)


@functools.lru_cache(maxsize=64)
def _task_schema(type_names: tuple[str, ...]) -> SectionSchema:
    types = {name: registry.TASKS.get(name) for name in type_names}
    losses = "; ".join(f"{name}: {', '.join(t.loss_names)}" for name, t in types.items())
    defaults = "; ".join(f"{name}: {t.loss_names[0]}" for name, t in types.items())
    common = [dataclasses.replace(spec, doc=f"Registered loss. Allowed: {losses}.",
                                  default=Derived(defaults))
              if spec.name == "loss" else spec for spec in TASK_COMMON]
    own: dict[str, Key] = {}
    for name, task_class in types.items():
        for spec in task_class.keys:
            known = own.get(spec.name, spec)
            takers = (known.applies_to or frozenset()) | {name}
            own[spec.name] = dataclasses.replace(known, applies_to=frozenset(takers))
    if len(types) == 1:
        own = {name: dataclasses.replace(spec, applies_to=None) for name, spec in own.items()}
    return SectionSchema(_TASK_TITLE, _TASK_DOC, *common, *own.values())


#: The rules of ``foreground_type`` (``data/normalisation.py`` computes each); any other
#: value names an input section whose voxels > 0 are the foreground.
FOREGROUND_RULES = ("none", "otsu", "threshold", "mean")

INPUT = SectionSchema(
    "<input>", "Any other section (a name of letters, digits, _ and -) is an input: "
    "images found on disk, or one value per subject from a CSV.",
    key("path_to_search", list_of(Path(), "folders"), None,
        "Folders searched for this section's files (or give csv_file)."),
    key("filename_contains", list_of(Str(), "strings"), None,
        "Parts every file name must contain.", applies_to=("search",)),
    key("filename_not_contains", list_of(Str(), "strings"), None,
        "Parts no file name may contain.", applies_to=("search",)),
    key("filename_removefromid", Regex(), None, "Regular expression removed from file "
        "names to give subject ids.", applies_to=("search",)),
    key("csv_file", Path(), None, "CSV of `subject_id,path` rows (instead of "
        "path_to_search)."),
    key("value_column", Str(), None, "Column of csv_file holding one number per subject: "
        "the section is then an image-level value (a class, an age), not an image.",
        applies_to=("csv",)),
    key("loader", Registered(registry.LOADERS, extra=("auto",)), "auto",
        "Image reader; auto picks nibabel for NIfTI and Analyze, SimpleITK otherwise.",
        applies_to=_IMAGE_ONLY),
    key("pixdim", Tuple(_POSITIVE, 3), None, "Voxel size (mm) to resample to; unset keeps "
        "each image's own.", applies_to=_IMAGE_ONLY),
    key("axcodes", Axcodes(), None, "Orientation to reorient to, e.g. (R, A, S); unset "
        "keeps each image's own.", applies_to=_IMAGE_ONLY),
    key("interp_order", _ORDER, Derived("0 for segmentation targets, masks and balanced "
                                        "sampling maps; 1 otherwise"),
        "Spline order of resampling (0: nearest neighbour).", applies_to=_IMAGE_ONLY),
    key("spatial_window_size", Tuple(Int(1, _SIZE), 3), None, "Window size in voxels; 2D configs "
        "use (x, y, 1). Required on image sections, equal across them.",
        applies_to=_IMAGE_ONLY),
    key("match_space", Choice("check", "resample"), "check", "When this section's grid "
        "differs from the image's: stop with an error, or resample onto the image's grid.",
        applies_to=_IMAGE_ONLY),
    key("normalisation", Choice("none", "zscore", "histogram"), "none",
        "Intensity normalisation.", applies_to=_IMAGE_ONLY),
    key("foreground_type", Union(Choice(*FOREGROUND_RULES), _INPUT_NAME,
                                 expected=f"{', '.join(FOREGROUND_RULES)}, or an input "
                                          "section"),
        "none", "Foreground used by normalisation: a rule, or an input section as a mask.",
        applies_to=_IMAGE_ONLY),
    key("foreground_threshold", Float(), 0.0, "Intensity above which a voxel is foreground "
        "(foreground_type = threshold).", applies_to=_IMAGE_ONLY),
    key("intensity_window", Range(Float(), strict=True), None, "Clip to (lo, hi) then "
        "rescale to [0, 1], e.g. a CT window in HU.", applies_to=_IMAGE_ONLY),
    key("percentile_clip", Range(Float(0, 100), strict=True), None,
        "Clip intensities to these percentiles.", applies_to=_IMAGE_ONLY),
)

TRAINING = SectionSchema(
    "TRAINING", "The optimisation loop, checkpoints, validation and augmentation.",
    key("optimiser", Registered(registry.OPTIMISERS), "adam", "Registered optimiser."),
    key("lr", _POSITIVE, 1e-3, "Learning rate (the peak, after warm-up)."),
    key("lr_schedule", Choice("constant", "cosine", "exponential", "step"), "constant",
        "Learning-rate schedule over max_iter."),
    key("lr_decay_rate", Float(0, 1, low_open=True), 0.5,
        "Factor of exponential and step decay every lr_decay_steps."),
    key("lr_decay_steps", Int(1), 1000, "Iterations per decay of exponential and step."),
    key("warmup_iter", Int(0), 150, "Iterations of linear warm-up from 0 to lr."),
    key("max_iter", Int(0), 10000, "Iteration at which training stops."),
    key("starting_iter", Int(-1), -1, "-1: resume from the latest checkpoint if any; "
        "0: start afresh (refused when model_dir holds checkpoints); n: resume from "
        "iteration n's checkpoint."),
    key("save_every_n", Int(1), 500, "Iterations between checkpoints."),
    key("max_checkpoints", Int(1), 5, "Checkpoints kept; older ones are deleted."),
    key("validation_every_n", Int(0), 0, "Iterations between validations; 0: none."),
    key("validation_max_iter", Int(1), 1, "Batches per validation."),
    key("exclude_fraction_for_validation", _FRACTION_BELOW_1, 0.0,
        "Fraction of subjects held out for validation by the split."),
    key("exclude_fraction_for_inference", _FRACTION_BELOW_1, 0.0,
        "Fraction of subjects held out for inference by the split."),
    key("tensorboard_every_n", Int(1), 20, "Iterations between TensorBoard summaries."),
    key("gradient_clip_norm", Float(0), 0.0, "Clip gradients to this global norm; 0: off."),
    key("sample_per_volume", Int(1), 1, "Windows drawn from a volume each time it is "
        "read."),
    key("random_flipping_axes", FlipAxes(), (), "Axes randomly flipped."),
    key("flip_probability", Float(0, 1), 0.5, "Probability of flipping each listed axis."),
    key("rotation_angle", Range(Float()), None, "Range of random rotation, degrees."),
    key("scaling_percentage", Range(Float(-100, low_open=True)), None,
        "Range of random scaling, percent."),
    key("do_elastic_deformation", Bool(), False, "Random elastic deformation."),
    key("num_ctrl_points", Int(2), 4, "Control points per axis of elastic deformation."),
    key("deformation_sigma", Float(0), 15.0, "Standard deviation of control point "
        "displacements, mm."),
    key("proportion_to_deform", Float(0, 1), 0.5, "Fraction of windows deformed."),
    key("bias_field_range", Range(Float()), None, "Range of the coefficients of a random "
        "polynomial bias field."),
    key("bf_order", Int(1), 3, "Order of the bias-field polynomial."),
    key("gamma_range", Range(_POSITIVE), None, "Range of a random gamma applied to "
                                              "intensities."),
    key("noise_std", Range(Float(0)), None, "Range of the standard deviation of added "
                                           "Gaussian noise."),
)

INFERENCE = SectionSchema(
    "INFERENCE", "Sliding-window inference and its outputs.",
    key("border", Tuple(Int(0, _SIZE), 3), (0, 0, 0), "Voxels discarded (crop) or down-weighted "
        "at each side of a window's output; neighbouring windows overlap by twice the "
        "border. Each must be less than half the inference window: spatial_window_size "
        "below when set, else the training window."),
    key("spatial_window_size", Tuple(Int(1, _SIZE), 3),
        Derived("with norm_layer = batch or none, per subject the largest window whose "
                "network call fits memory_limit: the whole (padded) volume plus the "
                "border when it fits, never smaller than the training window; with "
                "instance normalisation, the training window"),
        "Inference window in voxels, at least the training window (the image sections' "
        "spatial_window_size) on every axis; 2D networks take (x, y, 1). The networks "
        "are fully convolutional: a larger window means fewer windows and less overlap "
        "to compute. With norm_layer = instance the outputs depend on the window (its "
        "statistics are the window's), so the derived window is the training one. Set, "
        "[NETWORK] batch_size windows go through the network per call; derived, as many "
        "as fit memory_limit, at most 64 (2D: slices). Not used with window_sampling = resize (the whole volume is resized "
        "to the training window)."),
    key("memory_limit", Int(1, 2 ** 30), Derived("a quarter of the memory available when "
                                                 "inference starts"),
        "Megabytes (MiB, 2^20 bytes) that one network call's activations may take: it "
        "sizes the derived spatial_window_size and the windows per call, from an "
        "estimate of the network's bytes per window voxel (docs/inference.md)."),
    key("inference_iter", Int(-1), -1, "Checkpoint to use; -1: the latest."),
    key("save_seg_dir", Path(), UnderModelDir(RunLayout.INFERENCE), "Folder of the outputs."),
    key("overwrite", Bool(), False, "Replace outputs that exist already (as sfg_infer "
        "--overwrite); false: an existing output is an error naming it. Input images are "
        "never overwritten."),
    key("architecture", Choice("map", "sample", "expected"), "map",
        "SFG networks at test time: most probable groups, mc_samples sampled "
        "architectures averaged, or soft masks equal to the probabilities."),
    key("mc_samples", Int(1, _SIZE), 10, "Architectures sampled by architecture = sample."),
    key("blending", Choice("crop", "constant", "gaussian"), "crop",
        "crop keeps each window's centre (as NiftyNet); constant and gaussian average "
        "overlapping windows."),
    key("dataset_to_infer", Choice("inference", "validation", "training", "all"),
        "inference", "Subjects of the split to infer."),
)

EVALUATION = SectionSchema(
    "EVALUATION", "Metrics of inferred outputs against targets.",
    key("save_csv_dir", Path(), UnderModelDir(RunLayout.EVALUATION), "Folder of the metric CSVs."),
)

#: The fixed sections, in the order of the reference and of saved settings.
FIXED_SECTIONS = {schema.title: schema for schema in
                  (SYSTEM, NETWORK, SFG, MULTITASK, TRAINING, INFERENCE, EVALUATION)}

#: NiftyNet sections and keys that sfg replaced, with where to go instead.
NIFTYNET_SECTIONS = {
    name: f"[{name}] is NiftyNet's application section; sfg describes what to learn "
          "with [MULTITASK] and one [TASK name] section per task."
    for name in ("SEGMENTATION", "REGRESSION", "CLASSIFICATION", "GAN", "AUTOENCODER",
                 "CUSTOM")
}
NIFTYNET_SECTIONS["DEFAULT"] = ("[DEFAULT] is not supported: each key belongs to one "
                                "section.")
NIFTYNET_KEYS = {
    "loss_type": "sfg sets the loss of each task: `loss` in its [TASK name] section.",
    "whitening": "Use `normalisation = zscore` in the input section.",
    "normalise_foreground_only": "Use `foreground_type` in the input section.",
    "multimod_foreground_type": "Use `foreground_type` in the input section.",
    "cuda_devices": "Choose GPUs with CUDA_VISIBLE_DEVICES and [SYSTEM] strategy.",
    "num_gpus": "Choose GPUs with CUDA_VISIBLE_DEVICES and [SYSTEM] strategy.",
    "reg_type": "sfg's weight decay is L2: [NETWORK] decay.",
    "action": "The command chooses the action: sfg_train, sfg_infer or sfg_eval.",
}


def section_schema(header: str) -> SectionSchema:
    """The schema of a section header that ``validate`` has classified."""
    if header in FIXED_SECTIONS:
        return FIXED_SECTIONS[header]
    return task_schema() if header.startswith("TASK ") else INPUT


def all_schemas() -> tuple[SectionSchema, ...]:
    return (*FIXED_SECTIONS.values(), task_schema(), INPUT)

