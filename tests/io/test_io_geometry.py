"""Geometry of grids: spacing, axcodes, same-space checks, reorientation, resampled grids."""

import numpy as np
import pytest

from sfg_app.errors import ConfigError
from sfg_app.io import geometry


def test_spacing_and_axcodes_of_an_oblique_free_odd_grid(psr_affine):
    assert np.allclose(geometry.spacing(psr_affine), [0.8, 2.5, 1.5])
    assert geometry.axcodes(psr_affine) == ("P", "S", "R")


@pytest.mark.parametrize("value, expected", [("RAS", ("R", "A", "S")),
                                             (["l", "p", "s"], ("L", "P", "S")),
                                             (("S", "R", "A"), ("S", "R", "A"))])
def test_axcodes_are_standardised(value, expected):
    assert geometry.standardize_axcodes(value) == expected


@pytest.mark.parametrize("value", ["RRS", "RA", ("R", "A", "X"), ("RA", "S", "P")])
def test_invalid_axcodes_name_the_argument(value):
    with pytest.raises(ConfigError, match=r"argument `axcodes`.*one from each of L/R, A/P and "
                                          r"S/I.*Received axcodes="):
        geometry.standardize_axcodes(value)


def test_round_off_is_the_same_space(psr_affine):
    nudged = psr_affine.copy()
    nudged[:3, :3] *= 1 + 1e-6
    nudged[:3, 3] += 1e-4
    assert geometry.same_space((30, 40, 50), psr_affine, (30, 40, 50), nudged)


def test_different_shapes_are_described():
    assert geometry.space_difference((3, 4, 5), np.eye(4), (3, 4, 6), np.eye(4)) == \
        "the shapes differ: (3, 4, 5) and (3, 4, 6)"


def test_shifted_origin_is_described():
    shifted = np.eye(4)
    shifted[:3, 3] = (0.0, 2.0, 0.0)
    text = geometry.space_difference((3, 4, 5), np.eye(4), (3, 4, 5), shifted)
    assert text.startswith("the grids are 2 mm apart at a corner")
    assert "origin (0, 0, 0) and (0, 2, 0) mm" in text
    assert "spacing" not in text and "orientation" not in text


def test_flipped_and_rescaled_grid_is_described(psr_affine):
    other = psr_affine @ np.diag([-1.0, 1.0, 2.0, 1.0])
    text = geometry.space_difference((3, 4, 5), psr_affine, (3, 4, 5), other)
    assert "orientation PSR and ASR" in text
    assert "spacing (0.8, 2.5, 1.5) and (0.8, 2.5, 3) mm" in text


@pytest.mark.parametrize("target", ["RAS", "LPS", "IRP", "ASL"])
def test_reorientation_keeps_every_voxel_at_its_world_position(psr_affine, target):
    shape = (3, 4, 5)
    data = np.arange(60).reshape(shape + (1,))
    ornt = geometry.orientation_to(psr_affine, target)
    moved = geometry.reorient_array(data, ornt)
    new_affine = geometry.reoriented_affine(psr_affine, shape, ornt)
    assert geometry.axcodes(new_affine) == tuple(target)
    assert moved.shape[:3] == geometry.reoriented_shape(shape, ornt)
    for new_index in np.ndindex(moved.shape[:3]):
        world = new_affine @ (*new_index, 1)
        old_index = np.rint(np.linalg.solve(psr_affine, world)[:3]).astype(int)
        assert moved[new_index + (0,)] == data[tuple(old_index) + (0,)]
    back = geometry.reorient_array(moved, geometry.invert_orientation(ornt))
    assert np.array_equal(back, data)


def test_oblique_grid_goes_to_the_closest_axes():
    angle = np.deg2rad(20)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    ornt = geometry.orientation_to(rotation @ np.diag([-1.0, 1, 1, 1]), "RAS")
    assert np.array_equal(ornt, [[0, -1], [1, 1], [2, 1]])


def test_resampled_grid_keeps_the_field_of_view(psr_affine):
    shape = (10, 8, 6)
    affine, new_shape, scale = geometry.resampled_grid(psr_affine, shape, (0.4, 1.0, 3.0))
    assert new_shape == (20, 20, 3)
    assert np.allclose(geometry.spacing(affine), (0.4, 1.0, 3.0))
    assert np.allclose(scale, (0.5, 0.4, 2.0))
    # The outer edge of the first and last voxels is where it was.
    for old_corner, new_corner in [((-0.5,) * 3, (-0.5,) * 3),
                                   ((9.5, 7.5, 5.5), (19.5, 19.5, 2.5))]:
        assert np.allclose(psr_affine @ (*old_corner, 1), affine @ (*new_corner, 1))


def test_a_single_slice_axis_is_not_resampled():
    affine, shape, scale = geometry.resampled_grid(np.diag([2.0, 2.0, 5.0, 1.0]), (8, 8, 1),
                                                   (1.0, 1.0, 1.0))
    assert shape == (16, 16, 1) and scale[2] == 1.0 and affine[2, 2] == 5.0


def test_header_round_off_in_the_spacing_is_no_resampling():
    _, shape, scale = geometry.resampled_grid(np.diag([0.99999994, 1.0, 2.0, 1.0]), (8, 8, 8),
                                              (1.0, 1.0, 2.0))
    assert shape == (8, 8, 8) and np.array_equal(scale, [1.0, 1.0, 1.0])
