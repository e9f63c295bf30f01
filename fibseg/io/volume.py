"""The one entry point for reading volumes: `Volume` (lazy, slice by slice) and
`read_volume` (whole), over the readers registered in `READERS`, one module per format; and a
volume's voxel size from its metadata or the sheet."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from . import hdf5_reader, mrc_reader, slice_reader, tiff_reader, zarr_reader
from .errors import InputError
from .formats import FORMAT_NAMES, Reader, split_spec, volume_format
from .slice_reader import slice_files
from .voxel_size import Voxel, parse_voxel_size

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
    data are contiguous), HDF5 `file.h5:/dataset`, Zarr or OME-Zarr `file.zarr[:/path]`, MRC,
    or a folder or glob of 2-D TIFF slices (natural order)."""

    def __init__(self, spec: str, dataset_name: str | None = None) -> None:
        self.spec = str(spec)
        self.path, inner = split_spec(self.spec)
        self.format = volume_format(self.path)
        self.inner = inner
        self.h5_path = inner if self.format == "hdf5" else None
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
        self._prefix: tuple[int, ...] = ()  # leading singleton axes of an OME-Zarr array
        try:
            self._data = self._open(inner)
            shape = tuple(self._data.shape)
            if self.format == "zarr":
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

    def metadata_voxel_size_nm(self) -> Voxel:
        """(z, y, x) voxel size in nm that the volume's own metadata gives, None per axis it
        does not give (the format's reader says how)."""
        reader = READERS[self.format]
        return reader.voxel_size_nm(self.path, self.inner, self.files, self._data)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Slices [start, stop) as an array of shape (stop - start, y, x)."""
        stop = self.shape[0] if stop is None else stop
        key = (*self._prefix, slice(start, stop)) if self._prefix else slice(start, stop)
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


def metadata_voxel_size_nm(spec: str, dataset_name: str | None = None) -> Voxel:
    """(z, y, x) voxel size in nm that a volume's own metadata gives (None per axis it does not
    give): TIFF (ImageJ, OME, resolution; a folder or glob: its first slice), HDF5
    `element_size_um`, OME-Zarr scale, MRC `voxel_size` (Å)."""
    with Volume(spec, dataset_name) as volume:  # checks that it exists and opens
        return volume.metadata_voxel_size_nm()


def voxel_size_nm(
    spec: str | None,
    default: tuple[float, float, float],
    given: str | None = None,
    dataset_name: str | None = None,
    sheet: str | None = None,
) -> tuple[float, float, float]:
    """A data set's (z, y, x) voxel size in nm: the sheet's `given` value, else per axis the
    volume's metadata (when `spec` is given), else `default` (the config's)."""
    if isinstance(given, str) and given.strip():
        return parse_voxel_size(given, dataset_name, sheet)
    found = metadata_voxel_size_nm(spec, dataset_name) if spec else (None, None, None)
    return tuple(
        float(value if value else fallback) for value, fallback in zip(found, default, strict=True)
    )
