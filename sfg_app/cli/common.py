"""What every sfg command shares: ``--config``, ``--set``, ``--help-config``, the
process's environment and console, the log file and exit codes.

A command is a ``main(argv=None) -> int``; only ``run_command`` turns errors into exit
statuses, so the code below it raises and never prints or exits. A user's error (an
``SFGError``, or what the operating system refused: no space, no permission, a file
where a folder should be) is one line ``prog: error: ...`` and status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import sys
from typing import Callable, Sequence

import sfg_app
from sfg_app import runtime
from sfg_app.cli.console import console_session
from sfg_app.errors import SFGError, TrainingStopped
from sfg_app.io.paths import describe_os_error
from sfg_app.io.run_folder import RunFolder

#: Exit status of a user error (as argparse uses for a bad argument), of Ctrl-C and of a
#: run stopped cleanly by SIGTERM (128 + the signal, as a shell reports them).
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
#: TensorFlow's errors that report what the system refused rather than a bug.
_TF_SYSTEM_ERRORS = ("PermissionDeniedError", "ResourceExhaustedError", "NotFoundError",
                     "AlreadyExistsError", "DataLossError")


class _HelpConfigAction(argparse.Action):
    """Prints the reference of every config key and exits, like ``--help``."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from sfg_app.config import reference_text

        sys.stdout.write(reference_text())
        parser.exit()


def build_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example:\n  {example}\n\nEvery config key and its default: "
               f"{prog} --help-config")
    parser.add_argument("-c", "--config", required=True, metavar="PATH",
                        help="config file: INI (.ini, .cfg) or YAML (.yaml, .yml)")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s (sfg) {sfg_app.__version__}")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="SECTION.key=value",
                        help="override one config key (repeatable), e.g. "
                             "--set TRAINING.max_iter=50 --set \"TASK organs.loss=dice\"")
    parser.add_argument("--help-config", action=_HelpConfigAction,
                        help="print the reference of every config key and exit")
    return parser


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                command: Callable[[argparse.Namespace, object], object],
                makes_model_dir: Callable[[argparse.Namespace], bool] = lambda args: False,
                preflight: Callable | None = None,
                logs: Callable[[argparse.Namespace], bool] = lambda args: True) -> int:
    """Parses ``argv``, chooses the process's environment (``_command_environment``),
    loads the settings and runs ``command(args, settings)`` with the console of
    ``console_session``: the run folder's log of ``prog``, kept when
    ``logs(args)`` and the model folder exists or ``makes_model_dir(args)`` says the
    command creates it (a command that fails on an untrained folder leaves nothing
    behind).

    ``preflight(args, settings, stack)`` runs first, before the log is opened, so that a
    command it refuses changes nothing in the run folder: it raises to refuse, enters
    what the command must hold (a lock) into the ``contextlib.ExitStack`` ``stack``, and
    returns a message instead of None when there is nothing to do (printed; status 0).

    An ``SFGError`` or an operating-system error becomes ``prog: error: message`` on
    stderr and status 2, with no traceback; Ctrl-C becomes status 130, a run stopped by
    SIGTERM status 143.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --help-config and argument errors
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    onednn_set = _command_environment(parser.prog)
    from sfg_app.config import load_settings

    try:
        settings = load_settings(args.config, args.overrides)
    except SFGError as error:
        return _fail(parser.prog, str(error))
    with contextlib.ExitStack() as stack:
        try:
            done = preflight(args, settings, stack) if preflight else None
        except SFGError as error:
            return _fail(parser.prog, str(error))
        except OSError as error:
            return _fail(parser.prog, describe_os_error(error))
        if done:
            print(f"{parser.prog}: {done}", file=sys.stderr)
            return 0
        return _run(parser, argv, command, args, settings,
                    logs(args) and (os.path.isdir(str(settings.system.model_dir))
                                    or makes_model_dir(args)), onednn_set)


def _command_environment(prog: str) -> bool:
    """The process's environment for a command, chosen here, at the entry point, before
    anything imports TensorFlow (importing sfg_app changes nothing): the Keras backend,
    TensorFlow's native log level and its oneDNN kernels (``sfg_app.runtime``). True when
    this call turned oneDNN on, which the command's log then says."""
    # The engine runs on TensorFlow whatever backend the shell names for other work.
    chosen = os.environ.get("KERAS_BACKEND", "tensorflow")
    if chosen != "tensorflow":
        print(f"{prog}: KERAS_BACKEND={chosen} is set; sfg's engine runs on "
              "tensorflow (the networks alone also run on torch and jax).", file=sys.stderr)
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return runtime.enable_onednn()


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so that `finally` blocks (a temporary file
    removed, TensorFlow's generated files) run before the process ends."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_exception():
    """SIGTERM raises `_Terminated` while the block runs (the training loop installs its
    own recorder inside, and puts this one back). Only the main thread may set it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _run(parser, argv, command, args, settings, log: bool, onednn_set: bool) -> int:
    log_path = str(RunFolder(str(settings.system.model_dir)).command_log(parser.prog)) \
        if log else None
    with console_session(parser.prog, log_path, argv), _sigterm_as_exception():
        if onednn_set:
            print(runtime.ONEDNN_NOTICE, file=sys.stderr)
        try:
            command(args, settings)
        except SFGError as error:
            return _fail(parser.prog, str(error))
        except OSError as error:
            return _fail(parser.prog, describe_os_error(error))
        except TrainingStopped as stop:
            print(f"{parser.prog}: {stop}", file=sys.stderr)
            return EXIT_TERMINATED
        except _Terminated:
            print(f"{parser.prog}: stopped by SIGTERM; files being written were removed",
                  file=sys.stderr)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            print(f"{parser.prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as error:
            if (type(error).__name__ not in _TF_SYSTEM_ERRORS
                    or not type(error).__module__.startswith("tensorflow")):
                raise
            return _fail(parser.prog, " ".join(str(error).split())[:800])
    return 0


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR
