"""``sfg_train``: train the network a config describes (resuming when it can)."""

from __future__ import annotations

import sys
from typing import Sequence

from sfg_app.cli.common import build_parser, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "sfg_train", "Train a multi-task network from a config file.",
        "sfg_train --config configs/demo.ini --set TRAINING.max_iter=50")

    def train(args, settings):
        from sfg_app.engine import commands

        commands.train(settings)

    return run_command(parser, argv, train)


if __name__ == "__main__":
    sys.exit(main())
