"""The HDF5 reader: `file.h5:/dataset` (default `/volume`), sliced lazily by h5py; voxel
size from the dataset's `element_size_um` attribute."""

from __future__ import annotations

from contextlib import ExitStack

import h5py

from .errors import InputError
from .formats import Reader
from .voxel_size import Voxel


def open_hdf5(
    path: str, inner: str | None, files: list[str], dataset_name: str | None, stack: ExitStack
):
    """The dataset `inner` of the file; an InputError names the datasets it holds."""
    handle = stack.enter_context(h5py.File(path, "r"))
    if inner not in handle:
        raise InputError(
            f"has no HDF5 dataset '{inner}' (it holds: {', '.join(handle.keys()) or 'nothing'}).",
            dataset=dataset_name,
            file=path,
            fix="write the volume path as 'file.h5:/dataset'.",
        )
    return handle[inner]


def hdf5_voxel_size_nm(path: str, inner: str | None, files: list[str], data) -> Voxel:
    """(z, y, x) in nm from the open dataset's `element_size_um` (µm)."""
    size_um = data.attrs.get("element_size_um")
    if size_um is not None and len(size_um) == 3:
        return tuple(float(v) * 1e3 if v > 0 else None for v in size_um)
    return None, None, None


READER = Reader(open=open_hdf5, voxel_size_nm=hdf5_voxel_size_nm)
