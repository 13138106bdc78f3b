"""The grouping report: per-layer fractions, YAML, the bar chart and the history."""

import numpy as np
import pytest

from sfg_app.errors import DataError
from sfg_app.evaluation import grouping

GROUPS = ["organs", "synth_ct", "shared"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_probabilities(seed=0):
    """Five SFG layers whose kernels drift from shared (shallow) to specialist (deep)."""
    rng = np.random.default_rng(seed)
    layers = {}
    for depth, kernels in enumerate([16, 32, 64, 64, 64]):
        bias = np.array([0.6 * depth, 0.5 * depth, 2.5 - 0.4 * depth])
        logits = rng.normal(0.0, 1.0, (kernels, 3)) + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        layers[f"sfg_conv_{depth + 1}"] = p / p.sum(axis=1, keepdims=True)
    return layers


def is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_SIGNATURE and len(data) > 5000


def test_fractions_and_mean_probabilities_of_a_hand_made_layer():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    layer = grouping.layer_grouping(p, GROUPS)
    # argmax: organs, shared, shared, organs (a tie goes to the first group)
    assert layer["kernels"] == 4
    assert layer["fraction"] == {"organs": 0.5, "synth_ct": 0.0, "shared": 0.5}
    assert layer["mean_probability"] == pytest.approx(
        {"organs": 0.35, "synth_ct": 0.25, "shared": 0.4})


def test_summary_fractions_sum_to_one_and_follow_depth_order():
    summary = grouping.summarise(synthetic_probabilities(), GROUPS)
    assert list(summary) == [f"sfg_conv_{i}" for i in range(1, 6)]
    for layer in summary.values():
        assert list(layer["fraction"]) == GROUPS
        assert sum(layer["fraction"].values()) == pytest.approx(1.0)
        assert sum(layer["mean_probability"].values()) == pytest.approx(1.0)
    shared = [layer["fraction"]["shared"] for layer in summary.values()]
    assert shared[0] > 0.8 and shared[-1] < 0.2      # the synthetic drift is visible


def test_yaml_round_trip_and_figure(tmp_path):
    summary = grouping.write_grouping_report(synthetic_probabilities(), GROUPS, tmp_path, step=7)
    document = grouping.read_grouping_yaml(tmp_path / "grouping.yaml")
    assert document == {"step": 7, "groups": GROUPS, "layers": summary}
    assert list(document["layers"]) == list(summary)
    assert is_png(tmp_path / "grouping.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grouping.png", "grouping.yaml"]


@pytest.mark.parametrize("probabilities, groups, message", [
    ({"conv": np.full((4, 2), 0.5)}, GROUPS, r"layer 'conv'.*\(kernels, 3\).*\(4, 2\)"),
    ({"conv": np.full((4, 3), 0.5)}, GROUPS, r"layer 'conv'.*summing to 1"),
    ({"conv": np.full((4, 3), np.nan)}, GROUPS, r"layer 'conv'.*finite"),
    ({}, GROUPS, r"`probabilities`.*at least one SFG layer"),
    ({"conv": np.full((4, 2), 0.5)}, ["a", "a"], r"`groups`.*distinct.*\['a', 'a'\]"),
])
def test_invalid_probabilities_are_reported(probabilities, groups, message):
    with pytest.raises(ValueError, match=message):
        grouping.summarise(probabilities, groups)


def test_reading_something_that_is_not_a_report(tmp_path):
    (tmp_path / "g.yaml").write_text("layers: []\n")
    with pytest.raises(DataError, match=r"g.yaml.*'groups' and 'layers'"):
        grouping.read_grouping_yaml(tmp_path / "g.yaml")
    with pytest.raises(DataError, match=r"Cannot read.*missing.yaml"):
        grouping.read_grouping_yaml(tmp_path / "missing.yaml")


def test_history_appends_survives_a_cut_line_and_a_resume_then_plots(tmp_path):
    path = tmp_path / "logs" / "grouping_history.csv"
    for step in (0, 100, 200):
        grouping.append_history(path, step, grouping.summarise(
            synthetic_probabilities(seed=step), GROUPS))
    with open(path, "a") as handle:            # a crash in the middle of a line
        handle.write("300,sfg_conv_1,org")
    resumed = grouping.summarise(synthetic_probabilities(seed=99), GROUPS)
    grouping.append_history(path, 200, resumed)   # the resumed run logs step 200 again
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(grouping.HISTORY_COLUMNS)
    assert len(lines) == 1 + 4 * 5 * 3 and not any("org," in line for line in lines)

    history = grouping.read_history(path)
    assert history["groups"] == GROUPS
    assert list(history["layers"]) == [f"sfg_conv_{i}" for i in range(1, 6)]
    series = history["layers"]["sfg_conv_3"]["shared"]
    assert series["step"].tolist() == [0, 100, 200]
    assert series["fraction"][-1] == resumed["sfg_conv_3"]["fraction"]["shared"]
    assert series["mean_probability"][-1] == resumed["sfg_conv_3"]["mean_probability"]["shared"]
    total = sum(history["layers"]["sfg_conv_2"][g]["fraction"] for g in GROUPS)
    np.testing.assert_allclose(total, 1.0)

    grouping.plot_history(history, tmp_path / "grouping_history.png")
    assert is_png(tmp_path / "grouping_history.png")


def test_history_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("step,layer,group,fraction\n")
    with pytest.raises(DataError, match=r"h.csv.*must start with the header"):
        grouping.read_history(path)
    path.write_text("step,layer,group,fraction,mean_probability\n0,a,shared,1.0,0.9\n"
                    "x,a,shared,1.0,0.9\n")
    with pytest.raises(DataError, match=r"Line 3 of the grouping history.*h.csv"):
        grouping.read_history(path)
    with pytest.raises(DataError, match=r"Cannot read the grouping history.*none.csv"):
        grouping.read_history(tmp_path / "none.csv")
