"""The config sections of a tiny SFG run on phantoms of ``SHAPE`` voxels in ``data/``:
organ segmentation and MR -> CT synthesis, 16^3 windows, quarter width, one iteration.
Tests that train such a run start from these and change what they test."""

SHAPE = (20, 18, 16)  # voxels of each phantom, on its own orientation and voxel size


def tiny_sections(model_dir: str, network: str = "sfg_highres3dnet") -> dict:
    return {
        "SYSTEM": {"model_dir": model_dir, "seed": 1, "num_threads": 0},
        "MR": {"path_to_search": "data", "filename_contains": "_mr",
               "spatial_window_size": (16, 16, 16), "normalisation": "zscore"},
        "CT": {"path_to_search": "data", "filename_contains": "_ct"},
        "LABEL": {"path_to_search": "data", "filename_contains": "_seg"},
        "NETWORK": {"name": network, "batch_size": 1, "layer_scale": 0.25},
        "MULTITASK": {"image": "MR", "tasks": "organs, synth_ct"},
        "TASK organs": {"type": "segmentation", "target": "LABEL", "num_classes": 6},
        "TASK synth_ct": {"type": "regression", "target": "CT", "target_scale": 1000},
        "TRAINING": {"max_iter": 1, "save_every_n": 100,
                     "exclude_fraction_for_inference": 0.3},
        "INFERENCE": {"border": (2, 2, 2)},
    }
