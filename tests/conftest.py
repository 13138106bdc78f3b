"""The test session's entry point: the Keras backend and home, TensorFlow's native log
level and its oneDNN kernels are chosen here, before anything imports Keras, as the
command line chooses them for a command (importing sfg_app changes nothing)."""

import os
import pathlib
import subprocess
import sys

import pytest

from sfg_app import runtime

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["KERAS_HOME"] = str(pathlib.Path(__file__).resolve().parent.parent / ".keras_home")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
runtime.enable_onednn()


@pytest.fixture(scope="session")
def sfg_train():
    """``sfg_train(config, *overrides, timeout=600)``: `sfg_train` in a process of its own,
    in the config's folder (a `--set` path is relative to the working directory), as a
    user runs it; fails the test with the end of its stderr when it fails."""
    def run(config: pathlib.Path, *overrides: str, timeout: int = 600) -> None:
        command = [sys.executable, "-m", "sfg_app.cli.train", "--config", str(config)]
        for override in overrides:
            command += ["--set", override]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=config.parent,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def checkpoint_differences():
    """``checkpoint_differences(first, second)``: the tensors in which two checkpoints
    (prefixes: `.../ckpt-12`) differ, by name; `save_counter` (how many saves the run
    made) aside."""
    def differences(first: str, second: str) -> list[str]:
        import numpy as np
        import tensorflow as tf   # on use: a session of quick tests never loads it

        readers = [tf.train.load_checkpoint(path) for path in (first, second)]
        names = [set(reader.get_variable_to_shape_map())
                 - {"save_counter/.ATTRIBUTES/VARIABLE_VALUE"} for reader in readers]
        if names[0] != names[1]:
            return sorted(names[0] ^ names[1])
        return sorted(name for name in names[0] if not np.array_equal(
            readers[0].get_tensor(name), readers[1].get_tensor(name)))
    return differences
