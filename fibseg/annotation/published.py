"""The published data of the paper (Zenodo 4317170): its crops, masks and split as a
RegionSet, which then trains and evaluates like any data set."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pandas as pd

from ..io.errors import InputError, LimitError
from ..io.volume import Volume
from .regions import RegionSet
from .sampling import SPLITS

PUBLISHED_CROP, PUBLISHED_REGION, PUBLISHED_SLICES = 384, 256, 7
PUBLISHED_CONTEXT = (PUBLISHED_CROP - PUBLISHED_REGION) // 2  # pixels around each region
PUBLISHED_MAX_NXY = 2 * PUBLISHED_CONTEXT + 1
PUBLISHED_MAX_NZ = PUBLISHED_SLICES


def check_published_context(margin_xy: int, margin_z: int) -> None:
    """The grid's largest neighbourhood fits in the release's crops."""
    if margin_xy > PUBLISHED_CONTEXT or margin_z > PUBLISHED_SLICES // 2:
        raise LimitError(
            f"the grid needs margins {margin_xy} (x-y) and {margin_z} (z); the release's "
            f"crops give {PUBLISHED_CONTEXT} and {PUBLISHED_SLICES // 2}.",
            f"keep n_xy <= {PUBLISHED_MAX_NXY} and n_z <= {PUBLISHED_MAX_NZ} for the "
            "published data, or drop the published data sets.",
            "grid",
        )


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


SPLIT_WORDS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def mat_variables(path: str) -> dict[str, np.ndarray]:
    """The arrays of a .mat file: MATLAB v7.3 (HDF5) or v5 and older (`scipy.io.loadmat`)."""
    try:
        with h5py.File(path, "r") as handle:
            return {k: np.asarray(v[()]) for k, v in handle.items() if isinstance(v, h5py.Dataset)}
    except OSError:
        from scipy.io import loadmat

        return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}


def per_dataset_split_names(variables: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """The release's layout, one variable per split and data set named `..._train_HPC22`,
    `..._val_HPC30`, ...: {data set: {split: variable name}}."""
    words = "|".join(word for choices in SPLIT_WORDS.values() for word in choices)
    pattern = re.compile(rf"(?:^|_)({words})_([A-Za-z0-9.-]+)$", re.IGNORECASE)
    layout: dict[str, dict[str, str]] = {}
    for name in variables:
        match = pattern.search(name)
        if match:
            split = next(s for s, choices in SPLIT_WORDS.items() if match[1].lower() in choices)
            layout.setdefault(match[2], {})[split] = name
    return layout


def read_mat_split(path: str, dataset: str | None = None) -> dict[str, np.ndarray]:
    """0-based region indices per split of `dataset` from data_split.mat (v7.3 or v5).

    The release holds one variable per split and data set (`..._train_HPC22`, 1-based); a
    file with one variable per split (names containing train, val and test) serves every
    data set.
    """
    variables = mat_variables(path)
    layout = per_dataset_split_names(variables)
    named = next(
        (names for key, names in layout.items() if key.lower() == str(dataset).lower()), None
    )
    if named is None and len(layout) > 1:
        raise InputError(
            f"holds the split of the data sets {sorted(layout)} but none for this one "
            f"(variables: {sorted(variables)}).",
            dataset=dataset,
            file=path,
            fix="name the data set in published.datasets as in the file (e.g. HPC22), or "
            "leave published.split empty to split its regions at random.",
        )
    found = {}
    for split in SPLITS:
        if named is not None:
            names = [named[split]] if split in named else []
        else:
            names = [k for k in variables if split in k.lower()]
        if len(names) != 1:
            raise InputError(
                f"needs one variable for the {split} split"
                + (f" of data set '{dataset}'" if named is not None else "")
                + f"; found {names or 'none'} among {sorted(variables)}.",
                dataset=dataset,
                file=path,
                fix="pass data_split.mat of the release, or leave published.split empty to "
                "split the regions at random.",
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
    offset = PUBLISHED_CONTEXT
    try:
        check_published_context(margin_xy, margin_z)
    except LimitError as error:
        raise InputError(error.problem, dataset=dataset, file=regions_tif, fix=error.fix) from None
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
        for split, indices in read_mat_split(split_mat, dataset).items():
            if indices.size and (indices.min() < 0 or indices.max() >= len(table)):
                raise InputError(
                    f"the {split} split lists regions {indices.min() + 1}-{indices.max() + 1} "
                    f"(1-based) but the TIFF holds {len(table)} regions.",
                    dataset=dataset,
                    file=split_mat,
                    fix="pass the data_split.mat and the regions TIFF of one release.",
                )
            table.loc[indices, "split"] = split
    return RegionSet(dataset, crops, labels, table, kept, margin_z)
