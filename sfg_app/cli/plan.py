"""``sfg_plan``: plan a complete config from a minimal one and the data it names."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from sfg_app.cli.common import EXIT_USER_ERROR, build_parser
from sfg_app.cli.console import console_session
from sfg_app.errors import SFGError
from sfg_app.io.paths import describe_os_error


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of GB > 0, received {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "sfg_plan", "Plan a complete config from a minimal one (the input sections, "
                    "[MULTITASK] image and tasks, and each [TASK name]'s type and target) "
                    "and the data it names: every planned key gets a comment saying why. "
                    "See docs/planning.md.",
        "sfg_plan --config minimal.ini --output planned.ini --device gpu:24")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="the planned config to write (.ini)")
    parser.add_argument("--device", default="cpu", metavar="cpu|gpu:NN",
                        help="where training will run: cpu (this machine's memory, read "
                             "from /proc/meminfo) or gpu:NN, a GPU of NN GB (default cpu)")
    parser.add_argument("--memory-gb", type=_positive, default=None, metavar="X",
                        help="memory of the training device in GB, instead of the one "
                             "--device implies")
    parser.add_argument("--max-subjects", type=int, default=20, metavar="N",
                        help="subjects whose voxels are sampled (default 20; every "
                             "subject's header is read)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output if it exists")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --help-config and argument errors
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    with console_session(parser.prog, None, argv):
        from sfg_app.planning.planner import plan_config

        try:
            result = plan_config(args.config, args.output, args.overrides, args.device,
                                 args.memory_gb, max(1, args.max_subjects), args.overwrite)
        except SFGError as error:
            print(f"{parser.prog}: error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        except OSError as error:
            print(f"{parser.prog}: error: {describe_os_error(error)}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(result.table, end="")
        print(f"{parser.prog}: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
