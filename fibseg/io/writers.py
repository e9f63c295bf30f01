"""Writers of fibseg's outputs, each atomic: multi-page TIFF, compressed HDF5 (3-D arrays
chunked by slice, with their voxel size), CSV, and the stitching of score chunks."""

from __future__ import annotations

import math
import os

import h5py
import numpy as np
import tifffile

from .atomic import atomic_output
from .voxel_size import hdf5_axes, imagej_calibration

H5_COMPRESSION = {"compression": "gzip", "compression_opts": 1}  # every HDF5 output fibseg keeps
# Files deleted once read (the score chunks of predict jobs): LZF, about 3 times faster to
# write than gzip level 1 on scores, so that writing stays a small part of a predict job.
H5_FAST_COMPRESSION = {"compression": "lzf"}


def compression(array_shape: tuple[int, ...], fast: bool = False) -> dict[str, object]:
    """`create_dataset` keywords that compress a dataset (none for scalars and empty ones):
    gzip level 1, or with `fast` LZF (for intermediate files)."""
    if not (len(array_shape) and math.prod(array_shape)):
        return {}
    return H5_FAST_COMPRESSION if fast else H5_COMPRESSION


def write_tiff(
    path: str | os.PathLike,
    array: np.ndarray,
    voxel_nm: tuple[float, float, float] | None = None,
    **metadata: object,
) -> None:
    """Write a (z, y, x) stack as a multi-page TIFF that Fiji and napari open, atomically;
    with `voxel_nm`, an ImageJ stack carries that voxel size."""
    with atomic_output(path) as tmp:
        imagej = array.dtype in (np.uint8, np.uint16, np.float32)
        calibration = imagej_calibration(voxel_nm if imagej else None)
        tifffile.imwrite(
            tmp,
            array,
            photometric="minisblack",
            imagej=imagej,
            resolution=calibration.get("resolution"),
            metadata={**calibration["metadata"], **metadata} if array.ndim == 3 else None,
        )


def write_h5(
    path: str | os.PathLike,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, object] | None = None,
    slice_chunks: bool = True,
    voxel_nm: tuple[float, float, float] | None = None,
) -> None:
    """Write arrays to one HDF5 file atomically, compressed; 3-D arrays are chunked one slice
    per chunk and, with `voxel_nm`, carry `element_size_um`."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        for name, array in arrays.items():
            array = np.asarray(array)
            chunks = (1, *array.shape[1:]) if slice_chunks and array.ndim == 3 else None
            data = handle.create_dataset(
                name, data=array, chunks=chunks, **compression(array.shape)
            )
            if array.ndim == 3:
                data.attrs.update(hdf5_axes(voxel_nm))
        handle.attrs.update(attrs or {})


def write_csv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame to CSV atomically."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False)


def stitch_chunks(
    chunk_paths: list[str],
    output: str,
    dtype: str = "float32",
    voxel_nm: tuple[float, float, float] | None = None,
    span: tuple[int, int] | None = None,
) -> tuple:
    """Write the chunks' `/scores` (and `/uncertainty`, where present) into one compressed
    volume each (with `element_size_um` of `voxel_nm`): the contiguous slices they cover,
    every one exactly once, from attribute `first_slice` on (0 for a whole volume; the forest
    may score a block of it), which must be [first, stop) `span` where it is given. The chunks'
    other attributes are kept."""
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
    start, stop = pieces[0][0], max(p[1] for p in pieces)
    covered = np.zeros(stop - start, np.int64)
    for first, last, _, _ in pieces:
        covered[first - start : last - start] += 1
    wrong_span = span is not None and (start, stop) != tuple(span)
    if wrong_span or not (covered == 1).all() or len({p[3] for p in pieces}) != 1:
        raise ValueError(
            f"score chunks do not cover slices {start}-{stop - 1} exactly once"
            + (f" (they should cover {span[0]}-{span[1] - 1})" if span is not None else "")
            + ": "
            f"{[(p[0], p[1]) for p in pieces]}"
        )
    shape = (stop - start, *pieces[0][3])
    with atomic_output(output) as tmp, h5py.File(tmp, "w") as out:
        out.attrs.update({**attrs, "first_slice": start})
        for name in names:
            data = out.create_dataset(
                name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]), **compression(shape)
            )
            data.attrs.update(hdf5_axes(voxel_nm))
            for first, last, path, _ in pieces:
                with h5py.File(path, "r") as handle:
                    for z in range(first, last):  # a slice at a time: bounded memory
                        data[z - start] = np.clip(handle[name][z - first], 0, 1).astype(dtype)
    return shape
