"""sfg_plan on real files, then the planned config through sfg_train --check, 20 training
iterations and sfg_infer, whose outputs must lie on each input's grid.

Three datasets: the demo's phantoms (MR, CT, labels, body masks); the MNI152 2009a
template that nilearn's wheel ships (T1, with tissue labels and a grey-matter map made
from its probability maps as scripts/extract_mni.py makes them), as three subjects:
downsampled, flipped left-right, cropped and downsampled again; and a CT. No installed
package ships a CT volume, so the CT is the phantoms' (int16 Hounsfield units), used as
the network's image. The minimal configs set `layer_scale` (kept by the plan) and
`--memory-gb` is small, so that the planned windows, and the runs, are tiny.
"""

import pathlib

import nibabel as nib
import numpy as np
import pytest

from sfg_app.cli import infer as cli_infer
from sfg_app.cli import plan as cli_plan
from sfg_app.cli import train as cli_train
from sfg_app.config import load_settings
from sfg_app.demo.phantoms import write_dataset
from planning_data import minimal_config
from script_modules import load_script

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ("--memory-gb", "0.1")


def plan_train_infer(folder: pathlib.Path, config: pathlib.Path, *plan_args: str):
    """The planned settings, after --check, 20 iterations and inference; asserts that
    each output has its input's shape and affine."""
    planned = folder / "planned.ini"
    assert cli_plan.main(["--config", str(config), "--output", str(planned), *TINY,
                          *plan_args]) == 0
    assert cli_train.main(["--config", str(planned), "--check"]) == 0
    assert cli_train.main(["--config", str(planned), "--set", "TRAINING.max_iter=20"]) == 0
    assert cli_infer.main(["--config", str(planned)]) == 0
    settings = load_settings(planned)
    image = settings.multitask.image[0]
    split = dict(line.split(",") for line in
                 settings.system.dataset_split_file.read_text().split())
    phase = {"training": "training"}.get(settings.inference.dataset_to_infer, "inference")
    inferred = [sid for sid, p in split.items() if p == phase]
    assert inferred
    outputs = sorted(pathlib.Path(settings.inference.save_seg_dir).glob("*.nii.gz"))
    assert len(outputs) == len(inferred) * len(settings.tasks)
    for sid in inferred:
        source = next(pathlib.Path(p) for p in _files(settings, image) if
                      p.name.startswith(sid))
        reference = nib.load(str(source))
        for task in settings.tasks:
            written = nib.load(str(next(o for o in outputs
                                        if o.name.startswith(f"{sid}_{task}"))))
            assert written.shape[:3] == reference.shape[:3]
            np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    return settings, planned.read_text()


def _files(settings, section):
    inputs = settings.inputs[section]
    folder = pathlib.Path(inputs.path_to_search[0])
    return [p for p in folder.iterdir() if all(c in p.name for c in inputs.filename_contains)]


def phantom_minimal(folder, image="MR", tasks=("organs", "synth_ct")):
    sections = {name: {"path_to_search": "data", "filename_contains": suffix}
                for name, suffix in (("MR", "_mr"), ("CT", "_ct"), ("LABEL", "_seg"),
                                     ("BODY", "_body"))}
    task_sections = {"organs": {"type": "segmentation", "target": "LABEL"},
                     "synth_ct": {"type": "regression", "target": "CT", "mask": "BODY"}}
    sections["NETWORK"] = {"layer_scale": 0.25}
    sections["MULTITASK"] = {"image": image, "tasks": ", ".join(tasks)}
    sections.update({f"TASK {t}": task_sections[t] for t in tasks})
    return minimal_config(folder, sections)


def test_phantoms(tmp_path):
    write_dataset(tmp_path / "data", subjects=3, seed=11, shape=(20, 18, 16))
    settings, text = plan_train_infer(tmp_path, phantom_minimal(tmp_path))
    mr = settings.inputs["MR"]
    assert mr.normalisation == "zscore" and mr.foreground_type == "otsu"
    assert settings.tasks["organs"].num_classes == 6
    assert settings.network.window_sampling == "balanced"
    assert settings.tasks["synth_ct"].mask == "BODY"
    assert settings.network.layer_scale == 0.25
    assert "; as in minimal.ini\nlayer_scale = 0.25" in text


@pytest.mark.slow
def test_a_ct_image(tmp_path):
    """The phantoms' CT in HU as the image (no installed package ships a CT volume)."""
    write_dataset(tmp_path / "data", subjects=3, seed=12, shape=(20, 18, 16))
    settings, text = plan_train_infer(tmp_path, phantom_minimal(tmp_path, image="CT",
                                                                tasks=("organs",)))
    ct = settings.inputs["CT"]
    assert ct.percentile_clip == (0.5, 99.5) and ct.foreground_type == "threshold"
    assert "is a CT in HU" in text
    assert settings.network.name == "highres3dnet"


def write_mni_subjects(folder: pathlib.Path) -> None:
    """Three subjects from the one template: every 6th voxel; the same flipped left-right
    (an LAS file); cropped, every 5th voxel. T1, tissue labels 0-3, grey matter x 255."""
    extract = load_script("scripts/extract_mni.py")
    sources = extract.nilearn_templates()
    images = {kind: nib.load(str(path)) for kind, path in sources.items()}
    arrays = {kind: np.asarray(image.dataobj) for kind, image in images.items()}
    arrays["tissue"] = extract.tissue_labels(arrays["t1"], arrays["gm"], arrays["wm"])
    affine = images["t1"].affine
    variants = {
        "mni_a": (np.s_[::6, ::6, ::6], False),
        "mni_b": (np.s_[::6, ::6, ::6], True),
        "mni_c": (np.s_[10:-10:5, 15:-5:5, 5:-10:5], False),
    }
    for subject, (crop, flip) in variants.items():
        starts = [s.start or 0 for s in crop]
        steps = [s.step for s in crop]
        grid = affine @ np.vstack([np.column_stack([np.diag(steps), starts]), [0, 0, 0, 1]])
        for kind, suffix in (("t1", "_t1"), ("tissue", "_tissue"), ("gm", "_gm")):
            data = np.ascontiguousarray(arrays[kind][crop])
            out_affine = grid
            if flip:
                data = data[::-1]
                out_affine = grid @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0],
                                              [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
            folder.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data.astype(np.uint8), out_affine),
                     str(folder / f"{subject}{suffix}.nii.gz"))


@pytest.mark.slow
def test_the_mni152_template(tmp_path):
    pytest.importorskip("nilearn")
    write_mni_subjects(tmp_path / "data")
    config = minimal_config(tmp_path, {
        "T1": {"path_to_search": "data", "filename_contains": "_t1"},
        "TISSUE": {"path_to_search": "data", "filename_contains": "_tissue"},
        "GM": {"path_to_search": "data", "filename_contains": "_gm"},
        "NETWORK": {"layer_scale": 0.25},
        "MULTITASK": {"image": "T1", "tasks": "tissues, grey_matter"},
        "TASK tissues": {"type": "segmentation", "target": "TISSUE"},
        "TASK grey_matter": {"type": "regression", "target": "GM"}})
    settings, text = plan_train_infer(tmp_path, config)
    assert settings.tasks["tissues"].num_classes == 4
    t1 = settings.inputs["T1"]
    assert t1.axcodes == ("R", "A", "S") and t1.foreground_type == "otsu"
    assert t1.pixdim == pytest.approx((6.0, 6.0, 6.0))
    grey = settings.tasks["grey_matter"]
    assert 50 <= grey.target_scale <= 200
