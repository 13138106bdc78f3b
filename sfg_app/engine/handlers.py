"""What happens beside the gradient step: checkpoints, validation, summaries, progress."""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import tensorflow as tf

from sfg_app.engine.state import TrainingState, to_numpy
from sfg_app.engine.strategies import distributed_dataset
from sfg_app.errors import TrainingError
from sfg_app.evaluation.grouping import append_history, summarise, truncate_history
from sfg_app.io.run_folder import RunFolder


class Handler:
    """Reacts to the events of the loop; subclasses change the events they need."""

    def on_start(self, state: TrainingState) -> None:
        pass

    def on_step_end(self, state: TrainingState) -> None:
        pass

    def on_end(self, state: TrainingState) -> None:
        pass


def save_checkpoint(state: TrainingState) -> None:
    """Save the current iteration, unless the weights are no longer finite.

    A loss can stay finite one step after an update made the weights infinite; checking
    the weights here keeps a corrupt state from ever becoming the "last good" checkpoint.
    """
    finite = all(np.all(np.isfinite(to_numpy(v))) for v in state.model.weights)
    if not finite:
        raise TrainingError(
            f"The network's weights are not finite at iteration {state.iteration}; no "
            f"checkpoint was saved (the last good one is of iteration {state.last_saved}, "
            f"in {state.checkpoints.directory}). Lower [TRAINING] lr, or set "
            "gradient_clip_norm.")
    state.checkpoints.save(state.iteration)
    state.last_saved = state.iteration


class CheckpointHandler(Handler):
    """Every `save_every_n` iterations, and at the end of the run."""

    def __init__(self, save_every_n: int):
        self.save_every_n = save_every_n

    def on_step_end(self, state):
        if state.iteration % self.save_every_n == 0:
            save_checkpoint(state)

    def on_end(self, state):
        if state.last_saved != state.iteration:
            save_checkpoint(state)


class ValidationHandler(Handler):
    """Every `every_n` iterations: the objective on fixed validation windows.

    The network runs in inference mode (moving normalisation statistics) and, for SFG
    networks, in `map` architecture: the validation loss is that of the network that
    inference will use. The same windows are used each time so that curves compare. The
    chief also writes the application's images of the first validation batch (input,
    targets, predictions) to TensorBoard.
    """

    def __init__(self, application, every_n: int, max_batches: int):
        self.application = application
        self.every_n = every_n
        self.max_batches = max_batches
        self._step = None
        self._dataset = None
        self._writer = None
        self._image_batch = None

    def on_start(self, state):
        plan = state.plan
        if not self.application.has_validation_data():
            print("Validation is off: the split has no validation subjects (set "
                  "[TRAINING] exclude_fraction_for_validation).", file=sys.stderr)
            return
        self._dataset = distributed_dataset(
            state, self.application.validation_dataset, steps=self.max_batches)
        app, model, objective, strategy = (self.application, state.model, state.objective,
                                           state.strategy)

        def replica_step(batch):
            outputs = model(app.network_inputs(batch), training=False)
            total, logs = app.compute_loss(model, objective, outputs, batch)
            return dict(logs, loss=total)

        @tf.function(jit_compile=False)
        def step(batch):
            per_replica = strategy.run(replica_step, args=(batch,))
            return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

        self._step = step
        if state.chief:
            self._writer = tf.summary.create_file_writer(
                str(RunFolder(plan.model_dir).tensorboard("validation")))
            self._image_batch = next(iter(self.application.validation_dataset(1).take(1)))

    def on_step_end(self, state):
        if self._step is None or state.iteration % self.every_n:
            return
        self.application.set_architecture(state.model, "map")
        try:
            totals: dict[str, float] = {}
            count = 0
            for batch in self._dataset:
                for key, value in self._step(batch).items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                count += 1
            images = self._images(state.model)
        finally:
            self.application.set_architecture(state.model, "train")
        if not count:
            return
        means = {key: value / count for key, value in totals.items()}
        state.logs.update({f"val_{key}": value for key, value in means.items()})
        if self._writer is not None:
            with self._writer.as_default(step=state.iteration):
                for key, value in means.items():
                    tf.summary.scalar(key, value)
                for name, image in images.items():
                    tf.summary.image(name, image)
            self._writer.flush()

    def _images(self, model) -> dict:
        if self._writer is None:
            return {}
        batch = self._image_batch
        outputs = model(self.application.network_inputs(batch), training=False)
        return self.application.summary_images(batch, outputs)


