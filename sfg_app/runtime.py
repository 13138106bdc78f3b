"""Process-wide TensorFlow settings that must be chosen before TensorFlow is imported.

TensorFlow 2.21 turns its oneDNN CPU kernels on by default only on CPUs with AVX512-VNNI,
AVX512-BF16 or AMX. On AVX2-only x86 CPUs (most laptops and many cloud machines) it leaves
them off, and a training step of our networks is about 3.8x slower (bench_sfg.py at the
demo's size: 4.72 s against 1.25 s a step on a 2-core AMD EPYC). sfg's command-line entry
points (``sfg_app.cli.common.run_command``), the test session and the benchmarks turn them
on for every x86 CPU unless the user chose with ``TF_ENABLE_ONEDNN_OPTS`` themselves;
importing sfg_app leaves the environment as it is, so a program that uses sfg as a library
keeps its own choice.
"""

from __future__ import annotations

import os
import platform
import sys

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")


def enable_onednn(environ=None, machine: str | None = None,
                  tensorflow_imported: bool | None = None) -> bool:
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` on an x86 CPU when nobody set it; True if it did.

    Does nothing once TensorFlow is imported (the variable is read at import), on other
    architectures (oneDNN's ARM kernels are TensorFlow's own choice there) and when the
    variable is already set, to any value.
    """
    environ = os.environ if environ is None else environ
    machine = (platform.machine() if machine is None else machine).lower()
    if tensorflow_imported is None:
        tensorflow_imported = "tensorflow" in sys.modules
    if tensorflow_imported or machine not in X86_MACHINES or ONEDNN_VARIABLE in environ:
        return False
    environ[ONEDNN_VARIABLE] = "1"
    return True


#: What a command logs when ``enable_onednn`` turned oneDNN on.
ONEDNN_NOTICE = (f"oneDNN CPU kernels on ({ONEDNN_VARIABLE}=1 set by sfg: about 4x faster "
                 f"on AVX2 CPUs; set {ONEDNN_VARIABLE}=0 to turn them off)")
