"""Training windows: a deterministic function of ``(seed, index)``, and a stream of them.

Window ``index`` depends on nothing but the seed and the index (not on which worker
computes it or what was computed before), so any number of workers yields the same
sequence, and a resumed run continues it from the index where it stopped. Windows
``n * k`` to ``n * k + n - 1`` (``n = sample_per_volume``) come from one subject; the
subjects are visited in a new random order every round.

A window is a dict::

    {section: (X, Y, Z, C) array,        # float32; label sections int32
     value_section: (C,) float32,        # per-subject values (image-level targets)
     "available": {section: 1.0 or 0.0}, # 0.0: the subject lacks it, zeros stand in
     "location": int32 (6,),             # [x0, y0, z0, x1, y1, z1] in the volume
     "subject": int32}                   # position of the subject in the source
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import threading
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from sfg_app.data.augmentation import Augmenter
from sfg_app.data.cache import VolumeCache, as_subjects
from sfg_app.arguments import integer, invalid
from sfg_app.data.samplers.base import RESERVED_KEYS, SamplingPlan, WindowSampler, crop
from sfg_app.errors import ConfigError, DataError


class WindowSource:
    """``source(index)`` -> one training window; see the module's docstring.

    ``subjects``: preprocessed subjects (a :class:`VolumeCache` or a list of dicts).
    ``label_sections``: sections whose windows are int32 labels (also resampled with
    nearest neighbour by the augmenter, which is told the same names).
    ``plan_cache_size``: per process, how many subjects keep their sampling plan
    (tiny for uniform / weighted / balanced; the resized volumes for resize).
    """

    def __init__(self, subjects: Sequence[Mapping[str, np.ndarray]] | VolumeCache, *,
                 sampler: WindowSampler, augmenter: Augmenter | None = None,
                 label_sections: Collection[str] = (), sample_per_volume: int = 1,
                 seed: int = 0, plan_cache_size: int = 16):
        self.subjects = as_subjects(subjects)
        self.sampler, self.augmenter = sampler, augmenter
        self.label_sections = frozenset(label_sections)
        self.sample_per_volume = integer(sample_per_volume, "sample_per_volume", 1)
        self.seed = integer(seed, "seed", 0)
        self.plan_cache_size = integer(plan_cache_size, "plan_cache_size", 1)
        self.sections = self._sections()
        self._reset_caches()

    def _reset_caches(self):
        self._plans: collections.OrderedDict[int, SamplingPlan] = collections.OrderedDict()
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self):  # plans and locks are rebuilt in each worker process
        state = self.__dict__.copy()
        for key in ("_plans", "_orders", "_lock"):
            del state[key]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_caches()

    def _sections(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Every section some subject has, with its window shape and dtype."""
        found: dict[str, tuple[str, int]] = {}
        for index in range(len(self.subjects)):
            for name, array in self.subjects[index].items():
                if name in RESERVED_KEYS:
                    raise DataError(f"A section may not be named {name!r}: windows use that "
                                    f"key. Rename the section (reserved: {RESERVED_KEYS}).")
                if array.ndim not in (1, 4):
                    raise DataError(f"Section {name!r} of subject {index} has shape "
                                    f"{array.shape}. Expected a volume (X, Y, Z, C) or a "
                                    "vector (C,) of per-subject values.")
                kind = ("volume" if array.ndim == 4 else "vector", array.shape[-1])
                first = found.setdefault(name, kind)
                if first != kind:
                    raise DataError(f"Section {name!r} of subject {index} is a {kind[0]} of "
                                    f"{kind[1]} channels, but a {first[0]} of {first[1]} "
                                    "channels in an earlier subject. Check the section's files.")
        window = self.sampler.window_size
        return {name: (window + (channels,) if kind == "volume" else (channels,),
                       np.dtype(np.int32 if name in self.label_sections else np.float32))
                for name, (kind, channels) in found.items()}

    def subject_of(self, index: int) -> int:
        """The subject that window ``index`` is cut from."""
        block = index // self.sample_per_volume
        round_, position = divmod(block, len(self.subjects))
        order = self._orders.get(round_)
        if order is None:
            order = np.random.default_rng([self.seed, 0, round_]).permutation(len(self.subjects))
            if len(self._orders) > 4:
                self._orders.clear()
            self._orders[round_] = order
        return int(order[position])

    def plan(self, subject: int) -> SamplingPlan:
        """The subject's sampling plan, kept for the next windows of the subject."""
        with self._lock:
            plan = self._plans.get(subject)
            if plan is not None:
                self._plans.move_to_end(subject)
                return plan
        try:
            plan = self.sampler.prepare(self.subjects[subject])
        except DataError as error:
            raise DataError(f"Subject {subject}: {error}") from error
        with self._lock:
            self._plans[subject] = plan
            while len(self._plans) > self.plan_cache_size:
                self._plans.popitem(last=False)
        return plan

    def __call__(self, index: int) -> dict:
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"Window indices are non-negative integers. Received {index!r}.")
        subject = self.subject_of(int(index))
        plan = self.plan(subject)
        rng = np.random.default_rng([self.seed, 1, int(index)])
        location = plan.draw(1, rng)[0]
        if self.augmenter is not None:
            arrays = self.augmenter.window(plan.arrays, location, rng)
        else:
            arrays = {name: crop(a, location[:3], location[3:]) if a.ndim == 4 else a
                      for name, a in plan.arrays.items()}
        window = {}
        for name, (shape, dtype) in self.sections.items():
            array = arrays.get(name)
            window[name] = (np.zeros(shape, dtype) if array is None
                            else np.asarray(array).astype(dtype, copy=False))
        window["available"] = {name: np.float32(name in arrays) for name in self.sections}
        window["location"] = location.astype(np.int32)
        window["subject"] = np.int32(subject)
        return window


