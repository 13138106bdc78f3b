"""Windows per second of the training pipeline, beside the network's training-step rate.

The pipeline must never be what the GPU waits for: its rate should be at least 5x the
GPU's training-step rate. Synthetic subjects (default: 4 of 160x160x96 voxels, a
2-channel image, a label map with 4 classes, a regression target) are cached, windows
drawn (uniform and balanced), augmented (flips, rotation, scaling, elastic deformation
for half the windows, bias field, gamma, noise), batched and prefetched through
``tf.data``, and consumed as fast as possible. Run it alone:

    flock -x /tmp/sfg_cpu.lock python scripts/bench/bench_pipeline.py

Each rate is also given per core: windows/s divided by the number of workers (1 for the
main process), i.e. what one worker makes assuming it has a core of its own; on a machine
with no more cores than workers the driver takes its share, so this underestimates a core
of a larger machine. From the slowest mode's rate per core it says how many workers the
5x target needs.

The last line is ``ratio pipeline/step: X.X``: the slowest sampling mode's windows/s
with the default workers (threads), divided by the GPU reference's windows/s.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# A dense HighRes3DNet training step, H200, 96^3, batch 2, float32 (shared/design/SFG.md).
GPU_STEP_SECONDS = 0.239
GPU_BATCH = 2


def synthetic_subjects(count: int, shape: tuple[int, int, int], seed: int) -> list[dict]:
    """Smooth random images, a 4-class label map made from them, a regression target."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    subjects = []
    for _ in range(count):
        small = rng.standard_normal((*(s // 8 for s in shape), 2)).astype(np.float32)
        image = np.stack([ndimage.zoom(small[..., c], 8, order=1) for c in range(2)], -1)
        image += 0.1 * rng.standard_normal(image.shape, dtype=np.float32)
        labels = np.digitize(image[..., :1], [-0.5, 0.3, 1.0]).astype(np.int16)
        target = (image[..., :1] * 2 - image[..., 1:]).astype(np.float32)
        subjects.append({"MR": image, "LABEL": labels, "CT": target})
    return subjects


def build_source(cache, sampler_name: str, window: int):
    from sfg_app.data.augmentation import Augmenter, IntensityAugmentation, SpatialAugmentation
    from sfg_app.data.windows import WindowSource
    from sfg_app.registry import SAMPLERS

    sampler = SAMPLERS.get(sampler_name)((window,) * 3, sampling_map="LABEL",
                                          label_sections=("LABEL",))
    augmenter = Augmenter(
        spatial=SpatialAugmentation(random_flipping_axes=(0, 1, 2), rotation_angle=(-10, 10),
                                    scaling_percentage=(-10, 10), do_elastic_deformation=True,
                                    num_ctrl_points=4, deformation_sigma=3.0,
                                    proportion_to_deform=0.5),
        intensity=IntensityAugmentation(bias_field_range=(-0.3, 0.3), bf_order=3,
                                        gamma_range=(0.7, 1.5), noise_std=0.05),
        image_sections=("MR",), label_sections=("LABEL",))
    return WindowSource(cache, sampler=sampler, augmenter=augmenter, label_sections=("LABEL",),
                        sample_per_volume=8, seed=1)


def pipeline_rate(source, batch_size: int, threads: int, kind: str, seconds: float) -> float:
    """Windows per second through tf.data after two warm-up batches."""
    from sfg_app.data.tf_adapter import TrainingWindows

    with TrainingWindows(source, batch_size=batch_size, num_threads=threads,
                         worker_kind=kind) as windows:
        iterator = iter(windows.dataset)
        for _ in range(2):
            next(iterator)
        count, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds:
            next(iterator)
            count += batch_size
        rate = count / (time.perf_counter() - begin)
        del iterator
    return rate


def per_core(rate: float, workers: int) -> str:
    """The rate per core: windows/s divided by the workers making them."""
    return f"{rate / workers:5.1f} per core (/ {workers} worker{'s' if workers > 1 else ''})"


def profile_source(source, windows: int) -> None:
    """cProfile of the source in this process: where a window's time goes."""
    import cProfile
    import pstats

    source(0)
    profiler = cProfile.Profile()
    profiler.enable()
    for index in range(1, windows + 1):
        source(index)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def network_step_seconds(window: int, batch_size: int) -> tuple[float | None, str]:
    """One CPU training step of SFGHighRes3DNet (median of 3 after one warm-up)."""
    try:
        import keras
        from sfg_app.networks.heads import HeadSpec
        from sfg_app.networks.highres3dnet import SFGHighRes3DNet
    except Exception as error:  # the network may not exist yet
        return None, f"not importable ({type(error).__name__}: {error})"
    try:
        from sfg_app.layers.grouping import GroupingConfig

        # The paper's grouping, as the recorded figures measured it.
        grouping = GroupingConfig(init="uniform", prior="uniform", tau_min=0.05,
                                  logit_lr_multiplier=1.0, warmup_iter=0,
                                  norm_parameters="per_group")
        model = SFGHighRes3DNet(heads={"seg": HeadSpec(kind="voxel", channels=4),
                                       "ct": HeadSpec(kind="voxel", channels=1)},
                                grouping=grouping)
        optimizer = keras.optimizers.Adam(1e-3)
        x = np.random.default_rng(0).standard_normal((batch_size, window, window, window, 2),
                                                     dtype=np.float32)
        import tensorflow as tf

        @tf.function(jit_compile=False)
        def step(x):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = sum(tf.reduce_mean(tf.square(v)) for v in out.values())
                loss += model.grouping_kl()
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        step(x)
        times = []
        for _ in range(3):
            begin = time.perf_counter()
            step(x).numpy()
            times.append(time.perf_counter() - begin)
        return float(np.median(times)), "measured"
    except Exception as error:
        return None, f"failed ({type(error).__name__}: {error})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=96)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 160, 96))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--samplers", nargs="+", default=["uniform", "balanced"])
    parser.add_argument("--kinds", nargs="+", default=["thread", "process"],
                        help="worker kinds to compare; the first is the default reported")
    parser.add_argument("--profile", type=int, default=8,
                        help="windows to profile in this process (0: no profile)")
    parser.add_argument("--network-window", type=int, default=32,
                        help="window side of the CPU network step (0: skip)")
    args = parser.parse_args(argv)

    repo = Path(__file__).resolve().parents[2]
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("KERAS_HOME", str(repo / ".keras_home"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(repo))
    from sfg_app import runtime
    from sfg_app.data.cache import VolumeCache

    runtime.enable_onednn()   # as the command line does, before TensorFlow is imported

    shape = tuple(args.shape)
    print(f"pipeline: {args.subjects} subjects of {shape} voxels (image 2 ch, label, regression), "
          f"window {args.window}^3, batch {args.batch_size}, augmentation on, "
          f"{os.cpu_count()} CPU cores")
    subjects = synthetic_subjects(args.subjects, shape, seed=0)
    rates: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="sfg_bench_cache_") as folder:
        caches = {"memory": VolumeCache(subjects.__getitem__, len(subjects)).fill(),
                  "disk": VolumeCache(subjects.__getitem__, len(subjects), cache="disk",
                                      folder=folder).fill()}
        for sampler in args.samplers:
            for kind in args.kinds:
                cache = "memory" if kind == "thread" else "disk"
                source = build_source(caches[cache], sampler, args.window)
                if args.profile and kind == args.kinds[0]:
                    print(f"\nprofile of {args.profile} windows, {sampler} sampling, main process:")
                    profile_source(source, args.profile)
                rate = pipeline_rate(source, args.batch_size, args.threads, kind, args.seconds)
                rates[sampler, kind] = rate
                print(f"{sampler:>9} sampling, {args.threads} {kind} workers, {cache} cache: "
                      f"{rate:6.1f} windows/s, {per_core(rate, max(args.threads, 1))}")
            serial = build_source(caches["memory"], sampler, args.window)
            rate = pipeline_rate(serial, args.batch_size, 0, "thread", args.seconds)
            print(f"{sampler:>9} sampling, no workers (main process): {rate:6.1f} windows/s, "
                  f"{per_core(rate, 1)}")

    if args.network_window:
        seconds, how = network_step_seconds(args.network_window, args.batch_size)
        if seconds is None:
            print(f"SFGHighRes3DNet CPU training step: {how}")
        else:
            print(f"SFGHighRes3DNet CPU training step ({args.network_window}^3, batch "
                  f"{args.batch_size}, {os.cpu_count()} cores): {seconds:.2f} s = "
                  f"{args.batch_size / seconds:.2f} windows/s")
    gpu_rate = GPU_BATCH / GPU_STEP_SECONDS
    print(f"GPU reference (design doc): dense HighRes3DNet training step, H200, 96^3, batch "
          f"{GPU_BATCH}, float32: {GPU_STEP_SECONDS} s = {gpu_rate:.1f} windows/s; "
          f"target >= 5x = {5 * gpu_rate:.0f} windows/s")
    for kind in args.kinds:
        slowest = min(rates[s, kind] for s in args.samplers) / max(args.threads, 1)
        print(f"{kind} workers: {slowest:.1f} windows/s per core in the slowest sampling "
              f"mode; the 5x target needs {math.ceil(5 * gpu_rate / slowest)} such workers")
    default = min(rates[s, args.kinds[0]] for s in args.samplers)
    print(f"ratio = slowest sampling mode with {args.threads} {args.kinds[0]} workers "
          f"({default:.1f} windows/s of {args.window}^3) / GPU reference ({gpu_rate:.1f} "
          "windows/s):")
    print(f"ratio pipeline/step: {default / gpu_rate:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
