"""``sfg_infer``: run a trained network over whole volumes and write its outputs."""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Sequence

from sfg_app.cli.common import build_parser, run_command


def _existing(text: str) -> pathlib.Path:
    path = pathlib.Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path.absolute()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(
        "sfg_infer", "Infer every task on the subjects of [INFERENCE] dataset_to_infer, or "
                     "on the image files given with --input; with --network, only the "
                     "task of a network exported by sfg_export.",
        "sfg_infer --config configs/demo.ini --input scan.nii.gz --output out/")
    parser.add_argument("--input", nargs="+", type=_existing, metavar="FILE",
                        help="image files (or DICOM series folders) to infer instead of the "
                             "subjects of the split")
    parser.add_argument("--output", type=lambda text: pathlib.Path(text).absolute(),
                        metavar="DIR", help="folder of the outputs (default: [INFERENCE] "
                                            "save_seg_dir)")
    parser.add_argument("--network", type=lambda text: pathlib.Path(text).absolute(),
                        metavar="FILE.keras",
                        help="run the compact network of one task that sfg_export wrote "
                             "(<model_dir>/export/<task>.keras) instead of restoring the "
                             "config's network from [SYSTEM] model_dir: only that task's "
                             "outputs are written; the config still gives the "
                             "preprocessing, windows, blending and the task's settings. "
                             "Needs [INFERENCE] architecture = map (the exported network "
                             "is the map architecture); inference_iter is not used")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that exist already (default: an existing "
                             "output is an error); input images are never overwritten")

    def infer(args, settings):
        from sfg_app import commands

        commands.infer(settings, inputs=args.input, output_dir=args.output,
                       overwrite=args.overwrite, network=args.network)

    def same_network(args, settings, stack):
        if args.network is None:
            from sfg_app import commands

            commands.check_network(settings, "infer with its checkpoints")

    return run_command(parser, argv, infer, preflight=same_network)


if __name__ == "__main__":
    sys.exit(main())
