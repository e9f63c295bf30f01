"""The OME-Zarr store of a segmented data set (`outputs.ome_zarr`, on by default): one store
that napari (napari-ome-zarr), Fiji (MoBIE, BigDataViewer) and ome-zarr-py open at the data
set's voxel size.

- The image: three channels, the preprocessed EM volume (the aligned, gradient-corrected
  slices the network sees), the scores (probability of solid) and the uncertainty, float32,
  named in its `omero` metadata (napari makes one layer of each; only the EM is shown at
  first).
- The label image `labels/segmentation`: 1 = pore, 2 = solid, as fibseg's painted
  annotations (napari draws label 0 transparent, so both phases show).

Written by ome-zarr-py in the NGFF 0.4 layout (Zarr v2, the one most viewers read), streamed
through dask in slabs of `CHUNKS[0]` slices, stored in 3-D chunks of `CHUNKS` (z, y, x) so
that x-z and y-z views read as few chunks as x-y views, with a 2-D pyramid (x and y halved
per level, z kept) while a level stays at least `MIN_LEVEL_SIDE` pixels wide.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_directory

MIN_LEVEL_SIDE = 256  # no pyramid level smaller than this in y or x
CHUNKS = (16, 256, 256)  # (z, y, x) of a stored chunk: 4 MiB of float32
AXES = ["z", "y", "x"]
LABELS = "segmentation"  # the label image's name, under labels/
PORE, SOLID = 1, 2  # its values, as in a painted annotation (0 = nothing)


@dataclass(frozen=True)
class Channel:
    """One channel of the image and how a viewer shows it at first."""

    name: str
    color: str  # RGB hex
    visible: bool
    window: tuple[float, float]  # contrast limits


CHANNELS = (
    Channel("EM", "FFFFFF", True, (0.0, 1.0)),  # preprocessed.h5 is scaled to [0, 1]
    Channel("scores", "FF00FF", False, (0.0, 1.0)),  # probability of solid
    Channel("uncertainty", "FFFF00", False, (0.0, 0.5)),  # 0.5: a coin toss
)
# NGFF image-label: the image it labels (the store's root), what its values mean, colours
LABEL_METADATA = {
    "source": {"image": "../../"},
    "properties": [
        {"label-value": PORE, "class": "pore"},
        {"label-value": SOLID, "class": "solid"},
    ],
    "colors": [
        {"label-value": PORE, "rgba": [255, 200, 0, 255]},
        {"label-value": SOLID, "rgba": [40, 110, 255, 255]},
    ],
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


def omero_metadata(name: str) -> dict:
    """The image's `omero` block: each channel's name, colour, visibility and window."""
    return {
        "name": name,
        "version": "0.4",
        "rdefs": {"model": "color"},
        "channels": [
            {
                "label": channel.name,
                "color": channel.color,
                "active": channel.visible,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {
                    "min": channel.window[0],
                    "max": channel.window[1],
                    "start": channel.window[0],
                    "end": channel.window[1],
                },
            }
            for channel in CHANNELS
        ],
    }


def to_labels(block: np.ndarray) -> np.ndarray:
    """A block of a 0/1 segmentation (1 = solid) as label values (PORE, SOLID)."""
    if block.size and block.max() > 1:
        raise ValueError(f"the segmentation holds {block.max()}; expected 0 (pore) or 1 (solid)")
    return np.where(block > 0, SOLID, PORE).astype(np.uint8)


def write_ome_zarr(
    path: str | os.PathLike,
    *,
    em,
    scores,
    uncertainty,
    segmentation,
    voxel_nm: tuple[float, float, float] | None,
    name: str,
    workers: int = 1,
) -> tuple[int, ...]:
    """Write the image (channels `em`, `scores`, `uncertainty`) and the label image of
    `segmentation` (0 = pore, 1 = solid, stored as PORE and SOLID) of one data set, all
    (z, y, x) volumes of one shape, as an OME-Zarr store at `path`, atomically. The volumes
    are array-likes read in slabs of whole slices (h5py datasets or numpy arrays); `workers`
    slabs are read and written at a time. Returns the pyramid's down-sampling factors."""
    import dask
    import dask.array as da
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image, write_labels

    volumes = {"em": em, "scores": scores, "uncertainty": uncertainty, "segmentation": segmentation}
    shapes = {key: tuple(volume.shape) for key, volume in volumes.items()}
    if len(set(shapes.values())) != 1 or len(shapes["em"]) != 3:
        raise ValueError(f"the volumes must be (z, y, x) volumes of one shape; got {shapes}")
    shape = shapes["em"]
    slab = (min(CHUNKS[0], shape[0]), *shape[1:])  # whole slices: each HDF5 chunk read once

    def read(volume, dtype):
        return da.from_array(volume, chunks=slab, lock=True).astype(dtype)

    image = da.stack([read(volumes[key], np.float32) for key in ("em", "scores", "uncertainty")])
    labels = read(segmentation, np.uint8).map_blocks(to_labels, dtype=np.uint8)
    factors = pyramid_factors(shape)
    scale = scale_um(voxel_nm)
    units = dict.fromkeys(AXES, "micrometer")
    common = {"fmt": FormatV04(), "scale_factors": factors, "axes_units": units}
    with atomic_directory(path) as tmp, dask.config.set(scheduler="threads", num_workers=workers):
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        write_image(
            image,
            root,
            name=name,
            method=Methods.RESIZE,
            axes=[{"name": "c", "type": "channel"}, *AXES],
            scale={"c": 1.0, **scale},
            storage_options={"chunks": (1, *CHUNKS)},
            omero=omero_metadata(name),
            **common,
        )
        write_labels(
            labels,
            root,
            name=LABELS,
            method=Methods.NEAREST,
            scaler=None,  # else its deprecated default Scaler overrides scale_factors
            axes=AXES,
            scale=scale,
            storage_options={"chunks": CHUNKS},
            label_metadata=LABEL_METADATA,
            **common,
        )
    return factors
