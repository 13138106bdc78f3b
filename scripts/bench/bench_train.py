"""The real training step through the driver, data pipeline included: dense, fused SFG and
cross-stitch side by side, at the demo's and the paper's window sizes.

What runs: for each size, phantom NIfTI subjects are generated into a temporary folder
(``sfg_app.demo.phantoms.write_dataset``) and an INI written beside them (the demo's
recipe: MR in, organs segmentation with 6 classes and synth_ct regression, uncertainty
weighting, balanced sampling, flips, rotation and scaling, 2 data workers). Each network
(``hard_shared``: the dense HighRes3DNet trunk with one head per task; ``sfg_highres3dnet``
with ``[SFG] impl = fused``; ``cross_stitch``) is trained from that config by
``TrainingDriver`` for ``warmup + steps`` iterations, the models one after the other in
one process (``--rounds`` repeats the sequence and pools the steps). A handler records
``time.perf_counter()`` at every ``on_step_end``: a step's time is the interval between
two, so it holds waiting for the next batch, the training step, reading its losses and
the driver's own handlers. The first ``--warmup`` steps are discarded (they trace the
step and fill the data queue) and the median of the rest is reported. Validation is off
(``validation_every_n = 0``), ``save_every_n`` and ``tensorboard_every_n`` are larger
than the run, so no checkpoint or summary is written inside the timed steps (the
driver's summary after the first step falls in the discarded warm-up, its final
checkpoint after the last step's mark).
``[SFG] finetune_iter = 0``: every SFG step samples an architecture, as most steps of a
run do (a short run would otherwise be all fine-tuning).

Sizes: ``demo`` is configs/demo.ini's (32^3 windows, layer_scale 0.5, batch 2, its
preprocessing: RAS, 5 mm voxels, 4 voxels of padding, on 4 phantoms of the default
grids); ``paper`` is 96^3 windows, layer_scale 1, batch 2 on 2 phantoms of 104^3 voxels
(their own voxel sizes). The per-size defaults of ``--steps`` / ``--warmup`` are 20 / 3
(demo) and 3 / 2 (paper).

Throughput: steps/s; voxels/s = batch x window voxels / step time; GFLOP/s = FLOPs of a
step / step time, where the FLOPs of a step are 3 x 2 x multiply-adds per voxel x
voxels of the batch (2 FLOPs per multiply-add; the backward pass counted as twice the
forward: the gradients of the inputs and of the weights). Multiply-adds per voxel
are counted from the layer shapes: every convolution costs kernel volume x input
channels x output channels per output voxel (a dilated one the same), each voxel head
input channels x output channels (a 1x1 convolution); normalisation, activations, the
SFG masks, the cross-stitch mixing (T x T x C per voxel, under 0.2 %) and the loss are
not counted. A fused SFG convolution is one dense convolution with a masked weight, so
the SFG network counts as the dense one (as sfg_app/networks/compact.py counts it); a
cross-stitch column has 1/T of the kernels, so the network has about 1/T of the dense
multiply-adds.

    flock -x /tmp/sfg_cpu.lock python scripts/bench/bench_train.py --sizes demo   # ~2 min
    flock -x /tmp/sfg_cpu.lock python scripts/bench/bench_train.py --sizes paper --batch 1
    flock -x /tmp/sfg_cpu.lock python scripts/bench/bench_train.py                # both

Durations on 2 cores of an Intel Xeon with AVX-512, phantom generation included: demo
about 2 min; paper at batch 1 about 8 min (a step of the dense network takes 26 s, the
process peaks at 12.3 GiB). The paper size at its batch of 2 needs about twice that
memory: on a machine with 23 GiB it is killed in its first step, hence ``--batch``.
The peak resident memory is printed after each size.

The table's ``vs dense`` is the model's median step time / the dense one's (above 1:
slower); the last line is ``ratio sfg/dense: X.XX``, that ratio for the fused SFG network
at the demo size when it was measured, otherwise at the last size measured. On CPU it
must run alone (``flock -x``): timings beside other work mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = {"dense": "hard_shared", "sfg": "sfg_highres3dnet", "cross_stitch": "cross_stitch"}


@dataclasses.dataclass(frozen=True)
class Size:
    """A window size and what goes with it: the network's width, the batch, the data."""

    window: int
    layer_scale: float
    batch: int
    subjects: int
    phantom_shape: tuple[int, int, int] | None   # None: the phantoms' default grids
    pixdim: tuple[float, float, float] | None    # None: each volume's own voxel size
    padding: int
    steps: int
    warmup: int

    @property
    def voxels(self) -> int:
        """Voxels of one training batch."""
        return self.batch * self.window ** 3


