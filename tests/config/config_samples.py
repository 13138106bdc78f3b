"""A valid two-task config (segmentation + regression, as in the paper) to start tests from."""

from __future__ import annotations


def base_config() -> dict[str, dict[str, str]]:
    return {
        "SYSTEM": {"model_dir": "runs/pelvis", "seed": "7"},
        "MR": {"path_to_search": "data/pelvis", "filename_contains": "_mr",
               "spatial_window_size": "(32, 32, 16)", "normalisation": "zscore"},
        "CT": {"path_to_search": "data/pelvis", "filename_contains": "_ct"},
        "LABEL": {"path_to_search": "data/pelvis", "filename_contains": "_seg"},
        "BODY": {"path_to_search": "data/pelvis", "filename_contains": "_body"},
        "NETWORK": {"name": "sfg_highres3dnet", "window_sampling": "balanced"},
        "SFG": {"prior": "(1/3, 1/3, 1/3)", "anneal_rate": "1e-4"},
        "MULTITASK": {"image": "MR", "tasks": "organs, synth_ct"},
        "TASK organs": {"type": "segmentation", "target": "LABEL", "num_classes": "5"},
        "TASK synth_ct": {"type": "regression", "target": "CT", "mask": "BODY"},
        "TRAINING": {"max_iter": "100", "rotation_angle": "(-10, 10)"},
        "INFERENCE": {"border": "(4, 4, 2)"},
    }


def to_ini(config: dict[str, dict[str, str]]) -> str:
    blocks = []
    for header, values in config.items():
        lines = [f"[{header}]"] + [f"{key} = {value}" for key, value in values.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
