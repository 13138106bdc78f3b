"""The pelvic phantom generator: determinism, tissue contrast, geometry, files, CLI, and the
committed data set."""

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from sfg_app.demo import phantoms as P
from sfg_app.errors import ConfigError
from script_modules import load_script

REPO = Path(__file__).resolve().parents[2]
TINY = (24, 20, 16)


def _grid_at(generator, index, anatomical_point, spacing=8.0, axcodes="RAS", shape=TINY):
    """A small grid centred on a point of the subject's anatomy."""
    centre = generator.anatomy(index).pose.to_world(anatomical_point)
    return P.Grid.centred(shape, (spacing,) * 3 if np.isscalar(spacing) else spacing,
                          axcodes, centre)


def _tiny(seed=0, index=0, axcodes="RAS", spacing=8.0, shape=TINY):
    generator = P.PelvisPhantoms(seed)
    return generator.subject(index, _grid_at(generator, index, P.FOV_CENTRE, spacing, axcodes,
                                             shape))


def _pure(phantom, *names):
    """Voxels whose centre and every sub-sample lie in one of the named tissues."""
    codes = [P.TISSUE_CODE[name] for name in names]
    return np.isin(phantom.tissue, codes) & (phantom.fractions[..., codes].sum(axis=-1) > 0.999)


def _world_centroid(phantom, label):
    voxels = np.argwhere(phantom.seg == label)
    return phantom.affine[:3, :3] @ voxels.mean(axis=0) + phantom.affine[:3, 3]


# ------------------------------------------------------------------------ determinism

def test_same_seed_and_index_give_byte_identical_arrays():
    first, second = _tiny(seed=5, index=2), _tiny(seed=5, index=2)
    for name in ("mr", "ct", "seg", "body", "tissue", "fractions", "affine"):
        assert getattr(first, name).tobytes() == getattr(second, name).tobytes(), name


def test_different_seeds_and_subjects_differ():
    reference = _tiny(seed=0, index=0)
    for other in (_tiny(seed=1, index=0), _tiny(seed=0, index=1)):
        assert not np.array_equal(reference.ct, other.ct)
        assert not np.array_equal(reference.seg, other.seg)


def test_default_grid_of_a_subject_does_not_depend_on_the_others():
    alone = P.PelvisPhantoms(4).grid(7)
    generator = P.PelvisPhantoms(4)
    for index in range(7):  # draws of other subjects first, as write_dataset makes them
        generator.grid(index)
        generator.anatomy(index)
    after_others = generator.grid(7)
    assert np.array_equal(after_others.affine, alone.affine)
    assert after_others.shape == alone.shape


# --------------------------------------------------------------------- tissue contrast

def test_bladder_is_urine_on_ct_and_bright_on_mr():
    phantom = _tiny(seed=0, index=1, spacing=5.0)
    urine, muscle = _pure(phantom, "urine"), _pure(phantom, "muscle")
    assert urine.sum() > 20 and muscle.sum() > 20
    assert 0 <= np.median(phantom.ct[urine]) <= 20
    assert np.median(phantom.mr[urine]) > 3 * np.median(phantom.mr[muscle])
    assert np.all(phantom.seg[urine] == 2)


def test_bone_is_bright_on_ct_and_cortex_dark_on_mr():
    generator = P.PelvisPhantoms(0)
    head = generator.anatomy(3).skeleton.head_centre
    phantom = generator.subject(3, _grid_at(generator, 3, head, spacing=2.0))
    bone, cortex = _pure(phantom, "cortex", "marrow"), _pure(phantom, "cortex")
    marrow, muscle = _pure(phantom, "marrow"), _pure(phantom, "muscle")
    assert bone.sum() > 100 and cortex.sum() > 10 and muscle.sum() > 10
    assert np.all(phantom.seg[bone] == 5)
    assert np.percentile(phantom.ct[bone], 1) > 150
    assert np.median(phantom.ct[cortex]) > 700
    assert np.median(phantom.mr[cortex]) < 0.5 * np.median(phantom.mr[muscle])
    assert np.median(phantom.mr[cortex]) < 0.2 * np.median(phantom.mr[marrow])


def test_rectal_gas_is_air_on_ct_and_dark_on_mr():
    generator = P.PelvisPhantoms(0)
    pocket = generator.anatomy(2).organs.gas_centres[0]
    phantom = generator.subject(2, _grid_at(generator, 2, pocket, spacing=2.5))
    gas = _pure(phantom, "rectal_air")
    assert gas.sum() > 5
    assert np.all(phantom.seg[gas] == 4)
    assert phantom.ct[gas].max() < -800
    assert np.median(phantom.mr[gas]) < 0.1 * np.median(phantom.mr[_pure(phantom, "rectal_wall",
                                                                            "rectal_content")])


