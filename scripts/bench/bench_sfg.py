"""Training-step time of the dense network against SFG (fused and reference), side by side.

The dense twin is ``hard_shared`` with the same two heads (the trunk of ``highres3dnet``
with one 1x1 head per task), so all three networks have the same widths and outputs. Each
model runs ``--warmup`` steps, then ``--steps`` timed ones, the models taking turns; the
medians are printed with their ratios to the dense step, the last line being
``ratio fused/dense: X.XX``.

    flock -x /tmp/sfg_cpu.lock python scripts/bench/bench_sfg.py            # TF, CPU, 48^3
    python scripts/bench/bench_sfg.py --backend torch --device cuda --window 96 --batch 2 \
        --models dense fused reference monai --dtype mixed_bfloat16

``monai`` (torch backend only; ``pip install monai``) is MONAI's own HighResNet with its
default layers and one output of 5 channels (the two tasks' 4 + 1), trained by a plain
PyTorch step with the same loss, under ``torch.autocast`` in bfloat16 when ``--dtype`` is
mixed: the reference point of an established PyTorch implementation.

On CPU it must run alone (``flock -x``): timings beside other work mean nothing.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = ("dense", "fused", "reference", "monai")
TASK_CHANNELS = {"segmentation": 4, "synthesis": 1}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("tensorflow", "torch"), default="tensorflow")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--window", type=int, default=48, help="cubic window side (64: 64^3)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "mixed_bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--layer-scale", type=float, default=1.0)
    parser.add_argument("--norm", choices=("instance", "batch", "none"), default="instance",
                        help="norm_layer of every model (the config's default: instance)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS[:3]))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "monai" in args.models and args.backend != "torch":
        parser.error("--models monai needs --backend torch (MONAI is a PyTorch library)")
    return args


def configure(args) -> None:
    """Backend and device are chosen by the environment, before Keras is imported."""
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("KERAS_HOME", str(REPO / ".keras_home"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def build_model(name: str, args):
    import keras

    from sfg_app.layers.grouping import GroupingConfig
    from sfg_app.networks.hard_shared import HardSharedHighRes3DNet
    from sfg_app.networks.heads import HeadSpec
    from sfg_app.networks.highres3dnet import SFGHighRes3DNet

    heads = {task: HeadSpec("voxel", channels) for task, channels in TASK_CHANNELS.items()}
    options = dict(layer_scale=args.layer_scale, norm_layer=args.norm)
    if name == "dense":
        model = HardSharedHighRes3DNet(heads, **options)
    else:
        # The paper's grouping, as the recorded figures measured it (GroupingConfig's
        # defaults are the schema's recipe since issue 21).
        grouping = GroupingConfig(impl=name, anneal_rate=1e-4, init="uniform",
                                  prior="uniform", tau_min=0.05, logit_lr_multiplier=1.0,
                                  warmup_iter=0, norm_parameters="per_group")
        model = SFGHighRes3DNet(heads, grouping=grouping, seed=args.seed, **options)
    model.build((args.batch,) + (args.window,) * 3 + (1,))
    return model, keras.optimizers.Adam(1e-4)


def loss_fn(model, outputs, targets):
    from keras import ops

    total = model.grouping_kl() * 1e-4
    for task, output in outputs.items():
        total = total + ops.mean(ops.square(output - targets[task]))
    return total


def make_monai_step(args):
    """MONAI's HighResNet trained by a plain PyTorch step on the same loss."""
    import torch
    from monai.networks.nets import HighResNet

    device = torch.device(args.device)
    model = HighResNet(spatial_dims=3, in_channels=1,
                       out_channels=sum(TASK_CHANNELS.values())).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    bfloat16 = args.dtype == "mixed_bfloat16"

    def step(inputs, targets):
        target = torch.cat([targets[task] for task in TASK_CHANNELS], dim=-1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
            output = model(inputs.movedim(-1, 1)).movedim(1, -1)
        loss = torch.mean(torch.square(output.float() - target))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def make_step(model, optimizer, backend: str):
    """One training step: forward, loss, gradients, update, returning the loss."""
    step_variable = getattr(model, "grouping_step", None)
    variables = model.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=False)
        def step(inputs, targets):
            if step_variable is not None:
                step_variable.assign(tf.cast(optimizer.iterations, step_variable.dtype))
            with tf.GradientTape() as tape:
                loss = loss_fn(model, model(inputs, training=True), targets)
                scaled = optimizer.scale_loss(loss)
            optimizer.apply(tape.gradient(scaled, variables), variables)
            return loss

        return step

    def step(inputs, targets):
        if step_variable is not None:
            step_variable.assign(optimizer.iterations)
        loss = loss_fn(model, model(inputs, training=True), targets)
        model.zero_grad()
        optimizer.scale_loss(loss).backward()
        optimizer.apply([v.value.grad for v in variables], variables)
        return loss

    return step


def time_models(args) -> dict[str, list[float]]:
    """Step times per model, the models taking turns step by step so that a drift of
    the machine (clock, caches, allocator) hits all of them alike."""
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(args.seed)
    shape = (args.batch,) + (args.window,) * 3
    inputs = ops.convert_to_tensor(rng.standard_normal(shape + (1,), np.float32))
    targets = {task: ops.convert_to_tensor(rng.standard_normal(shape + (channels,),
                                                               np.float32))
               for task, channels in TASK_CHANNELS.items()}
    steps = {name: make_monai_step(args) if name == "monai"
             else make_step(*build_model(name, args), args.backend)
             for name in args.models}
    sync = _synchroniser(args)
    times = {name: [] for name in args.models}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            float(ops.convert_to_numpy(step(inputs, targets)))
            sync()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _synchroniser(args):
    if args.backend == "torch" and args.device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def main(argv=None) -> int:
    args = parse_args(argv)
    configure(args)
    import keras

    keras.mixed_precision.set_global_policy(args.dtype)
    keras.utils.set_random_seed(args.seed)
    print(f"backend {args.backend} on {args.device}, window {args.window}^3, batch "
          f"{args.batch}, {args.dtype}, layer_scale {args.layer_scale}, 2 tasks; "
          f"medians of {args.steps} steps after {args.warmup} warm-up steps")
    medians = {}
    for name, times in time_models(args).items():
        medians[name] = statistics.median(times)
        print(f"{name:>9}: median {medians[name]:.3f} s/step  "
              f"(steps: {', '.join(f'{t:.3f}' for t in times)})", flush=True)
    if "monai" in medians:
        for name in ("dense", "reference", "fused"):
            if name in medians:
                print(f"ratio {name}/monai: {medians[name] / medians['monai']:.2f}")
    if "dense" in medians:
        for name in ("reference", "fused"):
            if name in medians:
                print(f"ratio {name}/dense: {medians[name] / medians['dense']:.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
