"""The whole inference path of the data engine on real files, with an identity network:
read -> reorient -> resample -> pad -> grid windows -> blend -> undo -> write. The
written file must have the input's shape and affine, and its values the input's (within
interpolation tolerance; exactly for labels)."""

import nibabel as nib
import numpy as np
import pytest

from sfg_app.data.aggregators import VoxelAggregator
from sfg_app.data.dataset import SubjectFiles
from sfg_app.data.preprocessing import Preprocessor, SectionSpec, undo
from sfg_app.data.samplers.grid import GridSampler
from sfg_app.io import load_image, write_image

# Voxel axes L, P, S (an LPS grid), anisotropic 0.9 x 1.6 x 3 mm, origin off zero.
LPS = np.array([[-0.9, 0.0, 0.0, 41.0], [0.0, -1.6, 0.0, 23.5], [0.0, 0.0, 3.0, -60.0],
                [0.0, 0.0, 0.0, 1.0]])
SHAPE = (37, 23, 13)


@pytest.fixture
def subject(tmp_path):
    grid = np.indices(SHAPE, dtype=np.float64)
    image = (300 + 90 * np.sin(grid[0] / 6.0) * np.cos(grid[1] / 5.0)
             + 40 * np.sin(grid[2] / 4.0)).astype(np.float32)
    labels = np.digitize(image, [260, 320, 360]).astype(np.uint8)
    paths = {"MR": str(tmp_path / "s1_mr.nii.gz"), "LABEL": str(tmp_path / "s1_seg.nii.gz")}
    nib.save(nib.Nifti1Image(image, LPS), paths["MR"])
    nib.save(nib.Nifti1Image(labels, LPS), paths["LABEL"])
    return SubjectFiles("s1", paths), image, labels


@pytest.mark.parametrize("blending", ["crop", "constant", "gaussian"])
@pytest.mark.parametrize("pixdim", [None, (1.0, 1.0, 1.5)])
def test_identity_network_through_grid_windows_gives_the_input_back(
        subject, tmp_path, blending, pixdim):
    files, image, labels = subject
    preprocessor = Preprocessor(
        [SectionSpec("MR", interp_order=1), SectionSpec("LABEL", kind="label", interp_order=0)],
        pixdim=pixdim, axcodes=("R", "A", "S"), volume_padding_size=(3, 3, 2),
        volume_padding_mode="edge")
    processed = preprocessor(files)
    record = processed.record
    plan = GridSampler((16, 12, 8), border=(3, 2, 1)).plan(processed.arrays)
    volumes = {"MR": VoxelAggregator(plan, channels=1, output="values", blending=blending),
               "LABEL": VoxelAggregator(plan, channels=1, output="values", blending=blending)}
    for windows, locations in plan.batches(processed.arrays, batch_size=3):
        for name, aggregator in volumes.items():     # the identity "network"
            aggregator.add(windows[name].astype(np.float32), locations)
    written = {}
    for name, order in (("MR", 1), ("LABEL", 0)):
        blended = volumes[name].result()
        np.testing.assert_allclose(blended, processed.arrays[name], rtol=1e-5, atol=1e-3)
        if order == 0:
            blended = np.rint(blended).astype(np.int32)
        path = tmp_path / f"out_{name}_{blending}.nii.gz"
        write_image(path, undo(blended, record, order), record.source.affine,
                    like=record.source, dtype=np.float32 if order else None)
        written[name] = load_image(path).data[..., 0]
        source = nib.load(files.paths[name])
        output = nib.load(str(path))
        assert output.shape[:3] == source.shape
        np.testing.assert_array_equal(output.affine, source.affine)
        # The windows add nothing to what undoing the whole preprocessed volume gives.
        whole = undo(processed.arrays[name], record, order)[..., 0]
        np.testing.assert_allclose(written[name], whole, rtol=1e-5, atol=1e-3)
    if pixdim is None:       # reorientation and padding only: the input exactly
        np.testing.assert_array_equal(written["LABEL"], labels)
        np.testing.assert_allclose(written["MR"], image, rtol=1e-5)
    else:                    # resampled there and back: linear for MR, within 2%
        error = np.abs(written["MR"] - image)[(slice(2, -2),) * 3]
        assert error.mean() < 0.02 * np.ptp(image)
