"""`[SYSTEM] strategy` and `mixed_precision`: where and in which precision a run computes.

All distribution goes through `tf.distribute`; nothing here moves tensors by hand.
"""

from __future__ import annotations

import contextlib
import json
import os

import keras
import tensorflow as tf

from sfg_app.errors import ConfigError

_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named by `[SYSTEM] strategy`.

    `mirrored` replicates over the local GPUs, or over the logical CPU devices when
    there is no GPU (one, unless the process configured more);
    `multi_worker` reads the cluster from the `TF_CONFIG` environment variable, as every
    TensorFlow multi-worker job does, and must be created before any other TF work.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise ConfigError(
                "[SYSTEM] strategy = multi_worker needs the TF_CONFIG environment variable "
                "describing the cluster, e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
                "[\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", "
                "\"index\": 0}}' on the first machine and index 1 on the second.")
        try:
            json.loads(raw)
        except json.JSONDecodeError as error:
            raise ConfigError(f"TF_CONFIG is not valid JSON ({error}). "
                              f"Received TF_CONFIG={raw!r}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"[SYSTEM] strategy: expected one of default, mirrored, multi_worker. "
                      f"Received {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, summaries and outputs.

    In a multi-worker run every worker takes part in saving (the collective ops need
    them all), but only the chief's files are kept.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


@contextlib.contextmanager
def dtype_policy(mixed_precision: str):
    """Build layers under the Keras dtype policy of `[SYSTEM] mixed_precision`.

    Keras reads the policy when a layer is created, so it is set only while the model is
    built and restored afterwards: nothing global outlives the build.
    """
    if mixed_precision not in _POLICIES:
        raise ConfigError("[SYSTEM] mixed_precision: expected one of "
                          f"{', '.join(_POLICIES)}. Received {mixed_precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_POLICIES[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def distributed_dataset(state, make, steps: int | None = None):
    """`make(batch_size, shard_index, shard_count)` as a dataset of the strategy of
    `state` (a `TrainingState`: its `strategy` and `global_batch_size`).

    Each input pipeline (one per worker) builds only its own shard, batched per replica,
    so a distributed run does not make every window on every worker. `steps` limits the
    dataset to that many steps of the strategy (each takes a batch per local replica).
    """
    def per_pipeline(context: tf.distribute.InputContext):
        batch = context.get_per_replica_batch_size(state.global_batch_size)
        dataset = make(batch, context.input_pipeline_id, context.num_input_pipelines)
        if steps is not None:
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
            dataset = dataset.take(steps * local_replicas)
        return dataset

    return state.strategy.distribute_datasets_from_function(per_pipeline)