SIZES = {
    # configs/demo.ini (tests/scripts/test_bench_train.py checks that they agree).
    "demo": Size(window=32, layer_scale=0.5, batch=2, subjects=4, phantom_shape=None,
                 pixdim=(5.0, 5.0, 5.0), padding=4, steps=20, warmup=3),
    # The paper's windows at full width.
    "paper": Size(window=96, layer_scale=1.0, batch=2, subjects=2, phantom_shape=(104,) * 3,
                  pixdim=None, padding=0, steps=3, warmup=2),
}

NEVER = 10 ** 9  # save_every_n and tensorboard_every_n: later than any run
HEADER = """\
; Written by scripts/bench/bench_train.py: the demo's recipe (configs/demo.ini) at one
; window size, without validation, checkpoints or summaries inside the run.
"""


def config_text(size: Size) -> str:
    """The config of ``size`` (see HEADER)."""
    from sfg_app.demo.configs import ini_text, phantom_sections

    return HEADER + ini_text(phantom_sections(
        body_mask=True, changes={
            "SYSTEM": {"seed": 7, "num_threads": 2},
            # pixdim None: no key, each volume's own voxel size.
            "MR": {"spatial_window_size": (size.window,) * 3, "axcodes": ("R", "A", "S"),
                   "pixdim": size.pixdim, "foreground_type": "otsu"},
            "NETWORK": {"name": "hard_shared", "layer_scale": size.layer_scale,
                        "batch_size": size.batch, "window_sampling": "balanced",
                        "volume_padding_size": (size.padding,) * 3},
            "SFG": {"connectivity": "mixed", "impl": "fused", "finetune_iter": 0},
            "MULTITASK": {"weighting": "uncertainty"},
            "TASK organs": {"loss": "dice_ce"},
            "TASK synth_ct": {"loss": "l1"},
            "TRAINING": {"optimiser": "adam", "lr": 0.003, "save_every_n": NEVER,
                         "validation_every_n": 0, "tensorboard_every_n": NEVER,
                         "exclude_fraction_for_inference": None,
                         "random_flipping_axes": (0,), "rotation_angle": (-10, 10),
                         "scaling_percentage": (-10, 10)},
            "INFERENCE": None}))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=list(SIZES),
                        help="window sizes to measure, in this order (default: both)")
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS),
                        help="networks, trained in this order; dense is the reference")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per model (default: 20 demo, 3 paper)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="discarded first steps per model (default: 3 demo, 2 paper)")
    parser.add_argument("--batch", type=int, default=None,
                        help="windows per step at every size (default: 2, the demo's and "
                             "the paper's; the paper's needs ~25 GiB at 2, 12.3 GiB at 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times the sequence of models is repeated, steps pooled")
    parser.add_argument("--verbose", action="store_true",
                        help="show the driver's own progress lines")
    args = parser.parse_args(argv)
    for name in ("steps", "rounds", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup is not None and args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step traces the graph)")
    return args


