"""Annotated regions (§3.2): their context crops in `regions.h5`, and their extraction.

`regions.h5` holds, for one data set:
- `/crops` (regions, 2*margin_z + 1, height + 2*margin_xy, width + 2*margin_xy) float32: the
  preprocessed context around every region, mirrored where it meets the volume's edges;
- `/labels` (regions, height, width) uint8, 1 = solid, 0 = pore, IGNORE (255) = not
  labelled; every region is stored in one common box, the largest region's height and width,
  from its top-left corner: the voxels of the box outside the region, and the unpainted
  voxels of a region derived from a painted annotation, are IGNORE;
- `/regions/{z,y,x,height,width[,split]}`: the region table (each region's own size);
- attributes `dataset`, `margin_xy`, `margin_z`.
The region's annotated slice is crop slice `margin_z`, its top-left pixel crop pixel
(`margin_xy`, `margin_xy`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd

from ..io.atomic import atomic_output
from ..io.errors import InputError
from ..io.volume import Volume
from ..io.writers import compression
from ..networks.windows import mirror_index

# The label of a voxel that is not annotated: inside the box of a painted region (or the
# padding of a smaller region to the common box) but not painted. Never sampled, trained on
# (weight 0) or scored.
IGNORE = 255


def known(labels: np.ndarray) -> np.ndarray:
    """Where `labels` holds a label (0 pore, 1 solid), not IGNORE."""
    return np.asarray(labels) != IGNORE


def context_crop(
    volume: Volume, region, margin_xy: int, margin_z: int, box: tuple[int, int] | None = None
) -> np.ndarray:
    """The region (or the `box` (height, width) from its top-left corner) plus its margins,
    read slice by slice, mirrored at the volume's edges."""
    depth, height, width = volume.shape
    box_height, box_width = box or (region.height, region.width)
    zs = mirror_index(np.arange(region.z - margin_z, region.z + margin_z + 1), depth)
    ys = mirror_index(np.arange(region.y - margin_xy, region.y + box_height + margin_xy), height)
    xs = mirror_index(np.arange(region.x - margin_xy, region.x + box_width + margin_xy), width)
    return volume.read_slices(zs)[:, ys][:, :, xs].astype(np.float32)


@dataclass
class RegionSet:
    """The content of one regions.h5."""

    dataset: str
    crops: np.ndarray
    labels: np.ndarray
    table: pd.DataFrame
    margin_xy: int
    margin_z: int

    def write(self, path: str | os.PathLike) -> None:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
            handle.create_dataset(
                "crops",
                data=self.crops,
                chunks=(1, *self.crops.shape[1:]),
                **compression(self.crops.shape),
            )
            labels = self.labels.astype(np.uint8)
            handle.create_dataset("labels", data=labels, **compression(labels.shape))
            for column in self.table.columns:
                values = self.table[column].to_numpy()
                if values.dtype == object:
                    values = values.astype("S")
                handle.create_dataset(f"regions/{column}", data=values)
            handle.attrs.update(
                dataset=self.dataset, margin_xy=self.margin_xy, margin_z=self.margin_z
            )

    @classmethod
    def read(cls, path: str | os.PathLike, crops: bool = True) -> RegionSet:
        with h5py.File(path, "r") as handle:
            table = pd.DataFrame(
                {
                    name: (data[:].astype(str) if data.dtype.kind == "S" else data[:])
                    for name, data in handle["regions"].items()
                }
            )
            return cls(
                dataset=str(handle.attrs["dataset"]),
                crops=handle["crops"][:] if crops else np.empty(0, np.float32),
                labels=handle["labels"][:],
                table=table,
                margin_xy=int(handle.attrs["margin_xy"]),
                margin_z=int(handle.attrs["margin_z"]),
            )


def check_context_fits(shape: tuple[int, ...], margin_xy: int, margin_z: int, dataset: str) -> None:
    """One mirror reflection must cover the context: margins smaller than the volume."""
    depth, height, width = shape
    if margin_xy >= min(height, width) or (depth > 1 and margin_z >= depth):
        raise InputError(
            f"the context around a region ({margin_xy} px in x-y, {margin_z} "
            f"slices in z) is larger than the volume {tuple(shape)} (z, y, x), so "
            "mirroring at the edges cannot fill it.",
            dataset=dataset,
            fix="use a larger volume or smaller grid sizes (grid.n_xy, grid.n_z).",
        )


def extract_regions(
    volume: Volume,
    table: pd.DataFrame,
    labels: np.ndarray,
    dataset: str,
    margin_xy: int,
    margin_z: int,
) -> RegionSet:
    """Context crops around every annotated region of a preprocessed volume.

    `labels` (regions, H, W) holds each region's mask in its top-left (height, width) corner;
    (H, W) is the largest region's size. Where regions differ in size, the rest of each box
    becomes IGNORE; rectangles of one size keep their labels as they are."""
    check_context_fits(volume.shape, margin_xy, margin_z, dataset)
    table = table.reset_index(drop=True)
    box = labels.shape[1:]
    labels = pad_to_box(labels.astype(np.uint8), table)
    crops = np.stack(
        [context_crop(volume, row, margin_xy, margin_z, box) for row in table.itertuples()]
    )
    return RegionSet(dataset, crops, labels, table, margin_xy, margin_z)


def pad_to_box(labels: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """IGNORE in each region's box (the stack's (H, W)) outside its own height and width."""
    labels = labels.copy()
    for index, row in enumerate(table.itertuples()):
        labels[index, row.height :, :] = IGNORE
        labels[index, :, row.width :] = IGNORE
    return labels


def regions_from_annotation(annotation: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Regions of a painted label volume (z, y, x): 0 unlabelled, 1 pore, 2 solid.

    One region per connected group of labelled voxels in a slice (8-connected in x-y, both
    classes together): its table row is the group's bounding box, its labels (in the common
    box of the largest group's height and width, from the box's top-left corner) are 1 =
    solid and 0 = pore on the group's voxels and IGNORE elsewhere, also on the other groups'
    voxels that fall into the box (each voxel is scored once)."""
    from scipy import ndimage

    boxes, masks = [], []
    eight = np.ones((3, 3), bool)
    for z, plane in enumerate(annotation):
        groups, _ = ndimage.label(plane > 0, structure=eight)
        for number, found in enumerate(ndimage.find_objects(groups), start=1):
            if found is None:
                continue
            ys, xs = found
            boxes.append((z, ys.start, xs.start, ys.stop - ys.start, xs.stop - xs.start))
            group = groups[found] == number
            masks.append(np.where(group, plane[found] == 2, IGNORE).astype(np.uint8))
    table = pd.DataFrame(boxes, columns=["z", "y", "x", "height", "width"], dtype=np.int64)
    height, width = (int(table.height.max()), int(table.width.max())) if boxes else (0, 0)
    labels = np.full((len(masks), height, width), IGNORE, np.uint8)
    for index, mask in enumerate(masks):
        labels[index, : mask.shape[0], : mask.shape[1]] = mask
    return table, labels
