"""The reader of a folder or glob of 2-D TIFF slices, one file per slice, read lazily in
natural order; voxel size from the first slice's tags."""

from __future__ import annotations

import glob
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import tifffile

from .errors import InputError
from .formats import TIFF_SUFFIXES, Reader, volume_format
from .tiff_reader import tiff_calibration
from .voxel_size import FoundVoxel


def slice_files(path: str) -> list[str]:
    """The 2-D TIFF slices of a folder (its *.tif and *.tiff files) or of a glob pattern, in
    natural order (slice_2 before slice_10)."""
    if volume_format(path) == "folder":
        names = [
            str(entry)
            for entry in Path(path).iterdir()
            if entry.suffix.lower() in TIFF_SUFFIXES and not entry.name.startswith(".")
        ]
    else:
        names = glob.glob(path)
    return tifffile.natural_sorted([name for name in names if Path(name).is_file()])


class SliceFiles:
    """A (z, y, x) stack of one 2-D TIFF per slice, read lazily: `[start:stop]` reads only
    those files. A file that cannot be read or differs in size raises an InputError that
    names the slice and the file."""

    def __init__(self, files: list[str], dataset: str | None = None) -> None:
        self.files, self.dataset = files, dataset
        first = self.read_file(0)
        self.dtype = first.dtype
        self.shape = (len(files), *first.shape)

    def read_file(self, z: int) -> np.ndarray:
        """Slice z, checked to be 2-D and (after slice 0) of the size of slice 0."""
        path = self.files[z]
        try:
            image = tifffile.imread(path)
        except Exception as error:
            raise InputError(
                f"slice {z} cannot be read ({type(error).__name__}: {error}).",
                dataset=self.dataset,
                file=path,
                fix="replace the truncated or corrupt slice file, or remove stray files "
                "from the folder.",
            ) from error
        if image.ndim != 2 or (z > 0 and image.shape != self.shape[1:]):
            expected = "2-D" if image.ndim != 2 else f"{self.shape[1]} x {self.shape[2]}"
            raise InputError(
                f"slice {z} has shape {image.shape}; every slice must be a greyscale image "
                f"of {expected} pixels (as slice 0, {self.files[0]}).",
                dataset=self.dataset,
                file=path,
                fix="save every slice as a 2-D greyscale TIFF of the same size, and keep "
                "other images out of the folder.",
            )
        return image

    def __getitem__(self, key: slice) -> np.ndarray:
        indices = range(*key.indices(len(self.files)))
        if not indices:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return np.stack([self.read_file(z) for z in indices])


def open_slices(
    path: str, inner: str | None, files: list[str], dataset_name: str | None, stack: ExitStack
) -> SliceFiles:
    """The slice files as one lazily read stack."""
    return SliceFiles(files, dataset_name)


def slices_voxel_size_nm(path: str, inner: str | None, files: list[str], data) -> FoundVoxel:
    """The voxel size of the first slice's TIFF tags (an instrument writes them in each)."""
    return tiff_calibration(files[0])


READER = Reader(open=open_slices, voxel_size_nm=slices_voxel_size_nm)
