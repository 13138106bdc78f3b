"""``sfg_train``: train the network a config describes (resuming when it can)."""

from __future__ import annotations

import shlex
import sys
from typing import Sequence

from sfg_app.cli.common import build_parser, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "sfg_train", "Train a multi-task network from a config file.",
        "sfg_train --config configs/demo.ini --set TRAINING.max_iter=50")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and read every data file (header, shape, "
                             "affine, finite values, label range, matching grids) without "
                             "training: exit 0 when all is well, 2 listing every problem")

    def train(args, settings):
        from sfg_app import commands

        if args.check:
            commands.check(settings)
        else:
            commands.train(settings)

    def claim(args, settings, stack):
        if args.check:
            return None
        from sfg_app import commands

        return commands.claim_run(settings, stack, shlex.join(
            ["sfg_train", *(sys.argv[1:] if argv is None else argv)]))

    return run_command(parser, argv, train, makes_model_dir=lambda args: not args.check,
                       preflight=claim, logs=lambda args: not args.check)


if __name__ == "__main__":
    sys.exit(main())
