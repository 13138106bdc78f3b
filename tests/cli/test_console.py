"""The console of a command: its log file, and TensorFlow's native noise filtered."""

import os
import sys
import warnings

import pytest

from sfg_app.cli.console import LogFile, console_session, is_noise
from sfg_app.errors import SFGWarning

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795813577.179706   25080 port.cc:153] oneDNN custom operations are on. You",
    "I0000 00:00:1795813577.180351   25080 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1795815187.471691   14335 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.",
]
CUINIT = ("E0000 00:00:1795813578.699371   25080 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")


@pytest.mark.parametrize("line", NOISE)
def test_noise_is_dropped_everywhere(line):
    assert is_noise(line, gpu=False) and is_noise(line, gpu=True)


def test_a_cuinit_failure_is_kept_where_there_is_a_gpu():
    assert is_noise(CUINIT, gpu=False) and not is_noise(CUINIT, gpu=True)


def test_other_native_lines_pass():
    line = "W0000 00:00:1.0 1 op_level_cost_estimator.cc:699] Error in PredictCost()"
    assert not is_noise(line, gpu=False)


def test_the_log_keeps_a_redrawn_line_as_last_drawn(tmp_path):
    log = LogFile(str(tmp_path / "x.log"))
    log.write("iter 1\riter 2\riter 3")
    log.write("\ndone\nhalf")
    log.close()
    assert (tmp_path / "x.log").read_text() == "iter 3\ndone\nhalf\n"


def test_a_session_logs_python_and_native_lines_without_the_noise(tmp_path, capfd):
    path = tmp_path / "run" / "sfg_test.log"
    with console_session("sfg_test", str(path), argv=["-c", "c.ini"]) as logged:
        assert logged == str(path)
        print("to stdout")
        print("to stderr", file=sys.stderr)
        os.write(2, ("\n".join(NOISE + [CUINIT]) + "\nW0000 native warning\n").encode())
        warnings.warn("a volume is thin", SFGWarning)
    out, err = capfd.readouterr()
    assert out == "to stdout\n"
    assert "to stderr" in err and "W0000 native warning" in err
    assert "sfg_test: warning: a volume is thin" in err
    assert not any(noise in err for noise in ("absl", "cudart_stub", "port.cc", "cpu_feature"))
    log = path.read_text()
    assert log.startswith("=== ") and "sfg_test -c c.ini (sfg " in log.splitlines()[0]
    for line in ("to stdout", "to stderr", "W0000 native warning",
                 "sfg_test: warning: a volume is thin"):
        assert line in log
    assert "cudart_stub" not in log
    assert sys.stdout is not None and os.write(2, b"") == 0  # descriptors restored


def test_without_a_log_path_nothing_is_written(tmp_path, capfd):
    with console_session("sfg_test", None) as logged:
        print("hello")
    assert logged is None and capfd.readouterr().out == "hello\n"
    assert list(tmp_path.iterdir()) == []
