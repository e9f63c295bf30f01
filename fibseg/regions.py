"""Annotated regions (§3.2-3.3): context crops, the published data, the split and sampling.

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
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .io import InputError, Volume, atomic_output
from .validate import SPLITS
from .windows import mirror_index


def context_crop(volume: Volume, region, margin_xy: int, margin_z: int) -> np.ndarray:  # noqa: ANN001
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
            handle.create_dataset("crops", data=self.crops, chunks=(1, *self.crops.shape[1:]))
            handle.create_dataset("labels", data=self.labels.astype(np.uint8))
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


def margins(n_xy: list[int], n_z: list[int]) -> tuple[int, int]:
    """Margins that fit the largest neighbourhood of the grid."""
    return max(n_xy) // 2, max(n_z) // 2


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


# --- the published data of the paper (Zenodo 4317170) -------------------------------------

PUBLISHED_CROP, PUBLISHED_REGION, PUBLISHED_SLICES = 384, 256, 7


def read_mat_cell_masks(path: str, variable: str = "M") -> list[np.ndarray]:
    """Masks of a MATLAB v7.3 cell array (HDF5 object references), transposed to row-major."""
    with h5py.File(path, "r") as handle:
        if variable not in handle:
            raise InputError(
                f"has no variable '{variable}' (it holds {list(handle.keys())}).",
                file=path,
                fix="pass manual_segmentation_HPC{nn}.mat of the release.",
            )
        references = handle[variable][()].ravel(order="F")
        return [np.asarray(handle[ref][()]).T for ref in references]


def read_mat_split(path: str) -> dict[str, np.ndarray]:
    """0-based region indices per split from data_split.mat (v7.3 or older), any layout of
    variables whose names contain train, val(id) and test."""
    try:
        with h5py.File(path, "r") as handle:
            variables = {
                k: np.asarray(v[()]) for k, v in handle.items() if isinstance(v, h5py.Dataset)
            }
    except OSError:
        from scipy.io import loadmat

        variables = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    found = {}
    for split in SPLITS:
        names = [k for k in variables if split in k.lower()]
        if len(names) != 1:
            raise InputError(
                f"needs one variable whose name contains '{split}'; found "
                f"{names or 'none'} among {sorted(variables)}.",
                file=path,
                fix="pass data_split.mat of the release or a split column.",
            )
        found[split] = np.asarray(variables[names[0]]).astype(np.int64).ravel() - 1
    return found


def import_published(
    dataset: str,
    regions_tif: str,
    masks_mat: str,
    split_mat: str | None,
    margin_xy: int,
    margin_z: int,
    smooth_margin: int = 0,
) -> RegionSet:
    """The release's 384 x 384 x 7 crops and 256 x 256 masks as a RegionSet.

    Only the /65535 scaling applies: the release holds crops, not the full slices that the
    gradient correction of §3.1 needs. The crops keep up to `margin_xy + smooth_margin` of
    context (at most the release's 64 pixels); scoring mirrors beyond that.
    """
    offset = (PUBLISHED_CROP - PUBLISHED_REGION) // 2
    if margin_xy > offset or margin_z > PUBLISHED_SLICES // 2:
        raise InputError(
            f"the grid needs margins {margin_xy} (x-y) and {margin_z} (z); the "
            f"release's crops give {offset} and {PUBLISHED_SLICES // 2}.",
            dataset=dataset,
            file=regions_tif,
            fix="keep n_xy <= 129 and n_z <= 7 for the published data.",
        )
    with Volume(regions_tif, dataset) as volume:
        pages = volume.read()
    if pages.shape[1:] != (PUBLISHED_CROP, PUBLISHED_CROP) or len(pages) % PUBLISHED_SLICES:
        raise InputError(
            f"has shape {pages.shape}; 7 pages of 384 x 384 per region are expected.",
            dataset=dataset,
            file=regions_tif,
        )
    crops = pages.reshape(-1, PUBLISHED_SLICES, PUBLISHED_CROP, PUBLISHED_CROP)
    centre = PUBLISHED_SLICES // 2
    keep_z = slice(centre - margin_z, centre + margin_z + 1)
    kept = min(margin_xy + smooth_margin, offset)
    keep_xy = slice(offset - kept, offset + PUBLISHED_REGION + kept)
    crops = (crops[:, keep_z, keep_xy, keep_xy] / np.float32(65535)).astype(np.float32)
    labels = np.stack(read_mat_cell_masks(masks_mat)).astype(np.uint8)
    if len(labels) != len(crops) or labels.shape[1:] != (PUBLISHED_REGION, PUBLISHED_REGION):
        raise InputError(
            f"holds {len(labels)} masks of {labels.shape[1:]}, but the TIFF holds "
            f"{len(crops)} regions of 256 x 256.",
            dataset=dataset,
            file=masks_mat,
        )
    table = pd.DataFrame(
        {
            "z": centre,
            "y": offset,
            "x": offset,
            "height": PUBLISHED_REGION,
            "width": PUBLISHED_REGION,
        },
        index=range(len(crops)),
    )
    if split_mat:
        table["split"] = ""
        for split, indices in read_mat_split(split_mat).items():
            table.loc[indices, "split"] = split
    return RegionSet(dataset, crops, labels, table, kept, margin_z)


# --- split and sampling ---------------------------------------------------------------------


def dataset_rng(seed: int, dataset: str) -> np.random.Generator:
    """A generator of its own per data set: adding a data set changes no other's draw."""
    return np.random.default_rng([seed, zlib.crc32(dataset.encode())])


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Regions per split: train and val rounded, test takes the rest."""
    train = round(n * fractions["train"])
    val = round(n * fractions["val"])
    return {"train": train, "val": val, "test": n - train - val}


def split_regions(
    tables: dict[str, pd.DataFrame], fractions: dict[str, float], seed: int
) -> pd.DataFrame:
    """(dataset, region, split): one seeded shuffle per data set, or its `split` column."""
    total = fractions["train"] + fractions["val"] + fractions["test"]
    if abs(total - 1) > 1e-6:
        raise InputError(
            f"split fractions sum to {total:g}, not 1.",
            file="config: split",
            fix="make train + val + test = 1.",
        )
    rows = []
    for dataset, table in tables.items():
        if "split" in table.columns and (table["split"].astype(str) != "").all():
            assigned = table["split"].astype(str).to_numpy()
        else:
            counts = split_counts(len(table), fractions)
            order = dataset_rng(seed, dataset).permutation(len(table))
            assigned = np.empty(len(table), dtype=object)
            start = 0
            for split in SPLITS:
                assigned[order[start : start + counts[split]]] = split
                start += counts[split]
        missing = [s for s in SPLITS if s not in set(assigned)]
        if missing:
            raise InputError(
                f"the split leaves no region for {', '.join(missing)} ({len(table)} regions).",
                dataset=dataset,
                fix="annotate more regions or change the split fractions.",
            )
        rows.append(
            pd.DataFrame({"dataset": dataset, "region": np.arange(len(table)), "split": assigned})
        )
    return pd.concat(rows, ignore_index=True)


def regions_in(split_table: pd.DataFrame, dataset: str, split: str) -> list[int]:
    """Numbers of the data set's regions that split.csv puts in `split` (train/val/test)."""
    chosen = (split_table.dataset == dataset) & (split_table.split == split)
    return split_table.region[chosen].tolist()


def labelled_voxels(
    region_sets: dict[str, RegionSet], split_table: pd.DataFrame, split: str
) -> pd.DataFrame:
    """Every labelled voxel of one split: dataset, region, z, y, x (volume frame), label."""
    frames = []
    for row in split_table[split_table.split == split].itertuples():
        regions = region_sets[row.dataset]
        region = regions.table.iloc[row.region]
        label = regions.labels[row.region]
        ys, xs = np.indices(label.shape)
        frames.append(
            pd.DataFrame(
                {
                    "dataset": row.dataset,
                    "region": row.region,
                    "z": int(region.z),
                    "y": int(region.y) + ys.ravel(),
                    "x": int(region.x) + xs.ravel(),
                    "label": label.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def sample_split(
    voxels: pd.DataFrame, fraction: float, stratified: bool, rng: np.random.Generator, split: str
) -> pd.DataFrame:
    """`fraction` of the voxels; stratified draws exactly half pore and half solid."""
    count = round(fraction * len(voxels))
    if not stratified:
        if count == 0:
            raise InputError(
                f"sampling fraction {fraction} of {len(voxels)} labelled {split} "
                "voxels gives no sample.",
                file="config: sampling.fraction",
                fix="raise sampling.fraction.",
            )
        return voxels.iloc[np.sort(rng.choice(len(voxels), count, replace=False))]
    per_class = count // 2
    picked = []
    for label, name in ((0, "pore"), (1, "solid")):
        pool = np.flatnonzero(voxels.label.to_numpy() == label)
        if per_class == 0 or len(pool) < per_class:
            raise InputError(
                f"the {split} split needs {per_class} {name} samples but has "
                f"{len(pool)} {name} voxels (fraction {fraction}).",
                file="config: sampling.fraction",
                fix="change sampling.fraction or annotate more regions.",
            )
        picked.append(rng.choice(pool, per_class, replace=False))
    return voxels.iloc[np.sort(np.concatenate(picked))]


def write_samples(samples: pd.DataFrame, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        samples.to_csv(tmp, index=False)
