"""``sfg_groups``: report the filter grouping a trained SFG network learned, layer by layer."""

from __future__ import annotations

import sys
from typing import Sequence

from sfg_app.cli.common import build_parser, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "sfg_groups", "Report the learned grouping of a trained SFG network: per layer, the "
                      "share of kernels in each task's group and in the shared group.",
        "sfg_groups --config configs/demo.ini")

    def report(args, settings):
        from sfg_app import commands

        commands.report_groups(settings)

    def same_network(args, settings, stack):
        from sfg_app import commands

        commands.check_network(settings, "report its learned grouping")

    return run_command(parser, argv, report, preflight=same_network)


if __name__ == "__main__":
    sys.exit(main())
