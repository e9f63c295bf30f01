"""A random-forest baseline: the pixel classification behind ilastik (Röding et al. 2021).

Every voxel is described by scikit-image's multiscale basic features (Gaussian-smoothed
intensity, gradient magnitude and Hessian eigenvalues from sigma 0.5 to `sigma_max`) of the
n_z slices centred on it, each slice a channel, and a scikit-learn random forest with
balanced class weights turns them into P(solid). `forest_scorer` follows the scorer protocol
of `fibseg.inference.infer`, so `score_slices` and `score_regions` apply it like a CNN engine.
"""

from __future__ import annotations

import hashlib
import os

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


def solid_probability(
    forest: RandomForestClassifier, features: np.ndarray | list[np.ndarray]
) -> np.ndarray:
    """P(solid) of (y, x, F) features, or of several (y, x, F_i) arrays whose columns follow
    one another (a slice's each), predicted a block of rows at a time: the (pixels, F) rows
    are put together block by block, never for the whole slice."""
    parts = features if isinstance(features, list) else [features]
    height, width = parts[0].shape[:2]
    column = list(forest.classes_).index(1)
    rows = max(1, PREDICT_PIXELS // width)
    scores = np.empty((height, width), np.float32)
    for top in range(0, height, rows):
        block = np.concatenate(
            [part[top : top + rows].reshape(-1, part.shape[-1]) for part in parts], axis=1
        )
        scores[top : top + rows] = forest.predict_proba(block)[:, column].reshape(-1, width)
    return scores


class ForestScorer:
    """A scorer (stack, roi=None) -> (h, w) float32 P(solid) of the centre slice over roi,
    from the features of the whole stack (the scorer protocol of `fibseg.inference.infer`).

    The features of a stack are those of its slices side by side (`multiscale_basic_features`
    treats each channel alone), so each slice's features are computed once and kept while
    the next stack holds that slice: scoring a volume slice by slice computes them once per
    slice, not n_z times, and holds the features of at most n_z + 1 slices, never their
    concatenation. A slice is known by a digest of its bytes, so the result is exactly that of
    computing every stack's features afresh."""

    def __init__(self, forest: RandomForestClassifier, sigma_max: float) -> None:
        self.forest = forest
        self.sigma_max = sigma_max
        self._features: dict[bytes, np.ndarray] = {}

    def __call__(self, stack: np.ndarray, roi: Roi | None = None) -> np.ndarray:
        y0, y1, x0, x1 = region_of_interest(stack, roi)
        images = [np.ascontiguousarray(image, np.float32) for image in stack]
        keys = [slice_key(image) for image in images]
        for key in set(self._features) - set(keys):
            del self._features[key]
        for key, image in zip(keys, images, strict=True):
            if key not in self._features:
                self._features[key] = forest_features(image[None], self.sigma_max)
        return solid_probability(self.forest, [self._features[k][y0:y1, x0:x1] for k in keys])


def slice_key(image: np.ndarray) -> bytes:
    """A digest of a float32 slice's shape and bytes."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
    digest.update(repr(image.shape).encode())
    return digest.digest()


def forest_scorer(forest: RandomForestClassifier, sigma_max: float) -> ForestScorer:
    """The forest's scorer (`ForestScorer`)."""
    return ForestScorer(forest, sigma_max)


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
