"""The tf.data adapter: batches, determinism across workers, bounded queue, shutdown."""

import multiprocessing
import threading

import numpy as np
import pytest
import tensorflow as tf

from sfg_app.data.cache import VolumeCache
from sfg_app.data.tf_adapter import TrainingWindows, validation_windows, window_signature
from window_helpers import CountingSource, make_source, make_subjects


def _batches(dataset, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch)
            for batch in dataset.take(count)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def _worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("sfg-windows")]


def test_batches_have_the_window_shapes_and_dtypes():
    source = make_source()
    with TrainingWindows(source, batch_size=3) as windows:
        (batch,) = _batches(windows.dataset, 1)
    assert batch["MR"].shape == (3, 6, 6, 4, 2) and batch["MR"].dtype == np.float32
    assert batch["LABEL"].shape == (3, 6, 6, 4, 1) and batch["LABEL"].dtype == np.int32
    assert batch["AGE"].shape == (3, 1)
    assert batch["available"]["CT"].shape == (3,) and batch["location"].shape == (3, 6)
    assert batch["subject"].dtype == np.int32
    spec = window_signature(source)
    assert spec["MR"].shape == (6, 6, 4, 2) and spec["LABEL"].dtype == tf.int32


def test_same_seed_same_batches_with_zero_two_threads_and_two_processes(tmp_path):
    subjects = make_subjects()
    expected = None
    for threads, kind in [(0, "thread"), (2, "thread"), (2, "process")]:
        cache = VolumeCache(subjects.__getitem__, len(subjects), cache="disk",
                            folder=tmp_path, fingerprint="test")
        with TrainingWindows(make_source(cache), batch_size=2, num_threads=threads,
                             worker_kind=kind, queue_length=4) as windows:
            got = _batches(windows.dataset, 4)
        if expected is None:
            expected = got
        else:
            _assert_same(got, expected)
    assert not multiprocessing.active_children()
    assert not _worker_threads()


def test_start_continues_the_sequence_after_a_resume():
    source = make_source()
    with TrainingWindows(source, batch_size=2) as whole:
        batches = _batches(whole.dataset, 3)
    with TrainingWindows(source, batch_size=2, start=4) as resumed:
        _assert_same(_batches(resumed.dataset, 1), batches[2:])


def test_workers_compute_a_bounded_number_of_windows_ahead():
    counting = CountingSource(make_source())
    counting.sections = counting.source.sections  # what window_signature reads
    batch_size, queue_length, prefetch = 2, 3, 1
    with TrainingWindows(counting, batch_size=batch_size, num_threads=2,
                         queue_length=queue_length, prefetch=prefetch) as windows:
        iterator = iter(windows.dataset)
        for consumed in range(1, 6):
            next(iterator)
            # consumed batches, those prefetched, the one being batched, and the queue
            bound = (consumed + prefetch + 1) * batch_size + queue_length
            assert counting.computed <= bound
        del iterator


def test_close_ends_workers_of_an_abandoned_iterator():
    source = make_source()
    windows = TrainingWindows(source, batch_size=2, num_threads=2)
    iterator = iter(windows.dataset)
    next(iterator)
    assert _worker_threads()
    windows.close()
    assert not _worker_threads()
    del iterator


def test_process_workers_end_on_close(tmp_path):
    subjects = make_subjects()
    cache = VolumeCache(subjects.__getitem__, len(subjects), cache="disk", folder=tmp_path)
    windows = TrainingWindows(make_source(cache), batch_size=2, num_threads=2,
                              worker_kind="process")
    iterator = iter(windows.dataset)
    next(iterator)
    assert len(multiprocessing.active_children()) == 2
    windows.close()
    assert not multiprocessing.active_children()
    del iterator


def test_validation_batches_are_fixed():
    source = make_source(augment=False, seed=9)
    dataset = validation_windows(source, num_windows=5, batch_size=2)
    first, second = _batches(dataset, 10), _batches(dataset, 10)
    assert len(first) == 3 and all(b["MR"].shape[0] == 2 for b in first)
    _assert_same(first, second)
    np.testing.assert_array_equal(first[0]["MR"][1], source(1)["MR"])


def test_bad_arguments_fail_before_any_worker_starts():
    with pytest.raises(ValueError, match=r"`batch_size`.*batch_size=0"):
        TrainingWindows(make_source(), batch_size=0)
    with pytest.raises(ValueError, match=r"`num_threads`.*num_threads=-1"):
        TrainingWindows(make_source(), batch_size=1, num_threads=-1)
    assert not _worker_threads()
