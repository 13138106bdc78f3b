"""oneDNN is turned on by the command line before TensorFlow is imported, unless the user
chose; importing sfg_app changes nothing in the environment."""

import os
import subprocess
import sys

import pytest

from sfg_app import runtime
from sfg_app.demo.configs import ini_text, phantom_sections


@pytest.mark.parametrize("machine", ["x86_64", "AMD64", "i686"])
def test_onednn_is_set_on_x86_when_unset(machine):
    environ = {}
    assert runtime.enable_onednn(environ, machine, tensorflow_imported=False)
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "1"}


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_a_user_choice_is_kept(value):
    environ = {"TF_ENABLE_ONEDNN_OPTS": value}
    assert not runtime.enable_onednn(environ, "x86_64", tensorflow_imported=False)
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": value}


def test_other_architectures_and_late_calls_are_left_alone():
    environ = {}
    assert not runtime.enable_onednn(environ, "aarch64", tensorflow_imported=False)
    assert not runtime.enable_onednn(environ, "x86_64", tensorflow_imported=True)
    assert environ == {}


def _child(code: str, *arguments: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code, *arguments], env=environ, check=True,
                          capture_output=True, text=True)


def test_importing_sfg_app_changes_nothing_in_the_environment():
    code = ("import os, sys; before = dict(os.environ); import sfg_app; "
            "assert 'tensorflow' not in sys.modules; print(dict(os.environ) == before)")
    assert _child(code).stdout.strip() == "True"


def test_importing_every_module_of_sfg_app_changes_nothing_in_the_environment():
    """TensorFlow and Keras set variables of their own when imported (TF2_BEHAVIOR, ...):
    they are imported first, and what sfg's modules change is what differs after."""
    code = """if True:
        import importlib, os, pkgutil
        import keras, tensorflow
        before = dict(os.environ)
        import sfg_app
        names = [m.name for m in pkgutil.walk_packages(sfg_app.__path__, "sfg_app.")]
        for name in names:
            importlib.import_module(name)
        print(len(names), sorted(k for k in set(before) | set(os.environ)
                                 if before.get(k) != os.environ.get(k)))
    """
    count, changed = _child(code).stdout.strip().split(" ", 1)
    assert int(count) > 50 and changed == "[]"


@pytest.mark.skipif(runtime.platform.machine().lower() not in runtime.X86_MACHINES,
                    reason="oneDNN is turned on by sfg on x86 CPUs only")
def test_a_command_turns_it_on_before_tensorflow_and_says_so(tmp_path):
    config = tmp_path / "c.ini"
    config.write_text(ini_text(phantom_sections(tmp_path / "run")))
    code = ("import os, sys; from sfg_app.cli.common import build_parser, run_command; "
            "status = run_command(build_parser('sfg_test', 'A test.', 'sfg_test -c c.ini'), "
            "['-c', sys.argv[1]], lambda args, settings: None); "
            "print(status, os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    done = _child(code, str(config))
    assert done.stdout.strip() == "0 1"
    assert runtime.ONEDNN_NOTICE in done.stderr
    done = _child(code, str(config), TF_ENABLE_ONEDNN_OPTS="0")   # the user's choice
    assert done.stdout.strip() == "0 0"
    assert runtime.ONEDNN_NOTICE not in done.stderr
