"""A training killed (SIGKILL) ten times, some of them while a checkpoint is written, and
resumed each time with the same command, ends as if it had never been killed: no
checkpoint lost or damaged, the step counter and the SFG temperature continuous, a
grouping history of one row per (step, layer, group) in strictly increasing steps, and a
last checkpoint bit-identical to that of a run never killed.

Slow (three to four minutes on two cores): `pytest -m slow tests/engine/test_kill_resume.py -s`
prints the table of the kills.
"""

import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings

import pytest

from sfg_app import commands
from sfg_app.config import load_settings
from sfg_app.demo.configs import ini_text, phantom_sections
from sfg_app.demo.phantoms import write_dataset
from sfg_app.engine.checkpoints import CheckpointStore, unreadable
from sfg_app.engine.inference import InferenceDriver, InferenceOptions
from sfg_app.errors import SFGWarning

MAX_ITER = 150
SAVE_EVERY_N = 5
MAX_CHECKPOINTS = 3
TAU, TAU_MIN, ANNEAL_RATE = 1.0, 0.1, 0.02

CONFIG = ini_text(phantom_sections(body_mask=True, changes={
    "SYSTEM": {"seed": 5, "num_threads": 1},
    "MR": {"spatial_window_size": (24, 24, 1), "axcodes": ("R", "A", "S"),
           "pixdim": (10, 10, 10), "foreground_type": "otsu"},
    "NETWORK": {"batch_size": 2, "window_sampling": "uniform"},
    "SFG": {"tau": TAU, "tau_min": TAU_MIN, "anneal_rate": ANNEAL_RATE, "warmup_iter": 10,
            "finetune_iter": 0},
    "TRAINING": {"lr": 0.003, "max_iter": MAX_ITER, "save_every_n": SAVE_EVERY_N,
                 "max_checkpoints": MAX_CHECKPOINTS, "tensorboard_every_n": 5,
                 "validation_every_n": 0, "exclude_fraction_for_validation": 0,
                 "exclude_fraction_for_inference": 0},
    "INFERENCE": None}))

# When each kill lands: `startup` a random time after the process starts (import, build,
# tracing, or the first steps); `after save` a random time (up to 0.25 s) after the
# state file lists a checkpoint one or two saves ahead; at the first or second save of
# the run, `data write` as soon as the folder of the checkpoint being written
# (ckpt-N_temp) appears, `before state` as soon as its index (ckpt-N.index) appears:
# its files are complete, the state file does not list it yet (a window of some 4 ms).
MOMENTS = ["after save", "data write", "startup", "after save", "before state"] * 2


def schedule(step: int) -> float:
    """The temperature the config's annealing gives at optimiser step `step`."""
    return max(TAU_MIN, TAU * math.exp(-ANNEAL_RATE * step))


