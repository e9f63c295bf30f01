"""The HDF5 reader: `file.h5:/dataset`, sliced lazily by h5py; a bare `file.h5` reads
`/volume`, else ilastik's `/exported_data`, else the file's only dataset. Voxel size from the
dataset's `element_size_um` attribute."""

from __future__ import annotations

import logging
from contextlib import ExitStack

import h5py

from .errors import InputError
from .formats import Reader
from .voxel_size import NOT_FOUND, FoundVoxel

DEFAULT_DATASET = "/volume"  # what fibseg writes
EXPORTED_DATASET = "/exported_data"  # what ilastik's export writes (labels, predictions)

logger = logging.getLogger(__name__)


def datasets_in(handle: h5py.File) -> dict[str, tuple[int, ...]]:
    """Every dataset of the file (in groups too): its path and shape."""
    found: dict[str, tuple[int, ...]] = {}

    def visit(name: str, node: object) -> None:
        if isinstance(node, h5py.Dataset):
            found[f"/{name}"] = tuple(node.shape)

    handle.visititems(visit)
    return found


def listing(datasets: dict[str, tuple[int, ...]]) -> str:
    """'/a (5, 9, 9), /b (3,)': the first ten datasets with their shapes."""
    names = [f"{name} {shape}" for name, shape in list(datasets.items())[:10]]
    more = len(datasets) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "") or "no dataset"


def default_dataset(handle: h5py.File, path: str, dataset_name: str | None) -> str:
    """The dataset of a spec without an inner path: `/volume`, else `/exported_data` (an
    ilastik export), else the only dataset in the file; an InputError lists them if none."""
    if DEFAULT_DATASET in handle:
        return DEFAULT_DATASET
    datasets = datasets_in(handle)
    if EXPORTED_DATASET in datasets:
        chosen = EXPORTED_DATASET
    elif len(datasets) == 1:
        chosen = next(iter(datasets))
    else:
        raise InputError(
            f"names no HDF5 dataset, and the file holds no '{DEFAULT_DATASET}', no "
            f"'{EXPORTED_DATASET}' and not a single dataset (it holds: {listing(datasets)}).",
            dataset=dataset_name,
            file=path,
            fix="write the volume path as 'file.h5:/dataset', naming one of them.",
        )
    logger.info("%s: no HDF5 dataset named; reading '%s', %s", path, chosen, datasets[chosen])
    return chosen


def open_hdf5(
    path: str, inner: str | None, files: list[str], dataset_name: str | None, stack: ExitStack
):
    """The dataset `inner` of the file (None: `default_dataset`); an InputError names the
    datasets it holds."""
    handle = stack.enter_context(h5py.File(path, "r"))
    if inner is None:
        inner = default_dataset(handle, path, dataset_name)
    if not isinstance(handle.get(inner), h5py.Dataset):
        raise InputError(
            f"has no HDF5 dataset '{inner}' (it holds: {', '.join(handle) or 'nothing'}).",
            dataset=dataset_name,
            file=path,
            fix="write the volume path as 'file.h5:/dataset'.",
        )
    return handle[inner]


def hdf5_voxel_size_nm(path: str, inner: str | None, files: list[str], data) -> FoundVoxel:
    """(z, y, x) in nm from the open dataset's `element_size_um` (µm)."""
    size_um = data.attrs.get("element_size_um")
    if size_um is not None and len(size_um) == 3:
        voxel = tuple(float(v) * 1e3 if v > 0 else None for v in size_um)
        if any(voxel):
            return FoundVoxel(voxel, "HDF5 element_size_um")
    return NOT_FOUND


READER = Reader(open=open_hdf5, voxel_size_nm=hdf5_voxel_size_nm)
