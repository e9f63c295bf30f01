"""Annotated regions (§3.2): their context crops in `regions.h5`, and their extraction.

`regions.h5` holds, for one data set:
- `/crops` (regions, 2*margin_z + 1, height + 2*margin_xy, width + 2*margin_xy) float32: the
  preprocessed context around every region, mirrored where it meets the volume's edges;
- `/labels` (regions, height, width) uint8, 1 = solid;
- `/regions/{z,y,x,height,width[,split]}`: the region table;
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

from .io import InputError, Volume, atomic_output, compression
from .windows import mirror_index


def context_crop(volume: Volume, region, margin_xy: int, margin_z: int) -> np.ndarray:
    """The region plus its margins, read slice by slice, mirrored at the volume's edges."""
    depth, height, width = volume.shape
    zs = mirror_index(np.arange(region.z - margin_z, region.z + margin_z + 1), depth)
    ys = mirror_index(np.arange(region.y - margin_xy, region.y + region.height + margin_xy), height)
    xs = mirror_index(np.arange(region.x - margin_xy, region.x + region.width + margin_xy), width)
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
    """Context crops around every annotated region of a preprocessed volume."""
    check_context_fits(volume.shape, margin_xy, margin_z, dataset)
    crops = np.stack([context_crop(volume, row, margin_xy, margin_z) for row in table.itertuples()])
    return RegionSet(
        dataset, crops, labels.astype(np.uint8), table.reset_index(drop=True), margin_xy, margin_z
    )