def test_values_dtypes_and_masks_are_physical():
    phantom = _tiny(seed=3, index=4, spacing=(17.0, 15.0, 13.0))   # the whole field of view
    assert phantom.ct.dtype == np.int16 and phantom.mr.dtype == np.int16
    assert phantom.seg.dtype == np.uint8 and phantom.body.dtype == np.uint8
    assert -1024 <= phantom.ct.min() and phantom.ct.max() <= 3000
    assert phantom.mr.min() >= 0
    outside = _pure(phantom, "background")
    assert phantom.mr[outside].mean() > 0          # Rician noise floor
    assert np.median(phantom.ct[outside]) < -950
    assert set(np.unique(phantom.seg)) <= set(P.LABELS)
    assert np.array_equal(phantom.body, (phantom.seg > 0).astype(np.uint8))
    np.testing.assert_allclose(phantom.fractions.sum(axis=-1), 1.0, atol=1e-6)


def test_anatomy_is_laid_out_like_a_pelvis():
    for index in range(4):
        phantom = _tiny(seed=0, index=index, spacing=6.0)
        bladder, prostate, rectum = (_world_centroid(phantom, label) for label in (2, 3, 4))
        assert bladder[2] > prostate[2] + 10, "prostate below the bladder"
        assert bladder[1] > rectum[1] + 20, "bladder anterior to the rectum"
        assert prostate[1] > rectum[1], "prostate anterior to the rectum"
        bone_x = (np.argwhere(phantom.seg == 5) @ phantom.affine[0, :3]) + phantom.affine[0, 3]
        assert np.sum(bone_x > bladder[0] + 60) > 20, "bone on the right"
        assert np.sum(bone_x < bladder[0] - 60) > 20, "bone on the left"


@pytest.mark.parametrize("index", [0, 5])
def test_fat_lies_under_the_skin(index):
    phantom = _tiny(seed=0, index=index, spacing=10.0, shape=(42, 32, 6))
    body = phantom.body == 1
    skin = body & ~ndimage.binary_erosion(body, border_value=1)
    assert skin.sum() > 100
    assert np.mean(phantom.tissue[skin] == P.TISSUE_CODE["fat"]) > 0.6


def test_femoral_head_centres_are_marrow_on_both_sides():
    generator = P.PelvisPhantoms(0)
    anatomy = generator.anatomy(0)
    head = anatomy.skeleton.head_centre
    for side in (1, -1):
        point = anatomy.pose.to_world(head * [side, 1, 1])
        codes = anatomy.tissue(point[None])
        assert P.TISSUES[codes[0]].name == "marrow"


# ---------------------------------------------------------------------------- geometry

def test_orientation_changes_voxel_order_not_anatomy():
    generator = P.PelvisPhantoms(0)
    ras = generator.subject(1, _grid_at(generator, 1, P.FOV_CENTRE, 8.0, "RAS"))
    lps = generator.subject(1, _grid_at(generator, 1, P.FOV_CENTRE, 8.0, "LPS"))
    pir = generator.subject(1, _grid_at(generator, 1, P.FOV_CENTRE, (7.0, 9.0, 6.0), "PIR",
                                        shape=(20, 16, 30)))
    assert np.array_equal(lps.seg[::-1, ::-1, :], ras.seg)
    for label in (2, 3, 4, 5):
        np.testing.assert_allclose(_world_centroid(lps, label), _world_centroid(ras, label),
                                   atol=1e-6)
        np.testing.assert_allclose(_world_centroid(pir, label), _world_centroid(ras, label),
                                   atol=4.0)
    assert P.Grid(pir.seg.shape, pir.affine).axcodes == "PIR"


def test_grid_axcodes_spacing_and_oblique_rotation():
    grid = P.Grid.centred((4, 5, 6), (1.5, 2.0, 3.0), "LPS", centre=(10, -20, 30))
    assert grid.axcodes == "LPS" and not grid.oblique
    np.testing.assert_allclose(grid.spacing, (1.5, 2.0, 3.0))
    middle = np.ravel_multi_index((1, 2, 2), grid.shape)
    np.testing.assert_allclose(grid.world(np.array([middle]), offset=(0.5, 0, 0.5))[0],
                               (10, -20, 30))
    tilted = P.Grid.centred((4, 5, 6), (1.5, 2.0, 3.0), ("P", "I", "R"),
                            rotation=P.rotation_from_degrees((0, 0, 8)))
    assert tilted.oblique and tilted.axcodes == "PIR"
    np.testing.assert_allclose(tilted.spacing, (1.5, 2.0, 3.0))


