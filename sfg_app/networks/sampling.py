"""Test-time sampling of architectures: the mean output and its variance across samples.

The variance across architectures drawn from q is the architecture uncertainty that
inference writes as a map (SFG.md, "At test time").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from keras import ops

from sfg_app.layers import arguments


def sample_statistics(model, inputs, num_samples: int,
                      transforms: Mapping[str, Callable] | None = None,
                      predict: Callable | None = None) -> dict[str, tuple]:
    """``{task: (mean, variance)}`` (numpy float32) over ``num_samples`` architectures.

    The model is put in ``sample`` mode for the draws (one architecture per draw for the
    whole batch, or per example if the network samples so) and its previous mode is
    restored afterwards. ``transforms`` maps a task to a function applied to its output
    before the statistics (e.g. ``keras.ops.softmax`` to average probabilities rather
    than logits). ``predict(inputs)`` replaces ``model(inputs, training=False)``, e.g. by
    a compiled function traced in ``sample`` mode. The variance is the population
    variance (divided by ``num_samples``), computed with Welford's update in float64.
    """
    arguments.positive_int(num_samples, "num_samples")
    transforms = dict(transforms or {})
    predict = predict or (lambda x: model(x, training=False))
    previous = model.architecture
    model.set_architecture("sample")
    try:
        means: dict[str, np.ndarray] = {}
        squares: dict[str, np.ndarray] = {}
        for count in range(1, num_samples + 1):
            for task, output in predict(inputs).items():
                if task in transforms:
                    output = transforms[task](output)
                value = ops.convert_to_numpy(ops.cast(output, "float32")).astype(np.float64)
                mean = means.get(task, np.zeros_like(value))
                delta = value - mean
                means[task] = mean + delta / count
                squares[task] = squares.get(task, 0.0) + delta * (value - means[task])
    finally:
        model.set_architecture(previous)
    return {task: (means[task].astype(np.float32),
                   (squares[task] / num_samples).astype(np.float32)) for task in means}