class Run:
    """One `sfg_train` process and what its checkpoint folder shows while it runs."""

    def __init__(self, config: str, folder, log):
        self.folder = str(folder)
        self.log = log
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sfg_app.cli.train", "--config", config],
            stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        self.listed = 0           # the newest checkpoint the state file has listed
        self._state_mtime = None

    def names(self) -> list[str]:
        try:
            return os.listdir(self.folder)
        except FileNotFoundError:
            return []

    def poll(self) -> None:
        """Fail if the process ended; note the newest checkpoint the state file lists."""
        if self.process.poll() is not None:
            self.log.flush()
            pytest.fail(f"sfg_train ended (code {self.process.returncode}) before its kill:\n"
                        + open(self.log.name).read()[-3000:])
        state = os.path.join(self.folder, "checkpoint")
        try:
            mtime = os.stat(state).st_mtime_ns
            if mtime != self._state_mtime:
                self._state_mtime = mtime
                match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"',
                                  open(state).read(), re.MULTILINE)
                if match:
                    self.listed = max(self.listed, int(match.group(1)))
        except FileNotFoundError:
            pass

    def wait_for_new_name(self, pattern: str, count: int, before: set) -> str:
        """Poll (as fast as Python lists a folder) until the `count`-th new name matching
        `pattern` appears; return it."""
        seen = []
        while True:
            self.poll()
            for name in self.names():
                if name not in before and re.fullmatch(pattern, name) and name not in seen:
                    seen.append(name)
                    if len(seen) == count:
                        return name

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def kill_once(run: Run, moment: str, restored: int, rng: random.Random) -> str:
    """Kill `run` at a moment of kind `moment`; return how the moment is described."""
    before = set(run.names())
    if moment == "startup":
        delay = rng.uniform(0.5, 6.0)
        while time.monotonic() - run.started < delay:
            run.poll()
            time.sleep(0.01)
        run.kill()
        return f"startup +{delay:.1f} s"
    if moment == "after save":
        target = restored + SAVE_EVERY_N * rng.randint(1, 2)
        while run.listed < target:
            run.poll()
            time.sleep(0.005)
        delay = rng.uniform(0.0, 0.25)
        time.sleep(delay)
        run.kill()
        return f"{delay:.2f} s after ckpt-{target} listed"
    pattern = r"ckpt-\d+_temp" if moment == "data write" else r"ckpt-\d+\.index"
    name = run.wait_for_new_name(pattern, rng.randint(1, 2), before)
    run.kill()
    return f"{moment}: {name} seen"