# Worker processes hold the source here, set once by the pool's initializer.
_worker_source: WindowSource | None = None


def _install(source: WindowSource) -> None:
    global _worker_source
    _worker_source = source


def _window_in_worker(index: int) -> dict:
    return _worker_source(index)


WORKER_KINDS = ("thread", "process")


def choose_worker_kind(setting: str, num_threads: int, *, step_on_gpu: bool, cpu_count: int,
                       cache: str) -> tuple[str, str]:
    """``[SYSTEM] worker_kind`` resolved: the kind the workers are, and why (for the log).

    ``auto`` picks ``process`` only when every condition below holds, ``thread`` otherwise:

    - ``num_threads >= 2``: a single worker thread shares the GIL with no other worker,
      so a process of its own would remove no contention and would cost a copy of the
      source;
    - ``step_on_gpu``: the training step runs on an accelerator and leaves the cores to
      the pipeline. On a CPU-only machine the step's kernels use every core: extra
      processes only compete with them, and threads share the volumes without copies;
    - ``cpu_count > num_threads + 1``: a core for each worker and one for the driver (the
      training loop and tf.data);
    - ``cache == "disk"``: the processes reopen the cached volumes as memmaps and the
      page cache holds one copy for all of them. A ``memory`` cache is pickled whole to
      every process (``VolumeCache.fill`` then the pool's initializer): ``num_threads + 1``
      copies of the preprocessed dataset in RAM, all sent before the first window.
      Measured on ``bench_pipeline.py``'s 4 subjects of 160x160x96 voxels (2 cores,
      2 workers): a 138 MB pickle; each worker held 114 to 180 MB more private memory
      than with a disk cache, and the first windows came 1.3 s later (2.1 s against
      0.8 s); 100 such subjects would be 3.4 GB a worker. How large a dataset fits cannot
      be known before every subject is preprocessed, so ``auto`` never takes that risk.
      A ``none`` cache holds the data plan's loader, which cannot be sent to a process.

    An explicit ``process`` with ``cache = none`` is a ConfigError for that last reason.
    With ``num_threads = 0`` there are no workers, whatever the setting.
    """
    if setting not in ("auto",) + WORKER_KINDS:
        raise ConfigError(f"Invalid value for `[SYSTEM] worker_kind`. Expected one of auto, "
                          f"{', '.join(WORKER_KINDS)}. Received worker_kind={setting!r}.")
    if num_threads == 0:
        return "thread", "[SYSTEM] num_threads = 0: windows made in the input pipeline's thread"
    if setting == "process" and cache == "none":
        raise ConfigError("Invalid value for `[SYSTEM] worker_kind`. Process workers need "
                          "[NETWORK] cache = disk (or memory): a cache = none source cannot "
                          "be sent to a process. Received worker_kind='process' with "
                          "cache='none'.")
    if setting == "thread":
        return "thread", "[SYSTEM] worker_kind = thread"
    if setting == "process":
        return "process", "[SYSTEM] worker_kind = process" + (
            "; each process holds a copy of the memory cache" if cache == "memory" else "")
    if num_threads < 2:
        return "thread", "auto: one worker has no other worker to share the GIL with"
    if not step_on_gpu:
        return "thread", "auto: no GPU; the training step uses the CPU cores"
    if cpu_count <= num_threads + 1:
        return "thread", (f"auto: {cpu_count} cores, not more than {num_threads} workers "
                          "and the driver")
    if cache != "disk":
        return "thread", (f"auto: [NETWORK] cache = {cache}; set cache = disk for process "
                          "workers (a memory cache is copied into every process)")
    return "process", (f"auto: a GPU runs the training step and {cpu_count} cores leave one "
                       "to each worker and the driver; the disk cache is shared")


