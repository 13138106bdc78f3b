"""Reading and writing images (nibabel, SimpleITK) and the geometry of voxel grids."""

from sfg_app.io.image import Image, ImageInfo
from sfg_app.io.readers import NibabelReader, SimpleITKReader, load_image
from sfg_app.io.writers import write_image

__all__ = ["Image", "ImageInfo", "NibabelReader", "SimpleITKReader", "load_image", "write_image"]
