"""The configs of runs on the phantoms (``phantoms.write_dataset``'s files), for the tests
and the benchmarks.

Every such run starts from one, the tiny run of ``phantom_sections``, and states only what
it changes, so that a reader sees what a test or a benchmark is about and the phantoms'
sections are written once. Sections are plain ``{header: {key: value}}`` dicts of Python
values: ``config.settings_from_dict`` reads them as they are, ``ini_text`` writes them as
the INI file a user would write (a benchmark or a test of the command line runs that).
It lives in the package, beside the phantoms, rather than in the tests' conftest.py,
because the benchmark scripts build their configs with it too.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Mapping

#: Voxels of each phantom of the tiny run, on its own orientation and voxel size: its
#: 16^3 windows fit in every acquisition.
TINY_SHAPE = (20, 18, 16)


def _phantom_input(data: str, suffix: str) -> dict[str, Any]:
    """An input section reading the phantoms' ``*{suffix}`` files in ``data``."""
    return {"path_to_search": data, "filename_contains": suffix}


def phantom_sections(model_dir: str | os.PathLike = "run", changes: Mapping | None = None,
                     *, data: str | os.PathLike = "data",
                     body_mask: bool = False) -> dict[str, dict]:
    """The tiny run, changed by ``changes``: an SFG network at quarter width on 16^3
    windows of the phantoms in ``data`` learning organ segmentation (6 classes) and MR -> CT
    synthesis (in Hounsfield units / 1000), one iteration, 30% of the subjects for
    inference.

    ``body_mask`` adds the body masks ([BODY]) and limits the synthesis loss to them.
    ``changes`` is merged by ``with_changes``.
    """
    model_dir, data = str(model_dir), str(data)
    inputs = {"MR": dict(_phantom_input(data, "_mr"), spatial_window_size=(16, 16, 16),
                         normalisation="zscore"),
              "CT": _phantom_input(data, "_ct"),
              "LABEL": _phantom_input(data, "_seg")}
    synthesis = {"type": "regression", "target": "CT", "target_scale": 1000}
    if body_mask:
        inputs["BODY"] = _phantom_input(data, "_body")
        synthesis["mask"] = "BODY"
    sections = {
        "SYSTEM": {"model_dir": model_dir, "seed": 1, "num_threads": 0},
        **inputs,
        "NETWORK": {"name": "sfg_highres3dnet", "batch_size": 1, "layer_scale": 0.25},
        "MULTITASK": {"image": "MR", "tasks": "organs, synth_ct"},
        "TASK organs": {"type": "segmentation", "target": "LABEL", "num_classes": 6},
        "TASK synth_ct": synthesis,
        "TRAINING": {"max_iter": 1, "save_every_n": 100,
                     "exclude_fraction_for_inference": 0.3},
        "INFERENCE": {"border": (2, 2, 2)},
    }
    return with_changes(sections, changes or {})


def with_changes(sections: Mapping, changes: Mapping) -> dict[str, dict]:
    """A copy of ``sections`` with ``changes`` ({header: {key: value}}) merged in: a key's
    value replaces the one there, a new section comes last; a value of None drops its key
    (the schema's default then holds), a section of None the whole section."""
    merged = copy.deepcopy(dict(sections))
    for header, keys in changes.items():
        if keys is None:
            merged.pop(header, None)
            continue
        section = merged.setdefault(header, {})
        for key, value in keys.items():
            if value is None:
                section.pop(key, None)
            else:
                section[key] = value
    return merged


def _ini_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):  # as Python writes a tuple: (0,), (1, 2)
        return "(" + ", ".join(map(_ini_value, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ini_text(sections: Mapping) -> str:
    """``sections`` as the text of an INI config file."""
    return "\n".join(f"[{header}]\n" + "".join(f"{key} = {_ini_value(value)}\n"
                                               for key, value in keys.items())
                     for header, keys in sections.items())