def test_default_grids_vary_in_orientation_spacing_origin_and_obliquity():
    generator = P.PelvisPhantoms(0)
    grids = [generator.grid(index) for index in range(12)]
    assert {"RAS", "LPS", "LAS", "PIR"} <= {grid.axcodes for grid in grids}
    assert len({tuple(np.round(grid.spacing, 3)) for grid in grids}) >= 4
    assert any(grid.oblique for grid in grids) and not all(grid.oblique for grid in grids)
    for grid in grids:
        assert abs(np.linalg.det(grid.affine)) > 1
        assert np.linalg.norm(grid.affine[:3, 3]) > 50
        assert np.all(np.sort(grid.spacing * grid.shape) >= 0.98 * np.sort(P.FIELD_OF_VIEW))


def test_tiny_grids_keep_each_subject_acquisition(tmp_path):
    generator = P.PelvisPhantoms(0)
    for index in (0, 3):
        full, tiny = generator.grid(index), generator.grid(index, shape=TINY)
        assert tiny.shape == TINY and tiny.axcodes == full.axcodes
        assert tiny.oblique == full.oblique
        np.testing.assert_allclose(tiny.spacing * TINY, full.spacing * full.shape,
                                   rtol=0.05)
        np.testing.assert_allclose(tiny.affine @ [*(np.array(TINY) - 1) / 2, 1],
                                   full.affine @ [*(np.array(full.shape) - 1) / 2, 1])
    paths = P.write_dataset(tmp_path, 4, seed=0, shape=TINY)
    codes = ["".join(nib.aff2axcodes(nib.load(p["seg"]).affine)) for p in paths]
    assert codes == ["RAS", "LPS", "LAS", "PIR"]
    assert all(nib.load(p["mr"]).shape == TINY for p in paths)


@pytest.mark.parametrize("arguments, pattern", [
    (dict(shape=(4, 4, 4), spacing=(1, 1, 1), axcodes="RRS"),
     r"argument `axcodes`.*one from each of L/R, A/P and S/I.*Received "
     r"axcodes=\('R', 'R', 'S'\)"),
    (dict(shape=(4, 0, 4), spacing=(1, 1, 1)),
     r"argument `shape`.*strictly positive integers.*Received shape=\(4, 0, 4\)"),
    (dict(shape=(4, 4, 4), spacing=(1, -1, 1)),
     r"argument `spacing`.*strictly positive numbers.*Received spacing=\(1, -1, 1\)"),
])
def test_invalid_grid_arguments_are_named(arguments, pattern):
    with pytest.raises(ConfigError, match=pattern):
        P.Grid.centred(**arguments)


def test_invalid_seed_index_and_count_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"argument `seed`.*Received seed=-1"):
        P.PelvisPhantoms(-1)
    with pytest.raises(ConfigError, match=r"argument `index`.*Received index=1.5"):
        P.PelvisPhantoms(0).grid(1.5)
    with pytest.raises(ConfigError, match=r"argument `subjects`.*Received subjects=0"):
        P.write_dataset(tmp_path, 0, 0)
    with pytest.raises(ConfigError, match=r"argument `affine`.*non-singular"):
        P.Grid((2, 2, 2), np.zeros((4, 4)))


# ------------------------------------------------------------------------------ files

def test_written_files_share_one_grid_with_valid_headers(tmp_path):
    phantom = _tiny(seed=2, index=3, axcodes="PIR")
    paths = P.write_subject(phantom, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"pelvis_003_{suffix}.nii.gz" for suffix in ("mr", "ct", "seg", "body"))
    dtypes = {"mr": np.int16, "ct": np.int16, "seg": np.uint8, "body": np.uint8}
    for suffix, path in paths.items():
        image = nib.load(path)
        header = image.header
        assert image.shape == phantom.seg.shape
        np.testing.assert_allclose(image.affine, phantom.affine, atol=1e-4)
        assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
        np.testing.assert_allclose(image.get_qform(), phantom.affine, atol=1e-4)
        assert header.get_xyzt_units()[0] == "mm"
        assert header.get_data_dtype() == dtypes[suffix]
        assert np.array_equal(np.asarray(image.dataobj), getattr(phantom, suffix))
        assert "".join(nib.aff2axcodes(image.affine)) == "PIR"


