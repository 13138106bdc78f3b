"""The training driver on a small real Keras model: steps, checkpoints, resume, NaN stop."""

import glob
import os
import re

import numpy as np
import pytest

from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.engine.handlers import Handler
from sfg_app.engine.training import TrainingDriver
from sfg_app.errors import TrainingError

from regression_app import RegressionApplication, plan


class RecordLosses(Handler):
    def __init__(self):
        self.losses = []

    def on_step_end(self, state):
        self.losses.append(state.logs["mse"])


def test_trains_saves_every_n_and_learns(tmp_path):
    app = RegressionApplication()
    record = RecordLosses()
    state = TrainingDriver(app, plan(tmp_path), extra_handlers=[record]).run()
    assert state.iteration == 30
    store = CheckpointStore(str(tmp_path / "run"))
    assert store.iterations() == [10, 20, 30]
    assert len(record.losses) == 30
    assert record.losses[-1] < 0.2 * record.losses[0]
    assert app.closed
    assert glob.glob(str(tmp_path / "run" / "logs" / "train" / "events.*"))


def test_resume_continues_the_step_counter(tmp_path):
    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=10)).run()
    state = TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=25)).run()
    assert state.first_iteration == 10
    assert state.iteration == 25
    assert CheckpointStore(str(tmp_path / "run")).iterations() == [10, 20, 25]


def test_starting_iter_zero_refuses_a_used_model_dir(tmp_path):
    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=10)).run()
    with pytest.raises(TrainingError, match=r"starting_iter = 0.*iterations 10.*-1"):
        TrainingDriver(RegressionApplication(), plan(tmp_path, starting_iter=0)).run()


def test_starting_iter_names_the_available_checkpoints(tmp_path):
    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=20)).run()
    with pytest.raises(TrainingError, match=r"No checkpoint of iteration 15.*10, 20"):
        TrainingDriver(RegressionApplication(), plan(tmp_path, starting_iter=15)).run()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=10)).run()
    diverging = RegressionApplication(lr=1e6)
    with pytest.raises(TrainingError) as error:
        TrainingDriver(diverging, plan(tmp_path, max_iter=200, save_every_n=1000)).run()
    message = str(error.value)
    assert re.search(r"stopped at iteration \d+", message)
    assert "iteration 10" in message and "lower [TRAINING] lr" in message
    assert diverging.closed
    # The checkpoint on disk is still the good one and loads.
    app = RegressionApplication()
    model = app.build_network()
    store = CheckpointStore(str(tmp_path / "run"), model=model)
    assert store.restore(-1, partial=True) == 10
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_validation_logs_and_summaries(tmp_path):
    state = TrainingDriver(RegressionApplication(),
                           plan(tmp_path, max_iter=10, validation_every_n=5)).run()
    assert "val_mse" in state.logs
    assert glob.glob(str(tmp_path / "run" / "logs" / "validation" / "events.*"))


def test_interrupt_saves_the_current_iteration(tmp_path):
    class StopAt(Handler):
        def on_step_end(self, state):
            if state.iteration == 7:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TrainingDriver(RegressionApplication(), plan(tmp_path), extra_handlers=[StopAt()]).run()
    assert CheckpointStore(str(tmp_path / "run")).iterations() == [7]
    assert os.path.isdir(str(tmp_path / "run" / "checkpoints"))
