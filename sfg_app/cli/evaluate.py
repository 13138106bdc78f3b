"""``sfg_eval``: metrics of the inferred outputs against their targets, as CSV files."""

from __future__ import annotations

import sys
from typing import Sequence

from sfg_app.cli.common import build_parser, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "sfg_eval", "Evaluate inferred outputs against their targets; writes CSV files to "
                    "[EVALUATION] save_csv_dir.",
        "sfg_eval --config configs/demo.ini")

    def evaluate(args, settings):
        from sfg_app import commands

        commands.evaluate(settings)

    return run_command(parser, argv, evaluate)


if __name__ == "__main__":
    sys.exit(main())
