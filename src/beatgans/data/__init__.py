"""Datasets and LightningDataModules (the only part of the data layer that imports Lightning)."""

from beatgans.data.digits import load_digits
from beatgans.data.image_folder import DataError, ImageFolderDataset
from beatgans.data.toy2d import gaussian_grid_modes, make_toy2d, sample_gaussian_grid

__all__ = ["load_digits", "DataError", "ImageFolderDataset", "gaussian_grid_modes", "make_toy2d",
           "sample_gaussian_grid"]