class WindowStream:
    """Windows ``start, start + step, ...`` (below ``stop``, or without end) in order.

    ``step`` > 1 gives one input pipeline of a distributed run its own share of the
    sequence: pipeline ``p`` of ``n`` takes ``start = first + p, step = n``.

    ``num_threads`` workers compute them (0: in the calling thread) and at most
    ``queue_length`` windows are ever computed ahead of the consumer, which bounds the
    memory. ``worker_kind``: ``thread`` (numpy and the interpolation release the GIL) or
    ``process`` (started with ``spawn``, never ``fork``, which is unsafe once TensorFlow
    runs threads; the source is sent once to each, so give it a ``disk`` cache).
    ``close()`` (or leaving a ``with`` block) stops and joins the workers.
    """

    def __init__(self, source: WindowSource, *, start: int = 0, stop: int | None = None,
                 step: int = 1, num_threads: int = 0, queue_length: int | None = None,
                 worker_kind: str = "thread"):
        self.source = source
        self.next_index = integer(start, "start", 0)
        self.stop = None if stop is None else integer(stop, "stop", 0)
        self.step = integer(step, "step", 1)
        workers = integer(num_threads, "num_threads", 0)
        if worker_kind not in WORKER_KINDS:
            raise invalid("worker_kind", worker_kind, f"one of {', '.join(WORKER_KINDS)}")
        self.queue_length = integer(queue_length if queue_length is not None
                                    else max(2 * workers, 1), "queue_length", 1)
        self._pending: collections.deque = collections.deque()
        self._submitted = self.next_index
        self._executor = None
        if workers and worker_kind == "thread":
            self._executor = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="sfg-windows")
            self._compute = source
        elif workers:
            if isinstance(source.subjects, VolumeCache):
                source.subjects.fill()
            self._executor = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_install, initargs=(source,))
            self._compute = _window_in_worker

    @property
    def ahead(self) -> int:
        """Windows submitted to the workers and not yet handed out."""
        return len(self._pending)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.stop is not None and self.next_index >= self.stop:
            raise StopIteration
        if self._executor is None:
            self.next_index += self.step
            return self.source(self.next_index - self.step)
        self._top_up()
        future = self._pending.popleft()
        self.next_index += self.step
        self._top_up()  # the freed place goes to a worker while the consumer waits
        return future.result()

    def _top_up(self):
        end = self.next_index + self.queue_length * self.step
        if self.stop is not None:
            end = min(end, self.stop)
        while self._submitted < end and self._executor is not None:
            self._pending.append(self._executor.submit(self._compute, self._submitted))
            self._submitted += self.step

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
