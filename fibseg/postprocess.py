"""Post-processing of §3.8: smooth the scores in x-y with sigma, threshold at T, smooth the
binary image with sigma, threshold at T, then remove connected objects smaller than
`min_size` voxels from both phases. sigma and T are chosen on the validation regions."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import remove_small_objects

from .metrics import confusion, miou_from_confusion
from .windows import region_in_window


def smooth_xy(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing in the x-y plane only (the last two axes)."""
    if sigma <= 0:
        return array.astype(np.float32)
    sigmas = (0,) * (array.ndim - 2) + (sigma, sigma)
    return ndi.gaussian_filter(array.astype(np.float32), sigmas, mode="reflect")


def remove_small(solid: np.ndarray, min_size: int) -> np.ndarray:
    """Drop solid objects, then pore objects, of fewer than `min_size` voxels."""
    if min_size <= 1:
        return solid
    solid = remove_small_objects(solid, max_size=min_size - 1)
    return ~remove_small_objects(~solid, max_size=min_size - 1)


def segment(scores: np.ndarray, sigma: float, threshold: float, min_size: int) -> np.ndarray:
    """Solid (True) / pore (False) from scores, by the two-pass pipeline of §3.8."""
    first = smooth_xy(scores, sigma) > threshold
    second = smooth_xy(first, sigma) > threshold
    return remove_small(second, min_size)


def segment_as_chosen(scores: np.ndarray, chosen: dict) -> np.ndarray:
    """`segment` with the sigma, T and minimum object size of a postprocess.json."""
    return segment(scores, chosen["sigma"], chosen["threshold"], chosen["min_object_voxels"])


def optimize(
    score_windows: list[np.ndarray],
    labels: list[np.ndarray],
    margin: int,
    sigmas: list[float],
    thresholds: list[float],
    min_size: int,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The (sigma, T) of highest pooled mIoU over the given regions, and every trial.

    `score_windows[i]` holds the scores of region i plus `margin` pixels on each side (so the
    smoothing sees real neighbours); the mIoU is measured on the region itself.
    """
    trials = []
    for sigma, threshold in itertools.product(sigmas, thresholds):
        total = np.zeros((2, 2), np.int64)
        for window, label in zip(score_windows, labels, strict=True):
            solid = segment(window, sigma, threshold, min_size)
            inner = region_in_window(solid, margin, *label.shape)
            total += confusion(label, inner)
        trials.append(
            {
                "sigma": float(sigma),
                "threshold": float(threshold),
                "val_mIoU": miou_from_confusion(total),
            }
        )
    best = max(trials, key=lambda t: t["val_mIoU"])
    return best, trials