def restore_newest(application, settings) -> tuple[int, int, float]:
    """Restore the newest checkpoint as sfg_infer does (a fallback warning fails the
    test); return its iteration, the network's grouping step and its temperature."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SFGWarning)
        driver = InferenceDriver(application, InferenceOptions.from_settings(settings))
        model = driver.load_model()
    return (driver.iteration, int(model.grouping_step.numpy()),
            float(model.temperature()))


def started_from(log_path) -> int:
    match = re.findall(r"Training from iteration (\d+) to", open(log_path).read())
    assert match, open(log_path).read()[-3000:]
    return int(match[-1])


def check_checkpoints(store: CheckpointStore) -> list[int]:
    """The checkpoints on disk: the newest `MAX_CHECKPOINTS` saves up to the newest, with
    no gap, each readable whole."""
    found = store.iterations()
    if found:
        newest = found[-1]
        expected = list(range(max(SAVE_EVERY_N, newest - SAVE_EVERY_N * (MAX_CHECKPOINTS - 1)),
                              newest + 1, SAVE_EVERY_N))
        assert found == expected, f"checkpoints {found}: not the last saves up to {newest}"
        for iteration in found:
            prefix = os.path.join(store.directory, f"ckpt-{iteration}")
            assert unreadable(prefix) is None, unreadable(prefix)
    return found


def write_traces(names, before: set, found: list[int]) -> list[str]:
    """What a kill during a checkpoint write leaves: a temporary folder or state file, or
    a checkpoint whose files are there but which the state file does not list."""
    traces = sorted(n for n in set(names) - before if "_temp" in n or ".tmp" in n)
    return traces + [f"unlisted ckpt-{i}" for i in sorted(
        int(m.group(1)) for m in map(re.compile(r"ckpt-(\d+)\.index$").match, names)
        if m and int(m.group(1)) not in found)]


def check_history(path) -> int:
    """One row per (step, layer, group), a step's rows together, steps strictly
    increasing; returns the number of steps."""
    lines = open(path).read().splitlines()
    assert lines[0] == "step,layer,group,fraction,mean_probability,mean_max_probability"
    rows = [line.split(",")[:3] for line in lines[1:]]
    assert len({tuple(row) for row in rows}) == len(rows), "a (step, layer, group) repeated"
    blocks: list[tuple[int, int]] = []
    for row in rows:
        step = int(row[0])
        if blocks and blocks[-1][0] == step:
            blocks[-1] = (step, blocks[-1][1] + 1)
        else:
            blocks.append((step, 1))
    steps = [step for step, _ in blocks]
    assert steps == sorted(set(steps)), f"steps not strictly increasing: {steps}"
    assert len({size for _, size in blocks}) == 1, f"blocks of unequal size: {blocks}"
    return len(steps)


@pytest.mark.slow
def test_killed_ten_times_resumes_to_the_end_losing_nothing(tmp_path, sfg_train,
                                                            checkpoint_differences):
    began = time.monotonic()
    write_dataset(tmp_path / "data", subjects=2, seed=3, shape=(28, 22, 18))
    config = tmp_path / "kill.ini"
    config.write_text(CONFIG)
    settings = load_settings(str(config))
    store = CheckpointStore(str(tmp_path / "run"))
    rng = random.Random(20240611)
    application = None
    restored = 0
    table = []
    for number, moment in enumerate(MOMENTS, start=1):
        log_path = tmp_path / f"run_{number}.log"
        with open(log_path, "w") as log:
            run = Run(str(config), store.directory, log)
            before = set(run.names())
            described = kill_once(run, moment, restored, rng)
        if "Training from" in open(log_path).read():
            assert started_from(log_path) == restored, "the step counter jumped"
        found = check_checkpoints(store)
        traces = write_traces(run.names(), before, found)
        if found:
            assert found[-1] >= run.listed, (
                f"ckpt-{run.listed} was listed before the kill, the newest now is {found[-1]}")
            application = application or commands.make_application(settings)
            iteration, step, temperature = restore_newest(application, settings)
            assert iteration == found[-1]
            assert step == iteration - 1      # the step of the last update it holds
            assert abs(temperature - schedule(step)) < 1e-6
            assert iteration >= restored, "a resume went back"
            restored = iteration
        table.append((number, described, restored, found, traces))

    log_path = tmp_path / "run_final.log"
    with open(log_path, "w") as log:
        final = subprocess.run([sys.executable, "-m", "sfg_app.cli.train", "--config",
                                str(config)], stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert final.returncode == 0, open(log_path).read()[-3000:]
    assert started_from(log_path) == restored
    found = check_checkpoints(store)
    assert found[-1] == MAX_ITER
    iteration, step, temperature = restore_newest(application or commands.make_application(
        settings), settings)
    assert (iteration, step) == (MAX_ITER, MAX_ITER - 1)
    assert abs(temperature - schedule(MAX_ITER - 1)) < 1e-6
    steps = check_history(tmp_path / "run" / "grouping_history.csv")
    sfg_train(config, "SYSTEM.model_dir=whole")   # a run never killed, beside the config
    differences = checkpoint_differences(
        os.path.join(store.directory, f"ckpt-{MAX_ITER}"),
        str(tmp_path / "whole" / "checkpoints" / f"ckpt-{MAX_ITER}"))
    assert differences == [], f"{len(differences)} tensors differ from a run never killed"

    duration = time.monotonic() - began
    width = max(len(row[1]) for row in table)
    print(f"\n\nkill  {'moment'.ljust(width)}  restored  checkpoints present  "
          "traces of a write cut short")
    for number, described, at, present, traces in table:
        print(f"{number:>4}  {described.ljust(width)}  {at:>8}  "
              f"{', '.join(map(str, present)) or '-':<19}  {', '.join(traces) or '-'}")
    remaining = write_traces(os.listdir(store.directory), set(), found)
    print(f"{sum(bool(row[4]) for row in table)} kills landed during a checkpoint write. "
          f"Final run: from {restored} to {found[-1]}, checkpoints {found}; traces left in "
          f"the folder: {', '.join(remaining) or 'none'}. "
          f"Grouping history: {steps} steps, strictly increasing, one row per (step, layer, "
          f"group). The last checkpoint equals that of a run never killed, tensor for "
          f"tensor. {duration:.0f} s in all.")
