"""What every sfg command shares: ``--config``, ``--set``, ``--help-config`` and exit codes.

A command is a ``main(argv=None) -> int``; only ``run_command`` turns errors into exit
statuses, so the code below it raises and never prints or exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

import sfg_app
from sfg_app.errors import SFGError

#: Exit status of a user error (as argparse uses for a bad argument) and of Ctrl-C.
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


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
                command: Callable[[argparse.Namespace, object], object]) -> int:
    """Parses ``argv``, loads the settings and runs ``command(args, settings)``.

    An ``SFGError`` becomes ``prog: error: message`` on stderr and status 2, with no
    traceback; Ctrl-C becomes status 130.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --help-config and argument errors
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    # The engine runs on TensorFlow whatever backend the shell names for other work.
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from sfg_app.config import load_settings

        command(args, load_settings(args.config, args.overrides))
    except SFGError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