def test_make_phantoms_cli_writes_data_readme_and_png(tmp_path):
    script = load_script("scripts/make_phantoms.py")
    assert script.main(["--out", str(tmp_path / "set"), "--subjects", "1", "--seed", "9",
                        "--png", str(tmp_path / "one.png")]) == 0
    assert len(list((tmp_path / "set").glob("pelvis_000_*.nii.gz"))) == 4
    readme = (tmp_path / "set" / "README.md").read_text()
    assert f"--out {(tmp_path / 'set').as_posix()} --subjects 1 --seed 9" in readme
    assert "| 4 | rectum |" in readme and "| pelvis_000 |" in readme
    assert (tmp_path / "one.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        script.main([])


# ------------------------------------------------------------- the committed data set

def test_committed_phantoms_match_the_documented_command():
    folder = REPO / "data" / "phantoms"
    readme = (folder / "README.md").read_text()
    command = re.search(r"python scripts/make_phantoms.py --out data/phantoms "
                        r"--subjects (\d+) --seed (\d+)", readme)
    assert command, "data/phantoms/README.md must give the generating command"
    subjects, seed = int(command.group(1)), int(command.group(2))
    assert readme == load_script("scripts/make_phantoms.py").readme_text(Path("data/phantoms"), subjects, seed)
    generator = P.PelvisPhantoms(seed)
    names = {p.name for p in folder.glob("*.nii.gz")}
    assert names == {f"{P.subject_id(i)}_{s}.nii.gz" for i in range(subjects)
                     for s in P.FILE_SUFFIXES}
    for index in range(subjects):
        image = nib.load(folder / f"{P.subject_id(index)}_seg.nii.gz")
        grid = generator.grid(index)
        assert image.shape == grid.shape
        np.testing.assert_allclose(image.affine, grid.affine, atol=1e-4)
    index = 3   # the smallest volume; regenerate it in full
    phantom = generator.subject(index)
    for suffix in P.FILE_SUFFIXES:
        stored = np.asarray(nib.load(folder / f"{P.subject_id(index)}_{suffix}.nii.gz").dataobj)
        regenerated = getattr(phantom, suffix)
        assert stored.dtype == regenerated.dtype
        # identical here; a different libm may move a value by one unit at a boundary
        differ = np.abs(stored.astype(int) - regenerated.astype(int)) > (suffix in ("mr", "ct"))
        assert differ.mean() < 1e-4, (
            f"{suffix}: {differ.sum()} voxels differ; regenerate data/phantoms with the "
            "command in its README")


# ------------------------------------------------------------------ task relatedness

def test_relatedness_mixes_the_ct_with_a_field_seen_only_through_the_view():
    generator = P.PelvisPhantoms(4)
    grid = _grid_at(generator, 1, P.FOV_CENTRE, spacing=10.0, shape=(30, 24, 12))
    phantom = generator.subject(1, grid)
    at = {r: generator.related_signal(1, grid, phantom.ct, r) for r in (0.0, 0.5, 1.0)}
    np.testing.assert_allclose(at[1.0].signal, phantom.ct / 1000.0, atol=1e-6)
    field = at[0.0].signal
    np.testing.assert_allclose(at[0.5].signal, 0.5 * phantom.ct / 1000.0 + 0.5 * field,
                               atol=1e-6)
    assert abs(np.sqrt(np.mean(field ** 2)) - P.SIGNAL_FIELD_RMS) < 0.15
    body = phantom.body > 0
    # The field is unrelated to the anatomy, the view shows it (and nothing of the CT),
    # and the view is the same at every level.
    assert abs(np.corrcoef(field[body], phantom.ct[body])[0, 1]) < 0.2
    assert np.corrcoef(at[0.0].view.ravel(), field.ravel())[0, 1] > 0.7
    for r in (0.5, 1.0):
        np.testing.assert_array_equal(at[r].view, at[0.0].view)
    assert at[0.0].view.dtype == at[0.0].signal.dtype == np.float32
    # The four images of a subject do not change when the fifth stream is drawn.
    np.testing.assert_array_equal(generator.subject(1, grid).mr, phantom.mr)


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True, float("nan")])
def test_an_invalid_relatedness_is_named(value):
    generator = P.PelvisPhantoms(0)
    grid = _grid_at(generator, 0, P.FOV_CENTRE, shape=(4, 4, 4))
    with pytest.raises(ConfigError, match=r"`relatedness`\. Expected a number in \[0, 1\]"):
        generator.related_signal(0, grid, np.zeros((4, 4, 4)), value)


def test_make_phantoms_writes_the_view_and_signal_of_a_relatedness(tmp_path):
    script = load_script("scripts/make_phantoms.py")
    folder = tmp_path / "set"
    assert script.main(["--out", str(folder), "--subjects", "1", "--seed", "2",
                        "--relatedness", "0.25"]) == 0
    names = sorted(p.name for p in folder.glob("pelvis_000_*.nii.gz"))
    assert names == sorted(f"pelvis_000_{s}.nii.gz" for s in P.FILE_SUFFIXES
                           + P.SIGNAL_SUFFIXES)
    readme = (folder / "README.md").read_text()
    assert "--subjects 1 --seed 2 --relatedness 0.25" in readme and "`<id>_view" in readme
    signal = nib.load(folder / "pelvis_000_signal.nii.gz")
    ct = nib.load(folder / "pelvis_000_ct.nii.gz")
    np.testing.assert_array_equal(signal.affine, ct.affine)
    assert signal.get_data_dtype() == np.float32
