"""Whole-volume inference, file to files: sfg (dense, SFG ``map``, SFG ``sample``) beside
MONAI's ``sliding_window_inference`` with its HighResNet, on one volume, in one run.

Each method runs in its own subprocess, so that its peak memory (``ru_maxrss`` of that
process, the framework's import included) is its own, and is timed from the NIfTI file
on disk to the outputs on disk:

- sfg: ``sfg_app.commands.infer`` with ``--input`` and ``--output``, the code
  behind ``sfg_infer``: reading, z-score normalisation, windows of W^3 whose outputs are
  cropped by a border of ``overlap * W / 2`` (neighbouring windows overlap by
  ``overlap * W``, as MONAI's), the blending, the way back to the input's grid, and both
  tasks' outputs written (organ labels, synthetic CT). ``dense`` is ``hard_shared``,
  ``map`` and ``sample`` are ``sfg_highres3dnet`` at ``[INFERENCE] architecture = map``
  and ``sample`` with ``--mc-samples`` draws, all on windows of the training window's
  size (``[INFERENCE] spatial_window_size`` = W^3); ``large`` is ``map`` on the windows
  sfg chooses by default (as large as a quarter of the available memory allows, the
  whole volume where it fits, with the same border); all at layer_scale 1 with batch
  normalisation (MONAI's HighResNet's default; with instance normalisation sfg keeps the
  training window, docs/inference.md) (HighRes3DNet's
  16/32/64 kernels). Their checkpoints come from one training iteration on small
  phantoms: inference time does not depend on the weights' values.
- monai: nibabel reading, z-score, ``sliding_window_inference(roi_size=W^3, overlap,
  sw_batch_size=batch, mode="constant")`` with ``monai.networks.nets.HighResNet(
  spatial_dims=3, in_channels=1, out_channels=7)`` (our 6 classes and 1 regression
  channel, one network pass as ours), then argmax and both outputs written with nibabel.

The volume is a pelvic phantom (``sfg_app.demo.phantoms``) on a grid of ``--shape``
voxels. Needs torch and MONAI for the reference (``pip install -e ".[bench]"``); without
them ``--models dense map sample`` runs alone. On CPU, run it alone:

    flock -x /tmp/sfg_cpu.lock python scripts/bench/bench_infer.py
    python scripts/bench/bench_infer.py --shape 128 128 64 --models map large monai  # quick

Beside the seconds, each method's arithmetic: multiply-adds per window voxel (sfg: from
its kernels' shapes, as bench_train.py counts them; MONAI: the weights of its
convolutions, all on the window's grid), the window voxels its networks computed (sfg:
its grid's windows, times K for ``sample``; MONAI: counted in its predictor calls), and
GFLOP/s = 2 x multiply-adds x window voxels / the method's whole seconds (reading and
writing included, so a lower bound of the network's own rate). ``of roof`` divides that by
the GFLOP/s of a float32 4096 x 4096 matrix product in TensorFlow, measured first in the
same run: how far a faster kernel could still take the method.

The last line is ``ratio sfg/monai: X.XX``: the ``map`` network's seconds over MONAI's.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = ("dense", "map", "sample", "large", "monai")
NETWORKS = {"dense": "hard_shared", "map": "sfg_highres3dnet", "sample": "sfg_highres3dnet",
            "large": "sfg_highres3dnet"}


def config_text(model_dir, data, window: int, network: str, batch: int, border: int,
                architecture: str, samples: int, large: bool = False) -> str:
    """The tiny run's config (sfg_app.demo.configs) for a network at full width (layer_scale
    1) trained one iteration on the phantoms in ``data``, then inferring with cubic
    windows of the training window's size, or (``large``) with the windows sfg derives
    from the memory available (``[INFERENCE] spatial_window_size`` unset)."""
    from sfg_app.demo.configs import ini_text, phantom_sections

    return ini_text(phantom_sections(model_dir, data=data, changes={
        "SYSTEM": {"num_threads": None},
        "MR": {"spatial_window_size": (window,) * 3},
        "NETWORK": {"name": network, "batch_size": batch, "layer_scale": None,
                    "norm_layer": "batch"},
        "TRAINING": {"save_every_n": None, "validation_every_n": 0,
                     "exclude_fraction_for_inference": None},
        "INFERENCE": {"border": (border,) * 3, "architecture": architecture,
                      "mc_samples": samples,
                      "spatial_window_size": None if large else (window,) * 3}}))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 128),
                        help="voxels of the volume (default 256 256 128)")
    parser.add_argument("--window", type=int, default=96, help="cubic window side")
    parser.add_argument("--overlap", type=float, default=0.25,
                        help="fraction of a window shared with its neighbour")
    parser.add_argument("--batch", type=int, default=1, help="windows per network call")
    parser.add_argument("--mc-samples", type=int, default=10, help="K of sample mode")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--work", type=pathlib.Path, default=None,
                        help="folder for the data and runs (default: a temporary one)")
    parser.add_argument("--profile", choices=MODELS[:3], default=None,
                        help="also print where this sfg method's time goes (cProfile, "
                             "cumulative seconds of the slowest calls)")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def environment() -> dict:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("KERAS_HOME", str(REPO / ".keras_home"))
    return env


def cpu_line() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    marks = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}"
                      for flag in ("avx2", "avx512f", "avx512_bf16", "amx_tile"))
    return f"CPU: {model}, {os.cpu_count()} cores visible; {marks}"


# -- the work of one subprocess ---------------------------------------------------------

def run_sfg(job: dict) -> dict:
    from sfg_app.config import load_settings
    from sfg_app import commands

    settings = load_settings(job["config"])
    start = time.perf_counter()
    written = commands.infer(settings, inputs=[job["volume"]], output_dir=job["output"],
                             overwrite=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "files": len(written), **sfg_arithmetic(settings, job)}


def sfg_arithmetic(settings, job: dict) -> dict:
    """Multiply-adds per window voxel (from the kernels' shapes, as bench_train.py counts
    them) and the window voxels the networks computed (the windows of sfg's own grid, times
    the passes: K in ``sample`` mode)."""
    import nibabel as nib
    import numpy as np

    from bench_train import multiply_adds_per_voxel
    from sfg_app.commands import make_application
    from sfg_app.data.samplers.grid import GridSampler

    application = make_application(settings)
    network = application.build_network()
    shape = nib.load(job["volume"]).shape[:3]
    window = application.inference_windows().choose(shape).window
    grid = GridSampler(window, (job["border"],) * 3).plan(shape)
    passes = job["samples"] if job["model"] == "sample" else 1
    return {"multiply_adds": multiply_adds_per_voxel(network), "window": list(window),
            "window_voxels": len(grid.locations) * int(np.prod(window)) * passes}


def run_monai(job: dict) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import HighResNet

    torch.manual_seed(0)
    network = HighResNet(spatial_dims=3, in_channels=1, out_channels=7).eval()
    # Every convolution of HighResNet runs on the window's grid (no pooling): a kernel
    # costs its weight's size in multiply-adds per voxel. The calls are counted as made.
    multiply_adds = sum(m.weight.numel() for m in network.modules()
                        if isinstance(m, torch.nn.Conv3d))
    computed = []

    def predictor(windows):
        computed.append(windows[0, 0].numel() * windows.shape[0])
        return network(windows)

    start = time.perf_counter()
    image = nib.load(job["volume"])
    data = np.asarray(image.dataobj, np.float32)
    data = (data - data.mean()) / max(float(data.std()), 1e-6)
    with torch.inference_mode():
        output = sliding_window_inference(
            torch.from_numpy(data)[None, None], roi_size=(job["window"],) * 3,
            sw_batch_size=job["batch"], predictor=predictor, overlap=job["overlap"],
            mode="constant")[0]
        labels = output[:6].argmax(0).to(torch.uint8).numpy()
        values = (output[6] * 1000.0).numpy()
    os.makedirs(job["output"], exist_ok=True)
    for name, array in (("organs", labels), ("synth_ct", values)):
        nib.save(nib.Nifti1Image(array, image.affine),
                 os.path.join(job["output"], f"volume_{name}.nii.gz"))
    return {"seconds": time.perf_counter() - start, "files": 2,
            "multiply_adds": multiply_adds, "window_voxels": sum(computed)}


def run_matmul(job: dict) -> dict:
    """The best of 5 float32 products of two 4096 x 4096 matrices in TensorFlow, after one
    to warm up: what this CPU's cores give dense arithmetic (the roof for convolutions)."""
    import tensorflow as tf

    size = 4096
    a = tf.random.stateless_normal((size, size), seed=(1, 2))
    b = tf.random.stateless_normal((size, size), seed=(3, 4))
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)), jit_compile=False)
    product().numpy()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "gflops": 2 * size ** 3 / best / 1e9}


