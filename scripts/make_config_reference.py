"""Writes docs/config_reference.md from the config schema; ``--check`` only compares.

    python scripts/make_config_reference.py            # regenerate after editing schema.py
    python scripts/make_config_reference.py --check    # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Sequence

from sfg_app.config import reference_markdown

REFERENCE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "config_reference.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare instead of writing; exit 1 when they differ")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.check:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != text:
            print(f"{REFERENCE} is out of date: run python scripts/make_config_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    temporary = REFERENCE.with_name(f".{REFERENCE.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, REFERENCE)
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
