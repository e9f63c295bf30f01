"""Volumes (TIFF stacks, HDF5 `file.h5:/dataset`), atomic writes and input errors."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import tifffile


class InputError(ValueError):
    """Bad user input. The message names the data set, the file, the problem and the fix."""

    def __init__(
        self,
        problem: str,
        *,
        dataset: str | None = None,
        file: str | None = None,
        fix: str | None = None,
    ) -> None:
        where = []
        if dataset:
            where.append(f"data set '{dataset}'")
        if file:
            where.append(f"file '{file}'")
        text = (", ".join(where) + ": " if where else "") + problem
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class LimitError(ValueError):
    """A limit of the method was broken. `problem` and `fix` say what and how; the caller
    turns it into an InputError that names the config key or the file."""

    def __init__(self, problem: str, fix: str, key: str = "") -> None:
        self.problem, self.fix, self.key = problem, fix, key
        super().__init__(f"{problem} Fix: {fix}")


H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split `file.h5:/dataset` into (file, dataset); a TIFF spec gives (file, None)."""
    spec = str(spec)
    for suffix in H5_SUFFIXES:
        marker = suffix + ":"
        if marker in spec:
            head, _, inner = spec.partition(marker)
            return head + suffix, inner or "/volume"
        if spec.endswith(suffix):
            return spec, "/volume"
    return spec, None


class Volume:
    """Read-only (z, y, x) stack that reads slices lazily from a TIFF or an HDF5 dataset."""

    def __init__(self, spec: str, dataset_name: str | None = None) -> None:
        self.spec = str(spec)
        self.path, self.h5_path = split_spec(self.spec)
        self.dataset_name = dataset_name
        if not Path(self.path).is_file():
            raise InputError(
                "the volume file does not exist.",
                dataset=dataset_name,
                file=self.path,
                fix="correct the path in the data set sheet.",
            )
        self._stack = contextlib.ExitStack()
        try:
            if self.h5_path is not None:
                handle = self._stack.enter_context(h5py.File(self.path, "r"))
                if self.h5_path not in handle:
                    raise InputError(
                        f"has no HDF5 dataset '{self.h5_path}' (it holds: "
                        f"{', '.join(handle.keys()) or 'nothing'}).",
                        dataset=dataset_name,
                        file=self.path,
                        fix="write the volume path as 'file.h5:/dataset'.",
                    )
                self._data = handle[self.h5_path]
                self.shape = tuple(self._data.shape)
                self.dtype = self._data.dtype
            else:
                tif = self._stack.enter_context(tifffile.TiffFile(self.path))
                series = tif.series[0]
                self._tif = tif
                self.shape = tuple(series.shape)
                self.dtype = series.dtype
                self._pages = len(series.pages) if series.pages else 0
        except InputError:
            self.close()
            raise
        except Exception as error:  # any reader failure means an unreadable file
            self.close()
            raise InputError(
                f"cannot be read ({type(error).__name__}: {error}).",
                dataset=dataset_name,
                file=self.path,
                fix="check that the file is complete and is a TIFF or HDF5 file.",
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

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Slices [start, stop) as an array of shape (stop - start, y, x)."""
        stop = self.shape[0] if stop is None else stop
        if self.h5_path is not None:
            return np.asarray(self._data[start:stop])
        if self._pages == self.shape[0]:
            pages = self._tif.series[0].pages
            return np.stack([pages[z].asarray() for z in range(start, stop)])
        return self._tif.series[0].asarray()[start:stop]

    def read_slices(self, indices: np.ndarray) -> np.ndarray:
        """The slices at `indices` (repeats allowed, as mirroring makes), each read once."""
        unique = {int(z): self.read(int(z), int(z) + 1)[0] for z in np.unique(indices)}
        return np.stack([unique[int(z)] for z in indices])

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_volume(spec: str, dataset_name: str | None = None) -> np.ndarray:
    """Whole volume in memory."""
    with Volume(spec, dataset_name) as volume:
        return volume.read()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_tiff(path: str | os.PathLike, array: np.ndarray, **metadata: object) -> None:
    """Write a (z, y, x) stack as a multi-page TIFF that Fiji and napari open, atomically."""
    with atomic_output(path) as tmp:
        imagej = array.dtype in (np.uint8, np.uint16, np.float32)
        tifffile.imwrite(
            tmp,
            array,
            photometric="minisblack",
            imagej=imagej,
            metadata={"axes": "ZYX", **metadata} if array.ndim == 3 else None,
        )


def write_h5(
    path: str | os.PathLike,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, object] | None = None,
    slice_chunks: bool = True,
) -> None:
    """Write arrays to one HDF5 file atomically; 3-D arrays are chunked one slice per chunk."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        for name, array in arrays.items():
            chunks = (1, *array.shape[1:]) if slice_chunks and array.ndim == 3 else None
            handle.create_dataset(name, data=array, chunks=chunks)
        handle.attrs.update(attrs or {})


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame to CSV atomically."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False)


def stitch_chunks(chunk_paths: list[str], output: str, dtype: str = "float32") -> tuple:
    """Write the chunks' `/scores` (and `/uncertainty`, where present) into one volume each;
    every slice exactly once. The chunks' other attributes are kept."""
    pieces, names, attrs = [], [], {}
    for path in chunk_paths:
        with h5py.File(path, "r") as handle:
            if not pieces:  # the arrays and attributes every chunk carries
                names = [name for name in ("scores", "uncertainty") if name in handle]
                attrs = {
                    k: v for k, v in handle.attrs.items() if k not in ("first_slice", "stop_slice")
                }
            pieces.append(
                (
                    int(handle.attrs["first_slice"]),
                    int(handle.attrs["stop_slice"]),
                    path,
                    handle["scores"].shape[1:],
                )
            )
    pieces.sort()
    depth = pieces[-1][1]
    covered = np.zeros(depth, np.int64)
    for first, stop, _, _ in pieces:
        covered[first:stop] += 1
    if not (covered == 1).all() or len({p[3] for p in pieces}) != 1:
        raise ValueError(
            f"score chunks do not cover slices 0-{depth - 1} exactly once: "
            f"{[(p[0], p[1]) for p in pieces]}"
        )
    shape = (depth, *pieces[0][3])
    with atomic_output(output) as tmp, h5py.File(tmp, "w") as out:
        out.attrs.update(attrs)
        for name in names:
            data = out.create_dataset(name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]))
            for first, stop, path, _ in pieces:
                with h5py.File(path, "r") as handle:
                    data[first:stop] = np.clip(handle[name][:], 0, 1).astype(dtype)
    return shape
