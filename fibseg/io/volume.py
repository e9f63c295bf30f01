"""The one entry point for reading volumes: `Volume` (lazy, slice by slice) and
`read_volume` (whole), over the readers registered in `READERS`, one module per format; and a
volume's voxel size from its metadata or the sheet."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from . import hdf5_reader, mrc_reader, slice_reader, tiff_reader, zarr_reader
from .errors import InputError
from .formats import FORMAT_NAMES, Reader, split_spec, volume_format
from .slice_reader import slice_files
from .voxel_size import NOT_FOUND, FoundVoxel, Voxel, parse_voxel_size

READERS: dict[str, Reader] = {
    "tiff": tiff_reader.READER,
    "hdf5": hdf5_reader.READER,
    "zarr": zarr_reader.READER,
    "mrc": mrc_reader.READER,
    "folder": slice_reader.READER,
    "glob": slice_reader.READER,
}


def volume_files(spec: str) -> list[str]:
    """The paths that hold a volume: its file (or `.zarr` folder), or every slice file of a
    folder or glob. Rules take them as input; `check_external_inputs` checks them."""
    path = split_spec(spec)[0]
    if volume_format(path) in ("folder", "glob"):
        return slice_files(path)
    return [path]


def volume_exists(spec: str) -> bool:
    """Whether the volume's file, `.zarr` folder or at least one slice file is there."""
    path = split_spec(spec)[0]
    kind = volume_format(path)
    if kind in ("folder", "glob"):
        return bool(slice_files(path))
    return Path(path).is_dir() if kind == "zarr" else Path(path).is_file()


class Volume:
    """Read-only (z, y, x) stack that reads slices lazily: a 3-D TIFF (memory-mapped where its
    data are contiguous), HDF5 `file.h5[:/dataset]`, Zarr or OME-Zarr `file.zarr[:/path]`, MRC,
    or a folder or glob of 2-D TIFF slices (natural order). Axes of size 1 before or after
    (z, y, x), such as an OME-Zarr's t and c or the channel of an ilastik export
    (z, y, x, 1), are dropped."""

    def __init__(self, spec: str, dataset_name: str | None = None) -> None:
        self.spec = str(spec)
        self.path, inner = split_spec(self.spec, h5_default=None)
        self.format = volume_format(self.path)
        self.inner = inner
        self.dataset_name = dataset_name
        self.files = volume_files(self.spec)
        if not volume_exists(self.spec):
            what = {"folder": "holds no TIFF slices (*.tif, *.tiff)", "glob": "matches no file"}
            raise InputError(
                f"the volume {what.get(self.format, 'file does not exist')}.",
                dataset=dataset_name,
                file=self.path,
                fix="correct the path in the data set sheet.",
            )
        self._stack = contextlib.ExitStack()
        self._prefix: tuple[int, ...] = ()  # size-1 axes before z (OME-Zarr t, c)
        self._suffix: tuple[int, ...] = ()  # size-1 axes after x (a channel)
        try:
            self._data = self._open(inner)
            if self.format == "hdf5":
                self.inner = self._data.name  # the dataset read, also when none was named
            self.h5_path = self.inner if self.format == "hdf5" else None
            shape = tuple(self._data.shape)
            # a channel axis after x first: a single-slice (1, y, x, 1) export stays (1, y, x)
            while len(shape) > 3 and shape[-1] == 1:
                self._suffix, shape = (*self._suffix, 0), shape[:-1]
            while len(shape) > 3 and shape[0] == 1:
                self._prefix, shape = (*self._prefix, 0), shape[1:]
            self.shape, self.dtype = shape, np.dtype(self._data.dtype)
        except InputError:
            self.close()
            raise
        except Exception as error:  # any reader failure means an unreadable file
            self.close()
            raise InputError(
                f"cannot be read ({type(error).__name__}: {error}).",
                dataset=dataset_name,
                file=self.path,
                fix="copy or export it again: a complete, undamaged "
                f"{FORMAT_NAMES[self.format]} is expected.",
            ) from error
        if len(self.shape) != 3:
            self.close()
            raise InputError(
                f"is {len(self.shape)}-D with shape {self.shape}; a (z, y, x) "
                "stack of 2-D slices is expected.",
                dataset=dataset_name,
                file=self.path,
                fix="save the volume as a 3-D stack of greyscale "
                "slices (no colour channels, no time axis).",
            )

    def _open(self, inner: str | None):
        """The reader of the format: anything that slices as `[start:stop]` along z."""
        return READERS[self.format].open(
            self.path, inner, self.files, self.dataset_name, self._stack
        )

    def metadata_voxel_size(self) -> FoundVoxel:
        """(z, y, x) voxel size in nm that the volume's own metadata gives, None per axis it
        does not give, and the kind of metadata (the format's reader says how)."""
        reader = READERS[self.format]
        return reader.voxel_size_nm(self.path, self.inner, self.files, self._data)

    def metadata_voxel_size_nm(self) -> Voxel:
        """(z, y, x) voxel size in nm that the volume's own metadata gives, None per axis it
        does not give."""
        return self.metadata_voxel_size().voxel

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Slices [start, stop) as an array of shape (stop - start, y, x)."""
        stop = self.shape[0] if stop is None else stop
        key = slice(start, stop)
        if self._prefix or self._suffix:
            key = (*self._prefix, key, slice(None), slice(None), *self._suffix)
        try:
            return np.array(self._data[key])
        except (InputError, AttributeError, TypeError, NameError):
            raise
        except Exception as error:
            raise InputError(
                f"slices {start}-{stop - 1} cannot be read ({type(error).__name__}: {error}).",
                dataset=self.dataset_name,
                file=self.path,
                fix="the file is truncated or corrupt: copy or export it again.",
            ) from error

    def read_slices(self, indices: np.ndarray) -> np.ndarray:
        """The slices at `indices` (repeats allowed, as mirroring makes), each read once."""
        unique = {int(z): self.read(int(z), int(z) + 1)[0] for z in np.unique(indices)}
        return np.stack([unique[int(z)] for z in indices])

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        self._data = None  # drops a memory map
        self._stack.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_volume(spec: str, dataset_name: str | None = None) -> np.ndarray:
    """Whole volume in memory."""
    with Volume(spec, dataset_name) as volume:
        return volume.read()


def metadata_voxel_size(spec: str, dataset_name: str | None = None) -> FoundVoxel:
    """(z, y, x) voxel size in nm that a volume's own metadata gives (None per axis it does not
    give) and the kind of metadata: TIFF (OME, ImageJ, FEI or Zeiss SEM tags, resolution; a
    folder or glob: its first slice), HDF5 `element_size_um`, OME-Zarr scale, MRC header."""
    with Volume(spec, dataset_name) as volume:  # checks that it exists and opens
        return volume.metadata_voxel_size()


def metadata_voxel_size_nm(spec: str, dataset_name: str | None = None) -> Voxel:
    """(z, y, x) voxel size in nm that a volume's own metadata gives (None per axis it does not
    give), as `metadata_voxel_size`."""
    return metadata_voxel_size(spec, dataset_name).voxel


VoxelSources = tuple[str, str, str]
CONFIG_SOURCE = "config"


def voxel_size_with_source(
    spec: str | None,
    default: tuple[float, float, float],
    given: str | None = None,
    dataset_name: str | None = None,
    sheet: str | None = None,
) -> tuple[tuple[float, float, float], VoxelSources]:
    """A data set's (z, y, x) voxel size in nm and where each axis came from: the sheet's
    `given` value ("sheet"), else per axis the volume's metadata when `spec` is given
    ("file (FEI metadata)", "file (ImageJ)", ...), else `default`, the config's ("config")."""
    if isinstance(given, str) and given.strip():
        return parse_voxel_size(given, dataset_name, sheet), ("sheet", "sheet", "sheet")
    found = metadata_voxel_size(spec, dataset_name) if spec else NOT_FOUND
    voxel = tuple(
        float(value if value else fallback)
        for value, fallback in zip(found.voxel, default, strict=True)
    )
    sources = tuple(f"file ({found.kind})" if value else CONFIG_SOURCE for value in found.voxel)
    return voxel, sources


