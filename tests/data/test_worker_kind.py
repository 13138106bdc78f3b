"""`[SYSTEM] worker_kind`: the rule of `auto`, the key, the notice, and the application's
workers. That process and thread workers give the same batches is pinned for the adapter
by test_tf_adapter.py's `test_same_seed_same_batches_with_zero_two_threads_and_two_processes`;
here it is checked once more through the application, which now chooses the kind."""

import multiprocessing
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from sfg_app.application.multitask import MultiTaskApplication
from sfg_app.config import settings_from_dict
from sfg_app.data import tf_adapter
from sfg_app.demo.phantoms import write_dataset
from sfg_app.data.windows import choose_worker_kind
from sfg_app.errors import ConfigError

GPU_HOST = dict(step_on_gpu=True, cpu_count=16, cache="disk")  # where auto picks process


@pytest.mark.parametrize("num_threads, changes, kind, why", [
    (4, {}, "process", r"auto: a GPU runs the training step and 16 cores"),
    (0, {}, "thread", r"\[SYSTEM\] num_threads = 0"),
    (1, {}, "thread", r"auto: one worker"),
    (4, {"step_on_gpu": False}, "thread", r"auto: no GPU; the training step uses the CPU"),
    (4, {"cpu_count": 5}, "thread", r"auto: 5 cores, not more than 4 workers and the driver"),
    (4, {"cpu_count": 6}, "process", r"auto: a GPU"),
    (4, {"cache": "memory"}, "thread", r"auto: \[NETWORK\] cache = memory; set cache = disk"),
    (4, {"cache": "none"}, "thread", r"auto: \[NETWORK\] cache = none"),
])
def test_auto_rule(num_threads, changes, kind, why):
    chosen, reason = choose_worker_kind("auto", num_threads, **dict(GPU_HOST, **changes))
    assert chosen == kind
    assert re.match(why, reason), reason


def test_an_explicit_kind_is_kept_whatever_the_machine():
    assert choose_worker_kind("thread", 4, **GPU_HOST) == (
        "thread", "[SYSTEM] worker_kind = thread")
    kind, why = choose_worker_kind("process", 2, step_on_gpu=False, cpu_count=2,
                                   cache="memory")
    assert kind == "process" and why.endswith("each process holds a copy of the memory cache")


def test_process_workers_without_a_cache_are_refused():
    with pytest.raises(ConfigError, match=r"`\[SYSTEM\] worker_kind`.*cache = disk.*"
                                          r"worker_kind='process' with cache='none'"):
        choose_worker_kind("process", 2, **dict(GPU_HOST, cache="none"))
    with pytest.raises(ConfigError, match=r"`\[SYSTEM\] worker_kind`.*auto, thread, process"
                                          r".*worker_kind='fork'"):
        choose_worker_kind("fork", 2, **GPU_HOST)


def test_notice_names_the_workers_and_the_reason(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["GPU:0"])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert tf_adapter.resolve_worker_kind("auto", 2, "disk") == (
        "process", "data: 2 process workers (auto: a GPU runs the training step and 8 cores "
                   "leave one to each worker and the driver; the disk cache is shared)")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [])
    assert tf_adapter.resolve_worker_kind("auto", 2, "disk") == (
        "thread", "data: 2 thread workers (auto: no GPU; the training step uses the CPU cores)")
    assert tf_adapter.resolve_worker_kind("auto", 0, "disk")[1].startswith("data: no workers")


def _sections(folder, **system) -> dict:
    return {
        "SYSTEM": dict({"model_dir": str(folder / "run"), "seed": 1}, **system),
        "MR": {"path_to_search": str(folder / "data"), "filename_contains": "_mr",
               "spatial_window_size": (8, 8, 8)},
        "LABEL": {"path_to_search": str(folder / "data"), "filename_contains": "_seg"},
        "NETWORK": {"name": "highres3dnet", "cache": "disk"},
        "MULTITASK": {"image": "MR", "tasks": "organs"},
        "TASK organs": {"type": "segmentation", "target": "LABEL", "num_classes": 6},
        "TRAINING": {"rotation_angle": (-10, 10)},
    }


@pytest.mark.parametrize("value", ["auto", "thread", "process"])
def test_key_takes_the_three_kinds(tmp_path, value):
    settings = settings_from_dict(_sections(tmp_path, worker_kind=value))
    assert settings.system.worker_kind == value
    assert settings_from_dict(_sections(tmp_path)).system.worker_kind == "auto"


def test_a_wrong_kind_is_the_usual_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid value for \[SYSTEM\] worker_kind\. Expected "
                                          r"one of auto, thread, process\. Received "
                                          r"worker_kind = 'procces'\. Did you mean 'process'\?"):
        settings_from_dict(_sections(tmp_path, worker_kind="procces"))


def test_training_uses_the_kind_of_the_config_and_says_so(tmp_path, capsys):
    write_dataset(tmp_path / "data", subjects=2, seed=1, shape=(12, 12, 10))
    batches = {}
    for kind in ("thread", "process"):
        application = MultiTaskApplication(settings_from_dict(
            _sections(tmp_path, num_threads=2, worker_kind=kind)))
        batches[kind], workers = [], set()
        try:
            for batch in application.training_dataset(2, 0).take(2):
                batches[kind].append(batch["MR"].numpy())
                workers.update(multiprocessing.active_children())
        finally:
            application.close()
        assert len(workers) == (2 if kind == "process" else 0)
        assert f"data: 2 {kind} workers ([SYSTEM] worker_kind = {kind})" in capsys.readouterr().err
    assert not multiprocessing.active_children()
    assert len(batches["thread"]) == len(batches["process"]) == 2
    for thread_batch, process_batch in zip(batches["thread"], batches["process"]):
        np.testing.assert_array_equal(thread_batch, process_batch)