def one(job_text: str) -> int:
    job = json.loads(job_text)
    run = {"monai": run_monai, "matmul": run_matmul}.get(job["model"], run_sfg)
    if job.get("profile"):
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(run, job)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        print(text.getvalue(), flush=True)
    else:
        result = run(job)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the parent: data, checkpoints, the runs, the table -----------------------------------

def prepare(args, work: pathlib.Path) -> dict:
    """The volume, and one trained-for-one-iteration run folder per sfg network."""
    import nibabel as nib

    from sfg_app.demo.phantoms import write_dataset
    from sfg_app.io.run_folder import RunFolder

    env = environment()
    volume = work / "volume.nii.gz"
    if not volume.exists():
        start = time.perf_counter()
        paths = write_dataset(work / "big", subjects=1, seed=3, shape=tuple(args.shape))
        os.replace(paths[0]["mr"], volume)
        print(f"volume: phantom MR of {nib.load(volume).shape} voxels written in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    write_dataset(work / "small", subjects=2, seed=3, shape=(32, 32, 32))
    border = round(args.overlap * args.window / 2)
    configs = {}
    for model in (m for m in args.models if m != "monai"):
        config = work / f"{model}.ini"
        config.write_text(config_text(
            model_dir=work / f"run_{NETWORKS[model]}", data=work / "small", window=args.window,
            network=NETWORKS[model], batch=args.batch, border=border,
            architecture="sample" if model == "sample" else "map",
            samples=args.mc_samples, large=model == "large"), encoding="utf-8")
        configs[model] = str(config)
        if not RunFolder(work / f"run_{NETWORKS[model]}").checkpoints.exists():
            # One iteration on small windows: the weights do not depend on the window.
            subprocess.run([sys.executable, "-m", "sfg_app.cli.train", "-c", str(config),
                            "--set", "MR.spatial_window_size=(16, 16, 16)",
                            "--set", "INFERENCE.border=(0, 0, 0)"],
                           env=env, check=True, capture_output=True)
    return {"volume": str(volume), "configs": configs, "border": border}


def measure(args, work: pathlib.Path, prepared: dict, model: str) -> dict:
    job = {"model": model, "volume": prepared["volume"], "window": args.window,
           "overlap": args.overlap, "batch": args.batch, "output": str(work / f"out_{model}"),
           "config": prepared["configs"].get(model), "profile": model == args.profile,
           "border": prepared["border"], "samples": args.mc_samples}
    done = subprocess.run([sys.executable, __file__, "--_one", json.dumps(job)],
                          env=environment(), capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{model} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if model == args.profile:
        print(f"\nprofile of {model}:\n" + done.stdout.split("RESULT ")[0], flush=True)
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    from bench_train import onednn_line
    from sfg_app import runtime

    onednn_set = runtime.enable_onednn()   # as the command line: the jobs inherit it
    args = parse_args(argv)
    if args._one:
        return one(args._one)
    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="sfg_bench_infer_"))
    work.mkdir(parents=True, exist_ok=True)
    print(cpu_line())
    print(onednn_line(onednn_set))
    prepared = prepare(args, work)
    print(f"volume {'x'.join(map(str, args.shape))}, windows {args.window}^3, overlap "
          f"{args.overlap} (sfg: border {prepared['border']}, crop blending), "
          f"{args.batch} window(s) per call; sample: K = {args.mc_samples}", flush=True)
    roof = measure(args, work, prepared, "matmul")["gflops"]
    print(f"float32 matmul, 4096^2, TensorFlow (the roof): {roof:.1f} GFLOP/s", flush=True)
    results = {}
    for model in args.models:
        results[model] = measure(args, work, prepared, model)
        window = results[model].get("window")
        print(f"  {model:>6}: {results[model]['seconds']:8.1f} s, peak "
              f"{results[model]['peak_mb']:7.0f} MB"
              + (f", windows of {'x'.join(map(str, window))}" if window else ""), flush=True)
    reference = results.get("monai")
    print(f"\n{'method':>8} {'seconds':>9} {'peak MB':>9} {'time / monai':>13} "
          f"{'MAC/voxel':>10} {'window voxels':>14} {'GFLOP/s':>8} {'of roof':>8}")
    for model, result in results.items():
        ratio = f"{result['seconds'] / reference['seconds']:.2f}" if reference else "-"
        gflops = 2 * result["multiply_adds"] * result["window_voxels"] / result["seconds"] / 1e9
        print(f"{model:>8} {result['seconds']:9.1f} {result['peak_mb']:9.0f} {ratio:>13} "
              f"{result['multiply_adds']:10,d} {result['window_voxels']:14,d} "
              f"{gflops:8.1f} {gflops / roof:8.0%}")
    if reference and "map" in results:
        print(f"ratio sfg/monai: {results['map']['seconds'] / reference['seconds']:.2f}")
    if reference and "large" in results:
        print(f"ratio sfg large windows/monai: "
              f"{results['large']['seconds'] / reference['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