def voxel_size_nm(
    spec: str | None,
    default: tuple[float, float, float],
    given: str | None = None,
    dataset_name: str | None = None,
    sheet: str | None = None,
) -> tuple[float, float, float]:
    """A data set's (z, y, x) voxel size in nm: the sheet's `given` value, else per axis the
    volume's metadata (when `spec` is given), else `default` (the config's)."""
    return voxel_size_with_source(spec, default, given, dataset_name, sheet)[0]


def describe_voxel_size(voxel: tuple[float, float, float], sources: VoxelSources) -> str:
    """'voxel size 50 x 5 x 5 nm (z from config, y/x from file (FEI metadata))'."""
    axes: dict[str, list[str]] = {}
    for axis, source in zip("zyx", sources, strict=True):
        axes.setdefault(source, []).append(axis)
    where = ", ".join(f"{'/'.join(names)} from {source}" for source, names in axes.items())
    return f"voxel size {' x '.join(f'{v:g}' for v in voxel)} nm ({where})"


def report_voxel_size(
    log: logging.Logger,
    dataset_name: str,
    voxel: tuple[float, float, float],
    sources: VoxelSources,
    searched: bool = True,
) -> None:
    """Log a data set's voxel size and its sources; a WARNING when an axis came from the config
    alone although the data were `searched` (the sheet and the volume's metadata)."""
    log.info("%s: %s", dataset_name, describe_voxel_size(voxel, sources))
    missing = [a for a, source in zip("zyx", sources, strict=True) if source == CONFIG_SOURCE]
    if searched and missing:
        log.warning(
            "data set '%s': the voxel size of %s was not found in the data (the sheet's "
            "voxel_size_nm column is empty and the volume's metadata lack it), so the config's "
            "voxel_size_nm fills it in: %s nm (z, y, x) is used. Fix: if that is not this "
            "volume's voxel, write it in nm as z,y,x in the sheet's voxel_size_nm column "
            "(e.g. %s).",
            dataset_name,
            "/".join(missing),
            " x ".join(f"{v:g}" for v in voxel),
            ",".join(f"{v:g}" for v in voxel),
        )
