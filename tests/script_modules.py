"""The repository's scripts (not a package) as modules, for their tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """The module of ``REPO/relative`` (e.g. ``scripts/extract_mni.py``), executed once
    per call. It is registered in ``sys.modules`` under its stem while it runs, because a
    dataclass looks its module up while it is defined."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
