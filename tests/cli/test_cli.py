"""The command-line front ends, run in-process through ``main(argv)``."""

import os
import argparse
import sys
import types

import pytest

import sfg_app
from sfg_app.cli import evaluate, groups, infer, train
from sfg_app.cli.common import build_parser, run_command
from sfg_app.errors import DataError

COMMANDS = {"sfg_train": train, "sfg_infer": infer, "sfg_eval": evaluate,
            "sfg_groups": groups}

VALID = """\
[SYSTEM]
model_dir = run

[MR]
path_to_search = data
spatial_window_size = (16, 16, 16)

[SEG]
path_to_search = data

[NETWORK]
name = highres3dnet

[MULTITASK]
image = MR
tasks = seg

[TASK seg]
type = segmentation
target = SEG
num_classes = 2
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text(VALID)
    return path


@pytest.fixture
def engine(monkeypatch):
    """A stand-in for sfg_app.commands that records what the CLI asked of it."""
    calls = []
    fake = types.SimpleNamespace(
        train=lambda settings: calls.append(("train", settings)),
        check=lambda settings: calls.append(("check", settings)),
        evaluate=lambda settings: calls.append(("evaluate", settings)),
        report_groups=lambda settings: calls.append(("report_groups", settings)),
        infer=lambda settings, inputs=None, output_dir=None, overwrite=False, network=None:
        calls.append(("infer", settings, inputs, output_dir, overwrite, network)),
        claim_run=lambda settings, stack, command_line: None,
        check_network=lambda settings, what: None)
    monkeypatch.setitem(sys.modules, "sfg_app.commands", fake)
    monkeypatch.setattr(sfg_app, "commands", fake, raising=False)
    return calls


@pytest.mark.parametrize("prog", COMMANDS)
def test_help(prog, capsys):
    assert COMMANDS[prog].main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} ")
    assert "--config PATH" in out and "--set SECTION.key=value" in out
    assert "--help-config" in out


@pytest.mark.parametrize("prog", COMMANDS)
def test_help_config_prints_the_reference_without_a_config(prog, capsys):
    assert COMMANDS[prog].main(["--help-config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sfg configuration reference")
    assert "\n  max_iter = 10000\n" in out and "\n[TASK <name>]\n" in out


def test_misspelt_key_exits_2_naming_key_and_suggestion(tmp_path, capsys):
    path = tmp_path / "c.ini"
    path.write_text("[TRAINING]\nmax_itr = 5\n")
    assert train.main(["--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"sfg_train: error: {path}, line 2: [TRAINING] has no key "
                                   "'max_itr'. Did you mean 'max_iter'?")
    assert "Traceback" not in captured.err and captured.out == ""


def test_bad_override_exits_2(config_file, capsys, engine):
    assert train.main(["--config", str(config_file), "--set", "TRAINING.max_iter=-1"]) == 2
    assert "sfg_train: error: --set TRAINING.max_iter=-1: invalid value for [TRAINING] " \
           "max_iter" in capsys.readouterr().err
    assert engine == []


def test_missing_config_argument_exits_2(capsys):
    assert train.main([]) == 2
    assert "the following arguments are required: -c/--config" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert evaluate.main(["--config", str(tmp_path / "nothere.ini")]) == 2
    assert "sfg_eval: error: Config file not found" in capsys.readouterr().err


def test_train_passes_overridden_settings_to_the_engine(config_file, engine, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train.main(["--config", str(config_file), "--set", "TRAINING.max_iter=50",
                       "--set", "SYSTEM.model_dir=runs/x",
                       "--set", "TASK seg.loss=dice"]) == 0
    (name, settings), = engine
    assert name == "train"
    assert settings.training.max_iter == 50
    assert settings.system.model_dir == tmp_path / "runs" / "x"
    assert settings.tasks["seg"].loss == "dice"


@pytest.mark.parametrize("module, name", [(evaluate, "evaluate"), (groups, "report_groups")])
def test_evaluate_and_groups_call_the_engine(module, name, config_file, engine):
    assert module.main(["--config", str(config_file)]) == 0
    assert [call[0] for call in engine] == [name]


def test_infer_passes_inputs_and_output(config_file, engine, tmp_path, monkeypatch):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert infer.main(["--config", str(config_file), "--input", "scan.nii.gz",
                       "--output", "out"]) == 0
    (_, settings, inputs, output_dir, overwrite, network), = engine
    assert inputs == [scan] and output_dir == tmp_path / "out"
    assert not overwrite and network is None
    engine.clear()
    assert infer.main(["--config", str(config_file), "--overwrite",
                       "--network", "x.keras"]) == 0
    assert engine[0][2:] == (None, None, True, tmp_path / "x.keras")


def test_train_check_calls_the_check_and_writes_no_log(config_file, engine, tmp_path):
    assert train.main(["--config", str(config_file), "--check"]) == 0
    assert [call[0] for call in engine] == ["check"]
    assert not (tmp_path / "run").exists()


def test_infer_refuses_a_missing_input(config_file, capsys, engine):
    assert infer.main(["--config", str(config_file), "--input", "nothere.nii"]) == 2
    assert "argument --input: nothere.nii does not exist" in capsys.readouterr().err
    assert engine == []


def _parser():
    return build_parser("sfg_test", "A test command.", "sfg_test --config c.ini")


def test_user_errors_from_the_command_exit_2_without_traceback(config_file, capsys):
    def command(args, settings):
        raise DataError("subject 007: the image has 2 dimensions; expected 3")

    assert run_command(_parser(), ["--config", str(config_file)], command) == 2
    assert capsys.readouterr().err == ("sfg_test: error: subject 007: the image has 2 "
                                       "dimensions; expected 3\n")


def test_interrupt_exits_130(config_file, capsys):
    def command(args, settings):
        raise KeyboardInterrupt

    assert run_command(_parser(), ["--config", str(config_file)], command) == 130
    assert "sfg_test: interrupted" in capsys.readouterr().err


def test_sigterm_during_a_write_exits_143_and_leaves_no_temporary_file(config_file,
                                                                       tmp_path, capsys):
    import signal

    from sfg_app.io.atomic import atomic_path

    target = tmp_path / "out" / "s1_organs.nii.gz"

    def command(args, settings):
        with atomic_path(target) as temporary:
            open(temporary, "wb").write(b"half an image")
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    assert run_command(_parser(), ["--config", str(config_file)], command) == 143
    assert "stopped by SIGTERM; files being written were removed" in capsys.readouterr().err
    assert os.listdir(tmp_path / "out") == []
    assert signal.getsignal(signal.SIGTERM) == before


def test_programming_errors_are_not_hidden(config_file):
    def command(args, settings):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_command(_parser(), ["--config", str(config_file)], command)


def test_command_receives_its_arguments(config_file):
    received = []
    parser = _parser()
    parser.add_argument("--flag", action="store_true")
    assert run_command(parser, ["--config", str(config_file), "--flag"],
                       lambda args, settings: received.append(args)) == 0
    assert isinstance(received[0], argparse.Namespace) and received[0].flag


@pytest.mark.parametrize("prog", COMMANDS)
def test_version_and_niftynets_short_config_flag(prog, tmp_path, capsys):
    import sfg_app

    assert COMMANDS[prog].main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"{prog} (sfg) {sfg_app.__version__}"
    path = tmp_path / "c.ini"
    path.write_text("[TRAINING]\nmax_itr = 5\n")
    assert COMMANDS[prog].main(["-c", str(path)]) == 2
    assert "has no key 'max_itr'" in capsys.readouterr().err


def test_package_version_matches_setup():
    import pathlib
    import re

    import sfg_app

    setup = (pathlib.Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert re.search(r'VERSION = "([^"]+)"', setup).group(1) == sfg_app.__version__


def test_a_users_other_keras_backend_gets_one_line(config_file, engine, capsys,
                                                   monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert evaluate.main(["--config", str(config_file)]) == 0
    assert "KERAS_BACKEND=torch is set; sfg's engine runs on tensorflow" in \
        capsys.readouterr().err
    assert os.environ["KERAS_BACKEND"] == "tensorflow"


def test_train_check_leaves_an_existing_run_folder_and_its_log_alone(config_file, engine,
                                                                      tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "sfg_train.log").write_text("the run's log\n")
    assert train.main(["--config", str(config_file), "--check"]) == 0
    assert (tmp_path / "run" / "sfg_train.log").read_text() == "the run's log\n"
    assert os.listdir(tmp_path / "run") == ["sfg_train.log"]
