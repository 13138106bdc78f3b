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
    assert layer["mean_max_probability"] == pytest.approx((0.7 + 0.8 + 0.5 + 0.4) / 4)


UNDECIDED = np.full((8, 3), 1 / 3)
DECIDED = np.eye(3)[[0, 1, 2, 2, 2, 0, 1, 2]]


@pytest.mark.parametrize("p, expected", [
    (UNDECIDED, 1 / 3),                                    # uniform: 1/G
    (np.full((5, 2), 0.5), 1 / 2),                          # uniform over two groups
    (DECIDED, 1.0),                                         # one-hot
    (np.array([[0.33, 0.33, 0.34], [0.0, 0.0, 1.0]]), 0.67),  # one of each
])
def test_mean_max_probability_says_how_decided_a_layer_is(p, expected):
    groups = GROUPS if p.shape[1] == 3 else ["organs", "shared"]
    assert grouping.layer_grouping(p, groups)["mean_max_probability"] == pytest.approx(expected)


def test_the_table_of_sfg_groups_has_a_max_p_column():
    from sfg_app.commands import _grouping_table

    summary = grouping.summarise({"shallow": UNDECIDED, "deep": DECIDED}, GROUPS)
    header, shallow, deep = [line.split() for line in
                             _grouping_table(summary, GROUPS).splitlines()]
    assert header[-2:] == ["max", "p"]
    assert shallow == ["shallow", "8", "100", "0", "0", "0.33"]
    assert deep == ["deep", "8", "25", "25", "50", "1.00"]


def _one_hot_layer(counts):
    """Kernels one-hot in groups (organs, field, shared) ``counts`` times each."""
    return np.repeat(np.eye(3) * 0.97 + 0.01, counts, axis=0)


def test_the_allocation_in_words_names_own_kernels_and_sharing_with_depth():
    summary = grouping.summarise({f"sfg_{i}": _one_hot_layer(c) for i, c in enumerate(
        [(0, 2, 6), (1, 3, 4), (4, 3, 1)])}, ["organs", "field", "shared"])
    organs, field, shared = grouping.describe_allocation(summary)
    assert organs == "organs uses its own kernels from layer 3 on (50 % of layers 3-3)."
    assert field == "field uses its own kernels from layer 1 on (25 %, 38 %, 38 % of layers 1-3)."
    assert shared.startswith("Shared kernels fall from 75 % in layer 1 to 12 % in layer 3")


def test_the_allocation_in_words_of_hard_sharing_and_an_undecided_layer():
    shared_only = grouping.summarise({"a": _one_hot_layer((0, 0, 8)),
                                      "b": _one_hot_layer((0, 1, 15))}, ["organs", "field",
                                                                       "shared"])
    lines = grouping.describe_allocation(shared_only)
    assert lines[0].startswith("organs has no kernels of its own (at most 0 %")
    assert lines[-1].startswith("Every layer is shared: the network learned hard sharing")
    undecided = grouping.summarise({"a": UNDECIDED}, GROUPS)
    assert grouping.describe_allocation(undecided)[0].startswith("The grouping is barely "
                                                                 "decided")


def test_the_agreement_in_words():
    cosines = {"sfg_0": np.array([0.5, 0.4, 0.35, 0.2]), "sfg_1": np.array([0.4, 0.3, 0.5]),
               "sfg_2": np.array([0.0, 0.05, 0.4]), "sfg_3": np.array([-0.1, 0.1])}
    medians, parting = grouping.describe_agreement(cosines, 0.25)
    assert medians.endswith("shared above 0.25: median per layer 0.38, 0.40, 0.05, 0.00.")
    assert parting == ("The tasks want the same features in layers 1-2 and different ones "
                       "from layer 3 on.")
    assert grouping.describe_agreement({"a": np.zeros(4)}, 0.1)[1].startswith(
        "The tasks agree in no layer")
    assert grouping.describe_agreement({"a": np.ones(4), "b": np.ones(2)}, 0.1)[1] == (
        "The tasks agree in every layer: they want the same features throughout.")
    assert grouping.describe_agreement({"a": np.zeros(2), "b": np.ones(2)}, 0.1)[1] == (
        "The tasks agree in layer 2 only.")
    assert grouping.describe_agreement({}, 0.1) == []


