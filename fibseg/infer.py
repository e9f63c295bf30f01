"""Inference: every voxel's score is P(solid) from its own n_xy x n_xy x n_z neighbourhood,
mirror-padded at the x-y and z edges (§3.8).

The two engines live in their own modules: `fibseg.sliding` (the paper's method) and
`fibseg.dense` (the fully convolutional twin). This module picks one from the settings and
applies it to slices of a volume or to annotated regions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .dense import DenseEngine, check_dense_padding
from .model import model_geometry
from .regions import RegionSet
from .settings import InferenceSettings
from .sliding import sliding_scores
from .windows import neighbour_slices

Scorer = Callable[..., np.ndarray]


def make_scorer(
    model, engine: str, inference: InferenceSettings, tile: int | None = None
) -> Scorer:
    """A function (stack, roi) -> scores for the configured engine."""
    _, _, padding = model_geometry(model)
    if engine == "sliding":
        return lambda stack, roi=None: sliding_scores(
            model, stack, inference.extract_batch, inference.predict_batch, roi
        )
    if engine == "dense":
        check_dense_padding(padding, inference.allow_approximate_dense)
        return DenseEngine(model, tile or inference.tile).scores
    raise ValueError(f"unknown inference engine '{engine}' (sliding or dense)")


def score_slices(
    read_slices: Callable[[np.ndarray], np.ndarray],
    depth: int,
    z_range: range,
    n_z: int,
    scorer: Scorer,
) -> np.ndarray:
    """Scores (len(z_range), y, x) of slices of a volume of `depth` slices."""
    return np.stack([scorer(read_slices(neighbour_slices(z, n_z, depth))) for z in z_range])


def score_regions(
    regions: RegionSet, scorer: Scorer, n_z: int, margin: int, only: list[int] | None = None
) -> np.ndarray:
    """Scores of every annotated region (or those numbered in `only`) plus `margin` pixels
    around it, from its crop (context beyond the crop is mirrored)."""
    z0 = regions.margin_z - n_z // 2
    windows = []
    for index, row in enumerate(regions.table.itertuples()):
        if only is not None and index not in only:
            continue
        top = regions.margin_xy - margin
        roi = (top, top + row.height + 2 * margin, top, top + row.width + 2 * margin)
        windows.append(scorer(regions.crops[index, z0 : z0 + n_z], roi))
    return np.stack(windows)


def label_agreement(first: np.ndarray, second: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of voxels that two score maps put in the same class."""
    return float(np.mean((first > threshold) == (second > threshold)))


def load_model(path: str):
    import keras

    return keras.saving.load_model(path, compile=False)
