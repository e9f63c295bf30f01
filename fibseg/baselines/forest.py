"""A random-forest baseline: the pixel classification behind ilastik (Röding et al. 2021).

Every voxel is described by scikit-image's multiscale basic features (Gaussian-smoothed
intensity, gradient magnitude and Hessian eigenvalues from sigma 0.5 to `sigma_max`) of the
n_z slices centred on it, each slice a channel, and a scikit-learn random forest with
balanced class weights turns them into P(solid). `forest_scorer` follows the scorer protocol
of `fibseg.inference.infer`, so `score_slices` and `score_regions` apply it like a CNN engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import joblib
import numpy as np
import pandas as pd
from skimage.feature import multiscale_basic_features
from sklearn.ensemble import RandomForestClassifier

from ..annotation.regions import RegionSet
from ..io.atomic import atomic_output
from ..networks.windows import Roi, region_of_interest

PREDICT_PIXELS = 65536  # pixels per predict_proba call: bounds the forest's working memory
REQUIRED_METADATA = ("n_z", "sigma_max")


def forest_features(stack: np.ndarray, sigma_max: float = 16.0) -> np.ndarray:
    """(y, x, F) float32 features of an (n_z, y, x) stack, the slices as channels: for every
    slice, intensity, edges and texture at each sigma from 0.5 to `sigma_max`."""
    features = multiscale_basic_features(
        np.asarray(stack, np.float32),
        intensity=True,
        edges=True,
        texture=True,
        sigma_max=sigma_max,
        channel_axis=0,
    )
    return features.astype(np.float32, copy=False)


def solid_probability(forest: RandomForestClassifier, features: np.ndarray) -> np.ndarray:
    """P(solid) of (y, x, F) features, predicted a block of rows at a time."""
    height, width, count = features.shape
    column = list(forest.classes_).index(1)
    rows = max(1, PREDICT_PIXELS // width)
    scores = np.empty((height, width), np.float32)
    for top in range(0, height, rows):
        block = features[top : top + rows].reshape(-1, count)
        scores[top : top + rows] = forest.predict_proba(block)[:, column].reshape(-1, width)
    return scores


def forest_scorer(
    forest: RandomForestClassifier, sigma_max: float
) -> Callable[[np.ndarray, Roi | None], np.ndarray]:
    """A scorer (stack, roi=None) -> (h, w) float32 P(solid) of the centre slice over roi,
    from the features of the whole stack."""

    def scorer(stack: np.ndarray, roi: Roi | None = None) -> np.ndarray:
        y0, y1, x0, x1 = region_of_interest(stack, roi)
        return solid_probability(forest, forest_features(stack, sigma_max)[y0:y1, x0:x1])

    return scorer


def forest_training_data(
    region_sets: dict[str, RegionSet], samples: pd.DataFrame, n_z: int, sigma_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows X (samples, F) and labels y of the sample voxels, in the samples' order.

    Features come from each sampled region's context crop (the n_z slices centred on its
    annotated slice), computed once per region."""
    samples = samples.reset_index(drop=True)
    missing = set(samples["dataset"]) - set(region_sets)
    if missing:
        raise KeyError(f"samples name data sets {sorted(missing)} but no regions.h5 was given")
    half_z = n_z // 2
    X: np.ndarray | None = None
    for (name, region_index), group in samples.groupby(["dataset", "region"], sort=False):
        regions = region_sets[name]
        if half_z > regions.margin_z:
            raise ValueError(
                f"regions.h5 of '{name}' has {regions.margin_z} context slices, too few for "
                f"n_z={n_z}"
            )
        region = regions.table.iloc[region_index]
        z0 = regions.margin_z - half_z
        features = forest_features(regions.crops[region_index, z0 : z0 + n_z], sigma_max)
        cy = group["y"].to_numpy() - int(region.y) + regions.margin_xy
        cx = group["x"].to_numpy() - int(region.x) + regions.margin_xy
        if X is None:
            X = np.empty((len(samples), features.shape[-1]), np.float32)
        X[group.index.to_numpy()] = features[cy, cx]
    if X is None:
        raise ValueError("no samples to train the forest on")
    return X, samples["label"].to_numpy(np.int64)


def train_forest(
    X: np.ndarray, y: np.ndarray, trees: int = 200, seed: int = 0, threads: int = 1
) -> RandomForestClassifier:
    """A random forest of `trees` fully grown trees with balanced class weights."""
    forest = RandomForestClassifier(
        n_estimators=trees, class_weight="balanced", random_state=seed, n_jobs=threads
    )
    return forest.fit(X, y)


def save_forest(forest: RandomForestClassifier, path: str | os.PathLike, metadata: dict) -> None:
    """Write the forest and its metadata (which must hold n_z and sigma_max) atomically."""
    absent = [key for key in REQUIRED_METADATA if key not in metadata]
    if absent:
        raise ValueError(f"forest metadata lacks {absent}; prediction needs them")
    with atomic_output(path) as tmp:
        joblib.dump({"forest": forest, "metadata": dict(metadata)}, tmp)


def load_forest(path: str | os.PathLike) -> tuple[RandomForestClassifier, dict]:
    """The forest and metadata written by `save_forest`."""
    stored = joblib.load(path)
    return stored["forest"], stored["metadata"]
