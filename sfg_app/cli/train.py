"""``sfg_train``: train the network a config describes (resuming when it can)."""

from __future__ import annotations

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

    return run_command(parser, argv, train, makes_model_dir=lambda args: not args.check)


if __name__ == "__main__":
    sys.exit(main())
