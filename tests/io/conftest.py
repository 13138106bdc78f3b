"""Fixtures of the io tests: nibabel's own small test images and an oddly oriented grid."""

import pathlib

import nibabel
import numpy as np
import pytest


@pytest.fixture(scope="session")
def nibabel_data() -> pathlib.Path:
    """The folder of real NIfTI files that nibabel ships for its own tests."""
    return pathlib.Path(nibabel.__file__).parent / "tests" / "data"


@pytest.fixture
def psr_affine() -> np.ndarray:
    """Voxel axes pointing P, S, R with voxels of 0.8 x 2.5 x 1.5 mm and a non-zero origin."""
    return np.array([[0.0, 0.0, 1.5, -12.25],
                     [-0.8, 0.0, 0.0, 31.5],
                     [0.0, 2.5, 0.0, -7.75],
                     [0.0, 0.0, 0.0, 1.0]])