def test_the_figure_fades_and_marks_an_undecided_layer(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(grouping, "_save_figure", lambda figure, path: figures.append(figure))
    summary = grouping.summarise({"shallow": UNDECIDED, "deep": DECIDED}, GROUPS)
    grouping.plot_grouping(summary, tmp_path / "grouping.png")
    axes = figures[0].axes[0]
    bars = np.array([patch.get_facecolor()[3] for patch in axes.patches]).reshape(3, 2)
    np.testing.assert_allclose(bars[:, 0], 0.2)                 # undecided: faded
    np.testing.assert_allclose(bars[:, 1], 1.0)                 # decided: full colour
    assert [text.get_text() for text in axes.texts] == ["0.33", "1.00"]
    dashed = [line for line in axes.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(1 / 3)
    assert "undecided" in dashed[0].get_label()


def test_reports_of_undecided_and_decided_layers_are_drawn(tmp_path):
    probabilities = {"shallow": UNDECIDED, "deep": DECIDED}
    summary = grouping.write_grouping_report(probabilities, GROUPS, tmp_path / "grouping.yaml",
                                             tmp_path / "grouping.png")
    assert grouping.read_grouping_yaml(tmp_path / "grouping.yaml")["layers"] == summary
    assert is_png(tmp_path / "grouping.png")
    path = tmp_path / "grouping_history.csv"
    for step in (0, 10):
        grouping.append_history(path, step, summary)
    grouping.plot_history(grouping.read_history(path), tmp_path / "history.png")
    assert is_png(tmp_path / "history.png")


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
    summary = grouping.write_grouping_report(synthetic_probabilities(), GROUPS,
                                             tmp_path / "grouping.yaml",
                                             tmp_path / "grouping.png", step=7)
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
    assert len(lines) == 1 + 3 * 5 * 3 and not any("org," in line for line in lines)
    assert logged_steps(path) == [0, 100, 200]

    history = grouping.read_history(path)
    assert history["groups"] == GROUPS
    assert list(history["layers"]) == [f"sfg_conv_{i}" for i in range(1, 6)]
    series = history["layers"]["sfg_conv_3"]["shared"]
    assert series["step"].tolist() == [0, 100, 200]
    assert series["fraction"][-1] == resumed["sfg_conv_3"]["fraction"]["shared"]
    assert series["mean_probability"][-1] == resumed["sfg_conv_3"]["mean_probability"]["shared"]
    assert list(history["mean_max_probability"]) == list(history["layers"])
    decided = history["mean_max_probability"]["sfg_conv_3"]
    assert decided["step"].tolist() == [0, 100, 200]
    assert decided["value"][-1] == resumed["sfg_conv_3"]["mean_max_probability"]
    assert decided["value"][0] == grouping.summarise(
        synthetic_probabilities(seed=0), GROUPS)["sfg_conv_3"]["mean_max_probability"]
    total = sum(history["layers"]["sfg_conv_2"][g]["fraction"] for g in GROUPS)
    np.testing.assert_allclose(total, 1.0)

    grouping.plot_history(history, tmp_path / "grouping_history.png")
    assert is_png(tmp_path / "grouping_history.png")


def logged_steps(path):
    """The steps of the history's rows in file order, each once per block; asserts one
    row per (step, layer, group)."""
    rows = [line.split(",")[:3] for line in path.read_text().splitlines()[1:]]
    assert len({tuple(row) for row in rows}) == len(rows), "a (step, layer, group) repeated"
    steps = [int(row[0]) for row in rows]
    return [step for index, step in enumerate(steps) if index == 0 or steps[index - 1] != step]


def log(path, steps, seed=0):
    for step in steps:
        grouping.append_history(path, step, grouping.summarise(
            synthetic_probabilities(seed=seed + step), GROUPS))


def test_a_resume_drops_the_rows_after_its_checkpoint(tmp_path):
    # Killed at step 23 after logging steps 0..20; its last checkpoint was of step 10.
    path = tmp_path / "grouping_history.csv"
    log(path, range(0, 25, 5))
    grouping.truncate_history(path, 10)
    assert logged_steps(path) == [0, 5, 10]
    log(path, [11, 15, 20], seed=1000)     # the resumed run logs its own steps
    assert logged_steps(path) == [0, 5, 10, 11, 15, 20]
    series = grouping.read_history(path)["layers"]["sfg_conv_4"]["organs"]
    assert series["fraction"][-1] == grouping.summarise(
        synthetic_probabilities(seed=1020), GROUPS)["sfg_conv_4"]["fraction"]["organs"]
    assert not list(tmp_path.glob(".*tmp*")), "the rewrite's temporary file is left"


def test_appending_a_logged_step_replaces_it_and_the_steps_after_it(tmp_path):
    # A resume without a truncation (a history from another tool, a run resumed from
    # an older checkpoint by number): steps still end strictly increasing.
    path = tmp_path / "grouping_history.csv"
    log(path, [0, 5, 10, 15])
    log(path, [5], seed=500)
    assert logged_steps(path) == [0, 5]
    history = grouping.read_history(path)
    assert history["layers"]["sfg_conv_1"]["shared"]["step"].tolist() == [0, 5]
    assert history["layers"]["sfg_conv_1"]["shared"]["fraction"][-1] == grouping.summarise(
        synthetic_probabilities(seed=505), GROUPS)["sfg_conv_1"]["fraction"]["shared"]


def test_truncating_keeps_the_older_format_and_a_missing_file_missing(tmp_path):
    grouping.truncate_history(tmp_path / "none.csv", 10)
    assert not (tmp_path / "none.csv").exists()
    path = tmp_path / "grouping_history.csv"
    legacy = ("step,layer,group,fraction,mean_probability\n"
              "0,conv,organs,0.5,0.4\n20,conv,organs,0.6,0.4\n0,conv,organs,0.7,0.4\n")
    path.write_text(legacy + "30,conv,org")          # and a line cut by a crash
    grouping.truncate_history(path, 10)
    assert path.read_text() == ("step,layer,group,fraction,mean_probability\n"
                                "0,conv,organs,0.5,0.4\n0,conv,organs,0.7,0.4\n")
    # An old file's repeated step still reads, the last rows winning.
    assert grouping.read_history(path)["layers"]["conv"]["organs"]["fraction"].tolist() == [0.7]


def test_history_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("step,layer,group,fraction\n")
    with pytest.raises(DataError, match=r"h.csv.*must start with the header"):
        grouping.read_history(path)
    path.write_text("step,layer,group,fraction,mean_probability\n0,a,shared,1.0,0.9\n"
                    "x,a,shared,1.0,0.9\n")
    with pytest.raises(DataError, match=r"Line 3 of the grouping history.*h.csv"):
        grouping.read_history(path)
    path.write_text(",".join(grouping.HISTORY_COLUMNS) + "\n0,a,shared,1.0,0.9\n")
    with pytest.raises(DataError, match=r"Line 2 of.*h.csv.*mean_probability,mean_max_prob"):
        grouping.read_history(path)
    with pytest.raises(DataError, match=r"Cannot read the grouping history.*none.csv"):
        grouping.read_history(tmp_path / "none.csv")


def test_a_history_of_the_older_format_stays_readable_and_keeps_its_columns(tmp_path):
    path = tmp_path / "grouping_history.csv"
    path.write_text("step,layer,group,fraction,mean_probability\n"
                    "0,conv,organs,0.5,0.4\n0,conv,synth_ct,0.0,0.1\n0,conv,shared,0.5,0.5\n")
    grouping.append_history(path, 10, grouping.summarise({"conv": DECIDED}, GROUPS))
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(grouping.LEGACY_HISTORY_COLUMNS)
    assert len(lines) == 7 and all(line.count(",") == 4 for line in lines)

    history = grouping.read_history(path)
    assert history["mean_max_probability"] == {}
    assert history["layers"]["conv"]["shared"]["fraction"].tolist() == [0.5, 0.5]
    grouping.plot_history(history, tmp_path / "grouping_history.png")
    assert is_png(tmp_path / "grouping_history.png")