def configure() -> bool:
    """Backend, logging and oneDNN (as the command line chooses them) are chosen by the
    environment, before Keras is imported; True when sfg turned oneDNN on."""
    from sfg_app import runtime

    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("KERAS_HOME", str(REPO / ".keras_home"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return runtime.enable_onednn()


# -- what a step computes ------------------------------------------------------------------

def multiply_adds_per_voxel(model) -> int:
    """Multiply-adds per voxel of the window, from the shapes of the model's kernels.

    Every ``SFGConv`` costs ``prod(kernel.shape)`` (kernel volume x C_in x C_out) per
    output voxel, dilated or not, fused SFG or dense; every voxel ``TaskHead`` costs
    ``C_in x channels``. Only networks without pooling (every layer on the window's grid:
    HighRes3DNet, its hard-sharing and cross-stitch variants) are counted this way.
    """
    from sfg_app.layers.blocks import Stage, TaskHead
    from sfg_app.layers.sfg_conv import SFGConv

    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, Stage) and layer.pool:
            raise ValueError(
                f"Invalid model for `multiply_adds_per_voxel`: stage `{layer.name}` of "
                f"{type(model).__name__} pools, so its layers run on coarser grids. Count it "
                "with sfg_app.networks.compact.multiply_adds.")
        if isinstance(layer, SFGConv) or (isinstance(layer, TaskHead)
                                          and layer.kind == "voxel"):
            shape = tuple(layer.kernel.shape)
            count = 1
            for dimension in shape:
                count *= int(dimension)
            total += count
    return total


def training_flops(multiply_adds: int, voxels: int) -> int:
    """FLOPs of one training step: 2 per multiply-add, forward once, backward twice."""
    return 3 * 2 * multiply_adds * voxels


# -- the runs -------------------------------------------------------------------------------

def write_project(folder: pathlib.Path, size: Size, seed: int = 0) -> pathlib.Path:
    """Phantoms in ``folder/data`` and the config ``folder/bench.ini``; its path."""
    from sfg_app.demo.phantoms import write_dataset

    write_dataset(folder / "data", subjects=size.subjects, seed=seed, shape=size.phantom_shape)
    config = folder / "bench.ini"
    config.write_text(config_text(size))
    return config


def step_timer():
    """A driver handler holding the ``perf_counter`` of the start and of each step's end."""
    from sfg_app.engine.handlers import Handler

    class StepTimer(Handler):
        def __init__(self):
            self.marks: list[float] = []

        def on_start(self, state):
            self.marks = [time.perf_counter()]

        def on_step_end(self, state):
            self.marks.append(time.perf_counter())

        def step_seconds(self) -> list[float]:
            return [b - a for a, b in zip(self.marks, self.marks[1:])]

    return StepTimer()


def train(config: pathlib.Path, model_dir: pathlib.Path, network: str, iterations: int,
          verbose: bool):
    """``iterations`` steps of ``network`` through the driver: (step seconds, model)."""
    import keras

    from sfg_app.config import load_settings
    from sfg_app.commands import make_application
    from sfg_app.engine.state import TrainingOptions
    from sfg_app.engine.training import TrainingDriver

    settings = load_settings(config, [f"NETWORK.name={network}",
                                      f"SYSTEM.model_dir={model_dir}",
                                      f"TRAINING.max_iter={iterations}"])
    application = make_application(settings)
    timer = step_timer()
    driver = TrainingDriver(application, TrainingOptions.from_settings(settings),
                            extra_handlers=[timer])
    said = io.StringIO()
    with contextlib.redirect_stderr(sys.stderr if verbose else said):
        try:
            state = driver.run()
        except BaseException:
            sys.stderr.write(said.getvalue())
            raise
    multiply_adds = multiply_adds_per_voxel(state.model)
    del state, driver, application
    keras.backend.clear_session()
    gc.collect()
    return timer.step_seconds(), multiply_adds


def measure_size(name: str, size: Size, args) -> dict[str, dict]:
    """Per model: the timed step seconds and the multiply-adds per voxel."""
    steps = args.steps or size.steps
    warmup = args.warmup or size.warmup
    results = {model: {"times": []} for model in args.models}
    with tempfile.TemporaryDirectory(prefix=f"sfg_bench_train_{name}_") as folder:
        folder = pathlib.Path(folder)
        begin = time.perf_counter()
        config = write_project(folder, size)
        shape = "default grids" if size.phantom_shape is None else \
            "x".join(map(str, size.phantom_shape)) + " voxels"
        print(f"\n{name}: window {size.window}^3, layer_scale {size.layer_scale}, batch "
              f"{size.batch}; {size.subjects} phantoms ({shape}) written in "
              f"{time.perf_counter() - begin:.0f} s; {warmup} warm-up + {steps} timed "
              f"steps per model and round", flush=True)
        for round_ in range(args.rounds):
            for model in args.models:
                model_dir = folder / f"run_{model}_{round_}"
                begin = time.perf_counter()
                times, multiply_adds = train(config, model_dir, MODELS[model],
                                             warmup + steps, args.verbose)
                timed = times[warmup:]
                results[model]["times"] += timed
                results[model]["multiply_adds"] = multiply_adds
                print(f"  {model:>12} ({MODELS[model]}): warm-up "
                      f"{', '.join(f'{t:.2f}' for t in times[:warmup])} s, steps "
                      f"{', '.join(f'{t:.3f}' for t in timed)} s "
                      f"({time.perf_counter() - begin:.0f} s with building)", flush=True)
    return results


# -- the report -----------------------------------------------------------------------------

def cpu_line() -> str:
    """The CPU's model, cores and the flags that decide TensorFlow's oneDNN defaults."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())  # the first CPU's
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    listed = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted) \
        if flags else "flags unknown"
    return f"CPU: {model}, {os.cpu_count()} cores visible; {listed}"


def peak_memory_gib() -> float:
    """The process's peak resident memory (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def onednn_line(set_by_sfg: bool) -> str:
    from sfg_app import runtime

    value = os.environ.get(runtime.ONEDNN_VARIABLE)
    who = "set by sfg" if set_by_sfg else "set by the caller"
    return (f"{runtime.ONEDNN_VARIABLE}={value} ({who})" if value is not None else
            f"{runtime.ONEDNN_VARIABLE} unset (TensorFlow's default for this CPU)")


def table(name: str, size: Size, results: dict[str, dict]) -> list[str]:
    header = ("model", "window", "batch", "median step s", "steps/s", "voxels/s",
              "GFLOP/s", "vs dense")
    dense = statistics.median(results["dense"]["times"]) if "dense" in results else None
    rows = []
    for model, result in results.items():
        seconds = statistics.median(result["times"])
        flops = training_flops(result["multiply_adds"], size.voxels)
        rows.append((model, f"{size.window}^3", str(size.batch), f"{seconds:.3f}",
                     f"{1 / seconds:.3f}", f"{size.voxels / seconds:,.0f}",
                     f"{flops / seconds / 1e9:.1f}",
                     f"{seconds / dense:.2f}" if dense else "-"))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [f"{name}: medians of {len(next(iter(results.values()))['times'])} steps"]
    for row in (header, *rows):
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    onednn_set = configure()
    import tensorflow as tf

    print(cpu_line())
    print(f"{onednn_line(onednn_set)}; TensorFlow {tf.__version__}, intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    sizes = {name: SIZES[name] if args.batch is None else
             dataclasses.replace(SIZES[name], batch=args.batch) for name in args.sizes}
    measured = {}
    for name, size in sizes.items():
        measured[name] = measure_size(name, size, args)
        print(f"  peak resident memory of the process so far: {peak_memory_gib():.1f} GiB")
    for name, results in measured.items():
        print("\nmultiply-adds per voxel: " + ", ".join(
            f"{model} {result['multiply_adds']:,}" for model, result in results.items())
            + f" (FLOPs of a step: 6 x that x {sizes[name].voxels:,} voxels)")
        print("\n".join(table(name, sizes[name], results)))
    ratio_size = "demo" if "demo" in measured else args.sizes[-1]
    results = measured[ratio_size]
    if "dense" in results and "sfg" in results:
        ratio = (statistics.median(results["sfg"]["times"])
                 / statistics.median(results["dense"]["times"]))
        print(f"\nratio = median step of the fused SFG network / of the dense one, at the "
              f"{ratio_size} size:")
        print(f"ratio sfg/dense: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
