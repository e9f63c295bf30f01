"""What a volume spec names: its format, told by its path (`volume_format`), and the inner
path of an HDF5 or Zarr spec (`split_spec`); and `Reader`, what each format's reader module
provides (the registry is `fibseg.io.volume.READERS`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .voxel_size import FoundVoxel

H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
ZARR_SUFFIX = ".zarr"
MRC_SUFFIXES = (".mrc", ".mrcs", ".rec", ".map", ".st", ".ali")
TIFF_SUFFIXES = (".tif", ".tiff")
GLOB_CHARACTERS = "*?["
FORMAT_NAMES = {
    "tiff": "3-D TIFF",
    "hdf5": "HDF5 file",
    "zarr": "Zarr store",
    "mrc": "MRC file",
    "folder": "folder of 2-D TIFF slices",
    "glob": "set of 2-D TIFF slices",
}


def split_spec(spec: str, h5_default: str | None = "/volume") -> tuple[str, str | None]:
    """Split `file.h5:/dataset` into (file, dataset) and `file.zarr:/path` into (store, path);
    a bare `file.h5` gives (file, h5_default) (None: the reader picks); any other spec (TIFF,
    MRC, folder, glob, `file.zarr`) gives (spec, None)."""
    spec = str(spec)
    for suffix in H5_SUFFIXES:
        marker = suffix + ":"
        if marker in spec:
            head, _, inner = spec.partition(marker)
            return head + suffix, inner or h5_default
        if spec.endswith(suffix):
            return spec, h5_default
    marker = ZARR_SUFFIX + ":"
    if marker in spec:
        head, _, inner = spec.partition(marker)
        return head + ZARR_SUFFIX, inner.strip("/") or None
    return spec, None


def volume_format(path: str) -> str:
    """What a volume path (the first part of `split_spec`) names: tiff, hdf5, zarr, mrc, a
    folder of slices or a glob of slices."""
    path = str(path)
    if any(character in path for character in GLOB_CHARACTERS):
        return "glob"
    lower = path.lower().rstrip("/")
    if lower.endswith(H5_SUFFIXES):
        return "hdf5"
    if lower.endswith(ZARR_SUFFIX):
        return "zarr"
    if lower.endswith(MRC_SUFFIXES):
        return "mrc"
    if Path(path).is_dir():
        return "folder"
    return "tiff"


@dataclass(frozen=True)
class Reader:
    """One format's reader. `open(path, inner, files, dataset_name, stack)` returns what
    slices as `[start:stop]` along z (and enters on `stack` what it holds open);
    `voxel_size_nm(path, inner, files, data)` gives the (z, y, x) voxel size in nm that the
    format's metadata holds, None per axis it does not give, and the kind of metadata read."""

    open: Callable[[str, str | None, list[str], str | None, ExitStack], Any]
    voxel_size_nm: Callable[[str, str | None, list[str], Any], FoundVoxel]
