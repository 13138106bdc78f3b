"""The training window source as a ``tf.data.Dataset`` (the one TensorFlow file of data).

Windows are computed by the numpy source in a :class:`~sfg_app.data.windows.WindowStream`
(its own pool of workers and bounded queue: TensorFlow's own threads never run the
augmentation), handed to ``tf.data`` by a generator, batched and prefetched. Because a
window is a function of ``(seed, index)`` and the stream yields indices in order, the
batches are the same for any ``num_threads`` and worker kind.

Usage::

    with TrainingWindows(source, batch_size=2, num_threads=2, queue_length=8) as windows:
        for batch in windows.dataset.take(steps):
            ...

Leaving the block (or ``close()``) stops the workers, also those of iterators that were
abandoned before their end.
"""

from __future__ import annotations

import os
import threading

import tensorflow as tf

from sfg_app.arguments import integer
from sfg_app.data.windows import WindowSource, WindowStream, choose_worker_kind


def window_signature(source: WindowSource) -> dict:
    """The ``tf.TensorSpec`` structure of one window of ``source``."""
    spec = {name: tf.TensorSpec(shape, tf.as_dtype(dtype))
            for name, (shape, dtype) in source.sections.items()}
    spec["available"] = {name: tf.TensorSpec((), tf.float32) for name in source.sections}
    spec["location"] = tf.TensorSpec((6,), tf.int32)
    spec["subject"] = tf.TensorSpec((), tf.int32)
    return spec


class TrainingWindows:
    """Batches of windows ``start, start + 1, ...`` as ``self.dataset`` (endless unless
    ``stop``); batches of exactly ``batch_size`` (a last partial batch is dropped).

    ``num_threads``: workers (0: windows computed in TensorFlow's generator thread).
    ``queue_length``: windows computed ahead of the batching, at most (default
    ``max(2 * num_threads, batch_size)``). ``prefetch``: batches TensorFlow keeps ready.
    ``worker_kind``: ``thread`` or ``process`` (``spawn``ed; give the source a ``disk``
    cache). On 2 cores they are within 10 % of each other (64^3 and 96^3 windows,
    ``scripts/bench/bench_pipeline.py``); threads share one GIL, so with many workers
    (a GPU host) processes scale further; training picks one with
    :func:`resolve_worker_kind`.
    ``start``: the first window index, e.g. ``iteration * batch_size`` when resuming;
    ``step``: the stride between window indices (one input pipeline's share).
    """

    def __init__(self, source: WindowSource, *, batch_size: int, num_threads: int = 0,
                 queue_length: int | None = None, worker_kind: str = "thread",
                 start: int = 0, stop: int | None = None, step: int = 1, prefetch: int = 2):
        self.source = source
        self.batch_size = integer(batch_size, "batch_size", 1)
        self._stream_arguments = dict(
            start=start, stop=stop, step=step, num_threads=num_threads, worker_kind=worker_kind,
            queue_length=(queue_length if queue_length is not None
                          else max(2 * num_threads, self.batch_size)))
        WindowStream(source, **self._stream_arguments).close()  # checks the arguments now
        self._streams: set[WindowStream] = set()
        self._lock = threading.Lock()
        self.dataset = (tf.data.Dataset.from_generator(self._windows,
                                                       output_signature=window_signature(source))
                        .batch(self.batch_size, drop_remainder=True)
                        .prefetch(integer(prefetch, "prefetch", 0)))

    def _windows(self):
        stream = WindowStream(self.source, **self._stream_arguments)
        with self._lock:
            self._streams.add(stream)
        try:
            yield from stream
        finally:
            stream.close()
            with self._lock:
                self._streams.discard(stream)

    def close(self) -> None:
        """Stops and joins every worker this dataset started."""
        with self._lock:
            streams, self._streams = list(self._streams), set()
        for stream in streams:
            stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def resolve_worker_kind(setting: str, num_threads: int, cache: str) -> tuple[str, str]:
    """``[SYSTEM] worker_kind`` on this machine (the rule: ``choose_worker_kind``), and the
    line training logs about it. The step runs on a GPU when TensorFlow sees one (the
    strategies place it there); the cores are those this process may run on, which a
    scheduler or ``taskset`` can make fewer than the machine's."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    kind, why = choose_worker_kind(setting, num_threads, cache=cache, cpu_count=cores,
                                   step_on_gpu=bool(tf.config.list_physical_devices("GPU")))
    if num_threads == 0:
        return kind, f"data: no workers ({why})"
    return kind, f"data: {num_threads} {kind} worker{'s' if num_threads > 1 else ''} ({why})"


def validation_windows(source: WindowSource, *, num_windows: int, batch_size: int,
                       num_threads: int = 0) -> tf.data.Dataset:
    """The same fixed-size batches at every validation round: windows ``0 .. n - 1`` of
    ``source`` (give it the validation subjects, no augmenter, a fixed seed), ``n`` being
    ``num_windows`` rounded up to whole batches. Kept in memory once computed."""
    batch_size = integer(batch_size, "batch_size", 1)
    count = -(-integer(num_windows, "num_windows", 1) // batch_size) * batch_size
    with WindowStream(source, stop=count, num_threads=num_threads) as stream:
        windows = list(stream)
    return (tf.data.Dataset.from_generator(lambda: iter(windows),
                                           output_signature=window_signature(source))
            .batch(batch_size, drop_remainder=True))
