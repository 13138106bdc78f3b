"""The training window source, its stream of workers, and the volume cache."""

import pickle
import threading

import numpy as np
import pytest

from sfg_app.data.cache import VolumeCache
from sfg_app.data.samplers import UniformSampler
from sfg_app.data.windows import WindowStream
from sfg_app.errors import ConfigError, DataError
from window_helpers import CountingSource, make_source, make_subjects


def assert_windows_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key])


def test_window_layout_dtypes_and_availability():
    source = make_source()
    window = source(0)
    assert window["MR"].shape == (6, 6, 4, 2) and window["MR"].dtype == np.float32
    assert window["LABEL"].shape == (6, 6, 4, 1) and window["LABEL"].dtype == np.int32
    assert window["CT"].shape == (6, 6, 4, 1) and window["CT"].dtype == np.float32
    assert window["AGE"].shape == (1,) and window["AGE"].dtype == np.float32
    assert window["location"].dtype == np.int32 and window["location"].shape == (6,)
    assert window["subject"].dtype == np.int32
    for index in range(12):
        window = source(index)
        subject = int(window["subject"])
        lacks_ct = subject == 2
        assert window["available"] == {"MR": 1.0, "LABEL": 1.0, "AGE": 1.0,
                                       "CT": 0.0 if lacks_ct else 1.0}
        if lacks_ct:
            assert not window["CT"].any()
        assert window["AGE"][0] == 20.0 + subject  # per-subject value passed through


def test_windows_are_a_function_of_seed_and_index_only():
    one, two = make_source(), make_source()
    for index in (5, 0, 3, 11, 3):  # any order, any instance
        assert_windows_equal(one(index), two(index))
    assert not np.array_equal(one(0)["MR"], make_source(seed=4)(0)["MR"])


def test_consecutive_windows_share_a_subject_and_rounds_visit_all():
    source = make_source(sample_per_volume=3)
    subjects = [int(source(i)["subject"]) for i in range(18)]
    blocks = [subjects[i:i + 3] for i in range(0, 18, 3)]
    assert all(len(set(block)) == 1 for block in blocks)
    rounds = [[b[0] for b in blocks[:3]], [b[0] for b in blocks[3:]]]
    assert all(sorted(r) == [0, 1, 2] for r in rounds)


def test_unaugmented_window_is_the_crop_at_its_location():
    subjects = make_subjects()
    source = make_source(subjects, augment=False, sampler=UniformSampler((6, 6, 4)))
    window = source(4)
    x0, y0, z0, x1, y1, z1 = window["location"]
    subject = subjects[int(window["subject"])]
    np.testing.assert_array_equal(window["MR"], subject["MR"][x0:x1, y0:y1, z0:z1])
    np.testing.assert_array_equal(window["LABEL"], subject["LABEL"][x0:x1, y0:y1, z0:z1])


def test_inconsistent_sections_are_data_errors():
    subjects = make_subjects()
    subjects[1]["MR"] = subjects[1]["MR"][..., :1]
    with pytest.raises(DataError, match=r"'MR' of subject 1 is a volume of 1 channels.*2"):
        make_source(subjects)
    subjects = make_subjects()
    subjects[0]["location"] = subjects[0]["CT"]
    with pytest.raises(DataError, match=r"may not be named 'location'"):
        make_source(subjects)
    with pytest.raises(ConfigError, match=r"`sample_per_volume`.*Received sample_per_volume=0"):
        make_source(sample_per_volume=0)


def test_a_sampler_error_names_the_subject():
    subjects = make_subjects()
    subjects[1]["LABEL"] = subjects[1]["LABEL"].astype(np.float32) + 0.5
    source = make_source(subjects, sample_per_volume=1)
    with pytest.raises(DataError, match=r"Subject 1: .*integer class labels"):
        for index in range(6):
            source(index)


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_stream_yields_the_same_windows_for_any_worker_count(threads):
    source = make_source()
    expected = [source(i) for i in range(5, 13)]
    with WindowStream(source, start=5, stop=13, num_threads=threads) as stream:
        got = list(stream)
    assert len(got) == 8
    for a, b in zip(got, expected):
        assert_windows_equal(a, b)


@pytest.mark.parametrize("threads", [0, 2])
def test_strided_streams_share_the_sequence_between_pipelines(threads):
    source = make_source()
    streams = [WindowStream(source, start=4 + p, stop=16, step=3, num_threads=threads)
               for p in range(3)]
    got = {}
    for p, stream in enumerate(streams):
        with stream:
            got.update({4 + p + 3 * k: window for k, window in enumerate(stream)})
    assert sorted(got) == list(range(4, 16))
    for index, window in got.items():
        assert_windows_equal(window, source(index))


def test_stream_computes_at_most_queue_length_ahead():
    counting = CountingSource(make_source())
    stream = WindowStream(counting, num_threads=2, queue_length=3)
    try:
        for consumed in range(1, 10):
            next(stream)
            assert stream.ahead <= 3
            assert counting.computed <= consumed + 3
    finally:
        stream.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sfg-windows")]


def test_stream_arguments_are_checked():
    with pytest.raises(ConfigError, match=r"`worker_kind`.*thread, process.*'fork'"):
        WindowStream(make_source(), num_threads=1, worker_kind="fork")
    with pytest.raises(ConfigError, match=r"`queue_length`.*>= 1.*queue_length=0"):
        WindowStream(make_source(), num_threads=1, queue_length=0)


def test_disk_cache_writes_once_and_reopens_as_memmaps(tmp_path):
    subjects = make_subjects()
    calls = []

    def loader(index):
        calls.append(index)
        return subjects[index]

    cache = VolumeCache(loader, 3, cache="disk", folder=tmp_path, fingerprint="a").fill()
    assert calls == [0, 1, 2]
    assert isinstance(cache[1]["MR"], np.memmap)
    np.testing.assert_array_equal(cache[1]["MR"], subjects[1]["MR"])
    assert cache[0]["LABEL"].dtype == np.int16
    state = pickle.dumps(cache)
    assert len(state) < 2000  # the folder, not the volumes
    copy = pickle.loads(state)
    assert copy.loader is None and isinstance(copy[2]["MR"], np.memmap)
    reused = VolumeCache(loader, 3, cache="disk", folder=tmp_path, fingerprint="a").fill()
    assert calls == [0, 1, 2] and reused[0].keys() == subjects[0].keys()
    VolumeCache(loader, 3, cache="disk", folder=tmp_path, fingerprint="b").fill()
    assert calls == [0, 1, 2, 0, 1, 2]  # other preprocessing: made again
    assert not list(tmp_path.rglob("*.tmp*"))


def test_memory_and_uncached_modes():
    subjects = make_subjects()
    calls = []

    def loader(index):
        calls.append(index)
        return {"MR": subjects[index]["MR"].astype(np.float64)}

    memory = VolumeCache(loader, 3)
    assert memory[1]["MR"].dtype == np.float32 and memory[1] is memory[1]
    assert calls == [1]
    uncached = VolumeCache(loader, 3, cache="none")
    uncached[0], uncached[0]
    assert calls == [1, 0, 0]
    with pytest.raises(ConfigError, match=r"`cache`.*memory, disk, none.*'ram'"):
        VolumeCache(loader, 3, cache="ram")
    with pytest.raises(ConfigError, match=r"`folder`.*disk"):
        VolumeCache(loader, 3, cache="disk")
    with pytest.raises(IndexError, match="Subject 3"):
        memory[3]
