"""oneDNN is turned on before TensorFlow is imported, unless the user chose."""

import os
import subprocess
import sys

import pytest

from sfg_app import runtime


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


def _child(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], env=environ, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(runtime.platform.machine().lower() not in runtime.X86_MACHINES,
                    reason="oneDNN is turned on by sfg on x86 CPUs only")
def test_importing_sfg_sets_it_before_tensorflow_reads_it():
    code = ("import os, sfg_app, sys; assert 'tensorflow' not in sys.modules; "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), sfg_app.runtime.onednn_notice() "
            "is not None)")
    assert _child(code) == "1 True"
    assert _child(code, TF_ENABLE_ONEDNN_OPTS="0") == "0 False"
