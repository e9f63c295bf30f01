"""The region split and the sampling of labelled voxels (§3.3)."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ..io.errors import InputError, LimitError
from .regions import RegionSet, known

SPLITS = ("train", "val", "test")


def dataset_rng(seed: int, dataset: str) -> np.random.Generator:
    """A generator of its own per data set: adding a data set changes no other's draw."""
    return np.random.default_rng([seed, zlib.crc32(dataset.encode())])


def check_split_fractions(fractions: dict[str, float]) -> None:
    """train + val + test = 1."""
    total = sum(fractions[split] for split in SPLITS)
    if abs(total - 1) > 1e-6:
        raise LimitError(
            f"train + val + test = {total:g}, not 1.", "make the fractions sum to 1.", "split"
        )


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Regions per split: train and val rounded, test takes the rest."""
    train = round(n * fractions["train"])
    val = round(n * fractions["val"])
    return {"train": train, "val": val, "test": n - train - val}


def split_regions(
    tables: dict[str, pd.DataFrame], fractions: dict[str, float], seed: int
) -> pd.DataFrame:
    """(dataset, region, split): one seeded shuffle per data set, or its `split` column."""
    try:
        check_split_fractions(fractions)
    except LimitError as error:
        raise InputError(error.problem, file="config: split", fix=error.fix) from None
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
    """Every labelled voxel of one split: dataset, region, z, y, x (volume frame), label;
    voxels labelled IGNORE (unpainted, or the padding of a region to the common box) are
    not labelled voxels."""
    frames = []
    for row in split_table[split_table.split == split].itertuples():
        regions = region_sets[row.dataset]
        region = regions.table.iloc[row.region]
        label = regions.labels[row.region]
        ys, xs = np.nonzero(known(label))
        frames.append(
            pd.DataFrame(
                {
                    "dataset": row.dataset,
                    "region": row.region,
                    "z": int(region.z),
                    "y": int(region.y) + ys,
                    "x": int(region.x) + xs,
                    "label": label[ys, xs],
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


def sample_splits(
    region_sets: dict[str, RegionSet], split_table: pd.DataFrame, fraction: float, seed: int
) -> dict[str, tuple[pd.DataFrame, int]]:
    """The samples of each split and its count of labelled voxels: `fraction` of them, the
    train split exactly half pore and half solid (§3.3); one generator for all three."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for split in SPLITS:
        voxels = labelled_voxels(region_sets, split_table, split)
        drawn[split] = (sample_split(voxels, fraction, split == "train", rng, split), len(voxels))
    return drawn
