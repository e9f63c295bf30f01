"""OME-Zarr output of a segmented data set (`outputs.ome_zarr`): the scores as the image and
the segmentation as its label image, in one store that napari (napari-ome-zarr), Fiji
(MoBIE, BigDataViewer) and ome-zarr-py open with the data set's voxel size.

Written by ome-zarr-py in the NGFF 0.4 layout (Zarr v2, the one most viewers read), streamed
slice by slice from the HDF5 outputs through dask, with a 2-D pyramid (x and y halved per
level, z kept) while a level stays at least `MIN_LEVEL_SIDE` pixels wide.
"""

from __future__ import annotations

import os

import numpy as np

from .atomic import atomic_directory

MIN_LEVEL_SIDE = 256  # no pyramid level smaller than this in y or x
AXES = ["z", "y", "x"]
# NGFF image-label: the image it labels (the store's root) and what its values mean
LABEL_METADATA = {
    "source": {"image": "../../"},
    "properties": [{"label-value": 0, "class": "pore"}, {"label-value": 1, "class": "solid"}],
}


def pyramid_factors(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Down-sampling factors (in y and x) of the levels after the full resolution: 2, 4, ...
    while the smaller of height and width stays >= MIN_LEVEL_SIDE."""
    side, factors, factor = min(shape[1:]), [], 2
    while side // factor >= MIN_LEVEL_SIDE:
        factors.append(factor)
        factor *= 2
    return tuple(factors)


def scale_um(voxel_nm: tuple[float, float, float] | None) -> dict[str, float]:
    """The (z, y, x) voxel size in micrometres as ome-zarr-py takes it (1 where unknown)."""
    values = (1000.0, 1000.0, 1000.0) if voxel_nm is None else voxel_nm
    return {axis: float(v) / 1e3 for axis, v in zip(AXES, values, strict=True)}


def write_ome_zarr(
    path: str | os.PathLike,
    scores,
    segmentation,
    voxel_nm: tuple[float, float, float] | None,
    name: str,
) -> tuple[int, ...]:
    """Write `scores` (z, y, x probability of solid) as the image and `segmentation` (z, y, x
    0 = pore, 1 = solid) as the label image "segmentation" of an OME-Zarr store at `path`,
    atomically. Both are array-likes read slice by slice (h5py datasets or numpy arrays).
    Returns the pyramid's down-sampling factors."""
    import dask.array as da
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image, write_labels

    if tuple(scores.shape) != tuple(segmentation.shape) or len(scores.shape) != 3:
        raise ValueError(
            f"scores {tuple(scores.shape)} and segmentation {tuple(segmentation.shape)} must be "
            "(z, y, x) volumes of one shape"
        )
    chunks = (1, *scores.shape[1:])
    factors = pyramid_factors(tuple(scores.shape))
    scale = scale_um(voxel_nm)
    units = dict.fromkeys(AXES, "micrometer")
    common = {
        "fmt": FormatV04(),
        "axes": AXES,
        "scale": scale,
        "axes_units": units,
        "scale_factors": factors,
    }
    with atomic_directory(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        image = da.from_array(scores, chunks=chunks).astype(np.float32)
        write_image(image, root, name=name, method=Methods.RESIZE, **common)
        labels = da.from_array(segmentation, chunks=chunks).astype(np.uint8)
        write_labels(
            labels,
            root,
            name="segmentation",
            method=Methods.NEAREST,
            scaler=None,  # else its deprecated default Scaler overrides scale_factors
            label_metadata=LABEL_METADATA,
            **common,
        )
    return factors
