"""`[SFG] allocation = agreement` in training: the warm-up measures, the groups are decided
when it ends (a third of the run by default) whatever the start and prior, a resume
decides the same (`pytest -m slow`), and a warm-up as long as the run is refused."""

import numpy as np
import pytest
from keras import ops

from sfg_app import commands
from sfg_app.config import load_settings
from sfg_app.demo.configs import ini_text, phantom_sections
from sfg_app.demo.phantoms import write_dataset
from sfg_app.engine.handlers import Handler
from sfg_app.engine.state import TrainingOptions
from sfg_app.engine.training import TrainingDriver
from sfg_app.errors import ConfigError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("agreement")
    write_dataset(folder / "data", subjects=3, seed=2, shape=(24, 20, 16))
    return folder / "data"


class _StopAt(Handler):
    """Interrupts training (as Ctrl-C does) once ``iteration`` is reached."""

    def __init__(self, iteration):
        self.iteration = iteration

    def on_step_end(self, state):
        if state.iteration >= self.iteration:
            raise KeyboardInterrupt


def _train(data, model_dir, stop_at=None, sfg=None):
    """3 iterations; by default 2 of them measure (``sfg``: other [SFG] keys)."""
    sections = phantom_sections(model_dir, data=data, changes={
        "SFG": {"allocation": "agreement", "warmup_iter": 2} if sfg is None else sfg,
        "TRAINING": {"max_iter": 3, "save_every_n": 1,
                     "exclude_fraction_for_inference": 0}})
    path = model_dir.parent / f"{model_dir.name}.ini"
    path.write_text(ini_text(sections))
    settings = load_settings(path)
    extra = [] if stop_at is None else [_StopAt(stop_at)]
    return TrainingDriver(commands.make_application(settings),
                          TrainingOptions.from_settings(settings), extra).run()


def _decided(state) -> list:
    return [np.argmax(ops.convert_to_numpy(g.masks("map")), -1) for g in state.model.groupings]


def test_a_run_decides_its_groups_when_the_warm_up_ends(data, tmp_path, capfd):
    state = _train(data, tmp_path / "run")
    assert "sfg_0: groups decided from the tasks' agreement: organs" in capfd.readouterr().err
    for grouping, groups in zip(state.model.groupings, _decided(state)):
        np.testing.assert_array_equal(groups, grouping.measure.decide(
            grouping.grouping.agreement_threshold, grouping.grouping.agreement_split))
        assert ops.convert_to_numpy(grouping.probabilities()).max(axis=-1).min() > 0.97
        assert np.all(ops.convert_to_numpy(grouping.measure.task_energy) > 0)


def test_a_third_of_the_run_measures_and_the_start_and_prior_decide_nothing(data, tmp_path,
                                                                             capfd):
    """By default the agreement is measured over a third of the run (1 of 3 iterations).
    The must-show of init-invariance, kernel for kernel: from a uniform start and prior
    and from 0.8 shared, one seed gives the same groups and the same weights."""
    states = [_train(data, tmp_path / start, sfg={"allocation": "agreement", "init": start,
                                                   "prior": start})
              for start in ("uniform", "shared")]
    printed = capfd.readouterr().err
    assert "SFG groups: measured from the tasks' agreement over iterations 1-1" in printed
    assert "sfg_0: groups decided from the tasks' agreement" in printed
    for state in states:
        assert (state.model.probe_iterations, state.model.grouping.fixed_from) == (1, 1)
    for uniform, shared in zip(*(_decided(state) for state in states)):
        np.testing.assert_array_equal(uniform, shared)
    uniform, shared = ([w for w in state.model.weights if "logits" not in w.path]
                       for state in states)  # the same network: the same order
    assert len(uniform) == len(shared)
    for first, second in zip(uniform, shared):
        np.testing.assert_array_equal(ops.convert_to_numpy(first),
                                      ops.convert_to_numpy(second), err_msg=first.path)


@pytest.mark.slow
def test_a_run_stopped_in_its_warm_up_resumes_the_measurement(data, tmp_path, capfd):
    whole = _decided(_train(data, tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        _train(data, tmp_path / "parts", stop_at=1)  # stopped inside the warm-up
    capfd.readouterr()
    resumed = _train(data, tmp_path / "parts")
    assert "groups decided" in capfd.readouterr().err
    for groups, expected in zip(_decided(resumed), whole):
        np.testing.assert_array_equal(groups, expected)


def test_a_warm_up_as_long_as_the_run_is_refused(tmp_path):
    sections = phantom_sections(tmp_path / "run", changes={
        "SFG": {"allocation": "agreement", "warmup_iter": 5},
        "TRAINING": {"max_iter": 5}})
    path = tmp_path / "c.ini"
    path.write_text(ini_text(sections))
    with pytest.raises(ConfigError, match=r"warmup_iter\. Expected fewer iterations than "
                                          r"\[TRAINING\] max_iter = 5 with allocation = "
                                          r"agreement\. Received warmup_iter = 5\. The groups"):
        load_settings(path)
