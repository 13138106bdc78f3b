"""How the tasks' gradients on each kernel agree in a hard-shared network.

The diagnostic behind `[SFG] allocation = agreement` (docs/results.md): train the
relatedness pair (configs/relatedness_2d.ini at half width) with every SFG kernel in the
shared group for N iterations, then, over 20 batches at the trained weights, per SFG layer
and kernel k: each task's gradient energy on the kernel's weights (sum of squares over the
layer's convolutions) and the cosine between the two tasks' gradients (mean dot product
over the geometric mean of the energies). Prints, per layer, the quantiles of that cosine.

    python scripts/make_phantoms.py --out data/relatedness --subjects 40 --seed 1 --relatedness 1
    python scripts/experiments/agreement_probe.py data/relatedness 150 runs/probe_r1
"""
from __future__ import annotations

import argparse
import configparser
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("KERAS_HOME", str(Path.home() / ".keras"))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BATCHES = 20
SETTINGS = {"NETWORK.layer_scale": "0.5", "NETWORK.batch_size": "8",
            "NETWORK.sampling_map": "LABEL", "TRAINING.validation_every_n": "0",
            "TRAINING.exclude_fraction_for_validation": "0",
            "TRAINING.exclude_fraction_for_inference": "0.2",
            # every kernel shared from the first step: a hard-shared network
            "SFG.init": "(0.001, 0.001, 0.998)", "SFG.prior": "(0.001, 0.001, 0.998)",
            "SFG.learn_probabilities": "false", "SFG.warmup_iter": "0"}


def write_config(data: Path, iterations: int, model_dir: Path) -> Path:
    config = configparser.ConfigParser()
    config.optionxform = str
    config.read(REPO / "configs" / "relatedness_2d.ini")
    for section in config.sections():
        if "path_to_search" in config[section]:
            config[section]["path_to_search"] = str(data.resolve())
    config["SYSTEM"]["model_dir"] = str(model_dir.resolve())
    values = dict(SETTINGS, **{"TRAINING.max_iter": str(iterations),
                               "TRAINING.save_every_n": str(iterations),
                               "SFG.finetune_iter": str(iterations)})
    for name, value in values.items():
        section, key = name.split(".")
        config[section][key] = value
    path = model_dir.with_suffix(".ini")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        config.write(handle)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="phantoms made with --relatedness")
    parser.add_argument("iterations", type=int)
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from sfg_app import commands
    from sfg_app.config import load_settings
    from sfg_app.engine.state import TrainingOptions
    from sfg_app.engine.training import TrainingDriver

    settings = load_settings(write_config(args.data, args.iterations, args.model_dir))
    application = commands.make_application(settings)
    state = TrainingDriver(application, TrainingOptions.from_settings(settings)).run()
    model = state.model
    layers = model.grouped_kernels()
    flat = [v for layer in layers for v in layer]
    batches = iter(application.training_dataset(8, 10_000))
    energy = [np.zeros((2, v[0].shape[-1])) for v in layers]
    dots = [np.zeros(v[0].shape[-1]) for v in layers]
    for _ in range(BATCHES):
        batch = next(batches)
        with tf.GradientTape(persistent=True) as tape:
            outputs = model(application.network_inputs(batch), training=True)
            _, _, (terms, _) = application.loss_parts(model, state.objective, outputs, batch)
        per_task = [tape.gradient(term, flat) for term in terms.values()]
        del tape
        start = 0
        for i, layer in enumerate(layers):
            grads = [g[start:start + len(layer)] for g in per_task]
            start += len(layer)
            for t in range(2):
                energy[i][t] += sum(tf.reduce_sum(tf.reshape(g * g, (-1, g.shape[-1])), 0)
                                    .numpy() for g in grads[t]) / BATCHES
            dots[i] += sum(tf.reduce_sum(tf.reshape(a * b, (-1, a.shape[-1])), 0).numpy()
                           for a, b in zip(grads[0], grads[1])) / BATCHES
    print(f"tasks {list(terms)}; cosine of their gradients per kernel, by SFG layer:")
    for i in range(len(layers)):
        cosine = dots[i] / np.sqrt(energy[i][0] * energy[i][1] + 1e-30)
        q10, q50, q90 = np.quantile(cosine, [0.1, 0.5, 0.9])
        print(f"sfg_{i}: {len(cosine)} kernels, cosine q10 {q10:+.2f} median {q50:+.2f} "
              f"q90 {q90:+.2f}; above 0.3: {np.mean(cosine > 0.3):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
