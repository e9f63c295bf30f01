"""A simulated film through the workflow's chain, in-process, with fibseg's functions as the
rules call them: rule align (`align_volume`), correct_gradient (`correct_gradient`) and
extract_regions (`extract_regions`) in `prepare_dataset`; rule optimize_postprocess
(`optimize` on the validation regions' scores) in `choose_postprocess`. The studies and the
FIB-SEM prior's recipe (fibseg.pipeline.prior) prepare their films with these."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..annotation.regions import RegionSet, extract_regions
from ..annotation.sampling import regions_in
from ..evaluation.postprocess import optimize
from ..inference.infer import score_regions
from ..io.volume import Volume
from ..io.writers import write_h5
from ..preprocess.alignment import align_volume, apply_transform
from ..preprocess.gradient import correct_gradient
from ..runtime.settings import AlignSettings


@dataclass
class Prepared:
    """One data set as the workflow prepares it."""

    name: str
    truth: np.ndarray
    regions: RegionSet
    region_file: Path  # regions.h5
    preprocessed: Path  # HDF5 /volume, float32 in [0, 1]
    transforms: np.ndarray | None  # per slice, as align_volume's; None: not aligned


def prepare_dataset(
    name: str,
    data: dict,
    workdir: Path,
    voxel_nm: tuple[float, float, float],
    margins: Mapping[str, int],
    alignment: AlignSettings | np.ndarray | None,
) -> Prepared:
    """A synthetic data set (`fibseg.demo.synth.synthesize`'s dict) through rule align,
    correct_gradient and extract_regions, as files `{name}_*.h5` in `workdir`.

    `alignment`: rule align's settings (registration); or an array of per-slice matrices, an
    alignment known in advance, applied as align_volume applies its own; or None, no
    alignment (as a sheet's `aligned: true`). `margins`: the context kept around the regions
    (fibseg.pipeline.dag.context_margins: xy, z and smooth)."""
    raw = workdir / f"{name}_raw.h5"
    aligned = workdir / f"{name}_aligned.h5"
    preprocessed = workdir / f"{name}_preprocessed.h5"
    write_h5(raw, {"volume": data["volume"]})
    transforms = None
    if isinstance(alignment, AlignSettings):
        with Volume(str(raw), name) as volume:
            transforms = align_volume(volume, aligned, voxel_nm, alignment).transforms
    elif alignment is not None:
        transforms = np.asarray(alignment)
        planes = zip(data["volume"], transforms, strict=True)
        write_h5(aligned, {"volume": np.stack([apply_transform(p, m) for p, m in planes])})
    with Volume(str(raw if transforms is None else aligned), name) as volume:
        correct_gradient(volume, preprocessed, voxel_nm)
    with Volume(str(preprocessed), name) as volume:
        regions = extract_regions(
            volume,
            data["regions"],
            data["labels"],
            name,
            margins["xy"] + margins["smooth"],
            margins["z"],
        )
    region_file = workdir / f"{name}_regions.h5"
    regions.write(str(region_file))
    return Prepared(name, data["truth"], regions, region_file, preprocessed, transforms)


def choose_postprocess(
    region_sets: Mapping[str, RegionSet],
    split: pd.DataFrame,
    scorer: Callable,
    n_z: int,
    smooth: int,
    sigmas: Sequence[float],
    thresholds: Sequence[float],
    min_object_voxels: int,
) -> dict:
    """Rule optimize_postprocess: sigma and T of highest pooled mIoU on the validation
    regions, from a scorer's scores of those regions plus `smooth` pixels around them."""
    windows, labels = [], []
    for name, regions in region_sets.items():
        val = sorted(regions_in(split, name, "val"))
        if not val:  # a data set that only trains
            continue
        windows += list(score_regions(regions, scorer, n_z, smooth, val))
        labels += list(regions.labels[val])
    best, _ = optimize(windows, labels, smooth, list(sigmas), list(thresholds), min_object_voxels)
    return {**best, "min_object_voxels": min_object_voxels}
