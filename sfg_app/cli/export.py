"""``sfg_export``: the compact network of one task of a trained SFG network.

Only the kernels of the map architecture (each kernel in its most probable group) that
can reach the task's head are kept; the result is written as a Keras file and as a
TensorFlow SavedModel.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Sequence

from sfg_app.cli.common import build_parser, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "sfg_export", "Export the compact network of one task of a trained SFG network: "
                      "the kernels of that task's and the shared group (those that reach "
                      "its head), as <task>.keras and <task>_savedmodel/.",
        "sfg_export --config configs/demo.ini --task organs")
    parser.add_argument("--task", required=True, metavar="NAME",
                        help="the task to export (one of [MULTITASK] tasks)")
    parser.add_argument("--output", type=lambda text: pathlib.Path(text).absolute(),
                        metavar="DIR", help="folder of the exported files (default: "
                                            "<model_dir>/export)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing exported files of the task")

    def export(args, settings):
        from sfg_app import commands

        commands.export(settings, args.task, output_dir=args.output,
                        overwrite=args.overwrite)

    def same_network(args, settings, stack):
        from sfg_app import commands

        commands.check_network(settings, "export its trained network")

    return run_command(parser, argv, export, preflight=same_network)


if __name__ == "__main__":
    sys.exit(main())
