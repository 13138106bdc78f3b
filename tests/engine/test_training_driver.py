"""The training driver on a small real Keras model: steps, checkpoints, resume, NaN stop,
SIGTERM."""

import glob
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.engine.handlers import Handler
from sfg_app.engine.training import TrainingDriver
from sfg_app.errors import SFGWarning, TrainingError, TrainingStopped

from regression_app import RegressionApplication, plan

HERE = pathlib.Path(__file__).parent
SCRIPT = str(HERE / "run_training.py")


def script_environment():
    return dict(os.environ,
                PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))


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


def test_a_resumed_run_draws_what_the_uninterrupted_run_draws(tmp_path):
    """The random streams' states are in the checkpoint: resuming at 10 does not restart
    the dropout masks at their seed, so 10 + 10 iterations equal 20 in one run."""
    whole = TrainingDriver(RegressionApplication(dropout=0.5),
                           plan(tmp_path / "whole", max_iter=20)).run()
    TrainingDriver(RegressionApplication(dropout=0.5),
                   plan(tmp_path / "split", max_iter=10)).run()
    resumed = TrainingDriver(RegressionApplication(dropout=0.5),
                             plan(tmp_path / "split", max_iter=20)).run()
    assert resumed.first_iteration == 10
    for expected, got in zip(whole.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(got))


def test_a_checkpoint_without_random_states_still_resumes(tmp_path):
    """Checkpoints written before the streams were saved restore; the streams stay at
    their seed."""
    app = RegressionApplication(dropout=0.5)
    model, optimizer = app.build_network(), app.build_optimiser()
    optimizer.build(model.trainable_variables)
    CheckpointStore(str(tmp_path / "run"), model=model, objective=app.build_objective(),
                    optimizer=optimizer).save(4)
    state = TrainingDriver(RegressionApplication(dropout=0.5),
                           plan(tmp_path, max_iter=6)).run()
    assert state.first_iteration == 4 and state.iteration == 6


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


def test_sigterm_saves_the_current_iteration_and_stops(tmp_path):
    class SigtermAt(Handler):
        def on_start(self, state):
            save = state.checkpoints.save

            def save_under_a_second_sigterm(iteration):
                os.kill(os.getpid(), signal.SIGTERM)   # only recorded again
                return save(iteration)

            state.checkpoints.save = save_under_a_second_sigterm

        def on_step_end(self, state):
            if state.iteration == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    app = RegressionApplication()
    with pytest.raises(TrainingStopped) as stopped:
        TrainingDriver(app, plan(tmp_path), extra_handlers=[SigtermAt()]).run()
    # Recorded between steps 7 and 8, acted on after the next step.
    checkpoints = str(tmp_path / "run" / "checkpoints")
    assert str(stopped.value) == (
        f"Stopped by SIGTERM at iteration 8: a checkpoint of iteration 8 is in {checkpoints}. "
        "Run the same sfg_train command to resume.")
    assert CheckpointStore(str(tmp_path / "run")).iterations() == [8]
    assert signal.getsignal(signal.SIGTERM) == before
    assert app.closed
    state = TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=12)).run()
    assert (state.first_iteration, state.iteration) == (8, 12)


def test_a_sigterm_to_a_training_process_stops_it_resumably(tmp_path):
    model_dir = tmp_path / "run"
    store = CheckpointStore(str(model_dir))
    process = subprocess.Popen([sys.executable, SCRIPT, str(model_dir), str(10**6)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=script_environment())
    deadline = time.time() + 240
    while not store.iterations():   # training has started: its first checkpoint is there
        assert process.poll() is None and time.time() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    match = re.search(r"STOPPED Stopped by SIGTERM at iteration (\d+): a checkpoint of "
                      r"iteration \1 is in (.*)\. Run the same sfg_train command", out)
    assert match, out + err[-3000:]
    stopped = int(match.group(1))
    assert match.group(2) == store.directory
    assert stopped > 10 and store.iterations()[-1] == stopped
    model = RegressionApplication().build_network()
    assert CheckpointStore(str(model_dir), model=model).restore(-1, partial=True) == stopped

    resumed = subprocess.run([sys.executable, SCRIPT, str(model_dir), str(stopped + 5)],
                             capture_output=True, text=True, env=script_environment(),
                             timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"RESULT first={stopped} iteration={stopped + 5}" in resumed.stdout


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(tmp_path):
    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=20)).run()
    latest = tmp_path / "run" / "checkpoints" / "ckpt-20.data-00000-of-00001"
    os.truncate(latest, os.path.getsize(latest) // 2)
    with pytest.warns(SFGWarning, match=r"iteration 20 cannot be read.*ckpt-20"):
        state = TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=25)).run()
    assert (state.first_iteration, state.iteration) == (10, 25)
    # Iteration 20 was trained and saved again, whole.
    model = RegressionApplication().build_network()
    assert CheckpointStore(str(tmp_path / "run"), model=model).restore(20, partial=True) == 20


def test_a_resume_drops_the_grouping_history_after_its_checkpoint(tmp_path):
    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=10)).run()
    history = tmp_path / "run" / "grouping_history.csv"
    rows = "".join(f"{step},conv,shared,1.0,0.9,0.9\n" for step in (5, 10, 15))
    history.write_text("step,layer,group,fraction,mean_probability,mean_max_probability\n"
                       + rows)   # what a run killed at step 17 leaves
    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=12)).run()
    assert [line.split(",")[0] for line in history.read_text().splitlines()] == \
        ["step", "5", "10"]


def test_balanced_gradients_equalise_the_tasks_on_the_logits_only():
    """On the logits (all layers together) each task's gradient is scaled to the tasks'
    mean size before the sum; every other variable gets the plain gradient of the total."""
    import tensorflow as tf

    from sfg_app.engine.training import _balanced_gradients, _gradients_per_part

    weight = tf.Variable([1.0, -2.0, 0.5])
    logits = [tf.Variable([[0.3, -0.1], [0.2, 0.4]]), tf.Variable([[0.1, 0.2]])]
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[4.0, 0.0], [0.0, 4.0]])
    with tf.GradientTape(persistent=True) as tape:
        big = 10.0 * tf.reduce_sum(weight * 3.0) + 10.0 * tf.reduce_sum(logits[0] * a)
        small = (tf.reduce_sum(tf.square(weight)) + 0.1 * tf.reduce_sum(logits[0] * b)
                 + 0.1 * tf.reduce_sum(logits[1] * [[1.0, -1.0]]))
        regulariser = 0.5 * tf.reduce_sum(tf.square(logits[0]))
        total = big + small + regulariser
    variables = [weight, *logits]
    gradients = _balanced_gradients(
        _gradients_per_part(tape, [big, small, regulariser], variables), [1, 2])
    plain = tape.gradient(total, variables)
    np.testing.assert_allclose(gradients[0].numpy(), plain[0].numpy(), rtol=1e-6)
    big_grads = [10.0 * a, np.zeros((1, 2))]
    small_grads = [0.1 * b, 0.1 * np.array([[1.0, -1.0]])]
    sizes = [np.sqrt(sum(np.sum(g ** 2) for g in grads)) for grads in (big_grads,
                                                                      small_grads)]
    mean = np.mean(sizes)
    for i, variable in enumerate(logits):
        expected = (big_grads[i] * mean / sizes[0] + small_grads[i] * mean / sizes[1]
                    + (variable.numpy() if i == 0 else 0.0))
        np.testing.assert_allclose(gradients[1 + i].numpy(), expected, rtol=1e-5)
    assert not np.allclose(gradients[1].numpy(), plain[1].numpy())