class SummaryHandler(Handler):
    """TensorBoard scalars and the grouping history, every `every_n` iterations.

    A resumed run starts by dropping the history rows of the steps after its checkpoint
    (a killed run logs steps it never saved), so that the file keeps one row per step,
    layer and group, in order.
    """

    def __init__(self, application, every_n: int):
        self.application = application
        self.every_n = every_n
        self._writer = None
        self._history = None

    def on_start(self, state):
        run = RunFolder(state.plan.model_dir)
        self._writer = tf.summary.create_file_writer(str(run.tensorboard("train")))
        self._history = str(run.grouping_history)
        if os.path.exists(self._history):
            truncate_history(self._history, state.first_iteration)

    def on_step_end(self, state):
        if state.iteration % self.every_n and state.iteration != state.first_iteration + 1:
            return
        self._write(state)

    def on_end(self, state):
        self._write(state)

    def _write(self, state):
        model = state.model
        with self._writer.as_default(step=state.iteration):
            for key, value in state.logs.items():
                if not key.startswith("val_"):
                    tf.summary.scalar(key, value)
            tf.summary.scalar("learning_rate", current_learning_rate(state.optimiser))
            for key, value in self.application.summary_scalars(model).items():
                tf.summary.scalar(key, value)
            probabilities = self.application.grouping_probabilities(model)
            if probabilities:
                groups = self.application.group_names()
                summary = summarise(probabilities, groups)
                for layer, entry in summary.items():
                    for group in groups:
                        tf.summary.scalar(f"grouping/{layer}/{group}_fraction",
                                          entry["fraction"][group])
                        tf.summary.scalar(f"grouping/{layer}/{group}_mean_probability",
                                          entry["mean_probability"][group])
                append_history(self._history, state.iteration, summary)
        self._writer.flush()


class ProgressHandler(Handler):
    """A progress line with the rate, the ETA and the current losses.

    On a terminal the line is redrawn every step; in a log file a line is printed every
    `log_every_s` seconds, so long runs do not drown their logs.
    """

    def __init__(self, stream=None, log_every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.log_every_s = log_every_s
        self._start = 0.0
        self._last_print = 0.0

    def on_start(self, state):
        self._start = time.perf_counter()
        self._last_print = self._start
        self._live = getattr(self.stream, "isatty", lambda: False)()
        print(f"Training from iteration {state.iteration} to {state.plan.max_iter} "
              f"in {state.plan.model_dir}", file=self.stream, flush=True)

    def on_step_end(self, state):
        now = time.perf_counter()
        if not self._live and now - self._last_print < self.log_every_s and \
                state.iteration != state.plan.max_iter:
            return
        self._last_print = now
        done = state.iteration - state.first_iteration
        rate = (now - self._start) / max(done, 1)
        eta = rate * (state.plan.max_iter - state.iteration)
        losses = " ".join(f"{k} {v:.4g}" for k, v in state.logs.items() if k != "grad_norm")
        line = (f"iter {state.iteration}/{state.plan.max_iter} {rate:.2f} s/it "
                f"ETA {_duration(eta)} {losses}")
        end = "\r" if self._live else "\n"
        print(line, end=end, file=self.stream, flush=True)

    def on_end(self, state):
        total = time.perf_counter() - self._start
        print(f"\nDone: iteration {state.iteration} in {_duration(total)}; checkpoints in "
              f"{state.checkpoints.directory}", file=self.stream, flush=True)


def current_learning_rate(optimiser) -> float:
    rate = optimiser.learning_rate
    return float(to_numpy(rate(optimiser.iterations) if callable(rate) else rate))


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
