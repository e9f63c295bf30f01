"""Segmentation metrics of §3.6: IoU (eq. 5), mIoU (eq. 6), accuracy and porosity."""

from __future__ import annotations

import numpy as np

from ..annotation.regions import known


def confusion(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """2 x 2 counts [[pore->pore, pore->solid], [solid->pore, solid->solid]] (rows: labels);
    voxels labelled IGNORE are not counted."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ")
    keep = known(labels)
    labels = labels[keep].astype(bool)
    predictions = predictions[keep].astype(bool)
    solid_solid = np.count_nonzero(labels & predictions)
    solid_pore = np.count_nonzero(labels & ~predictions)
    pore_solid = np.count_nonzero(~labels & predictions)
    pore_pore = labels.size - solid_solid - solid_pore - pore_solid
    return np.array([[pore_pore, pore_solid], [solid_pore, solid_solid]], dtype=np.int64)


def iou_from_confusion(counts: np.ndarray, cls: int) -> float:
    """IoU = |L ∩ P| / |L ∪ P| of one class; 1.0 where the class is absent from both."""
    intersection = counts[cls, cls]
    union = counts[cls, :].sum() + counts[:, cls].sum() - intersection
    return float(intersection / union) if union else 1.0


def miou_from_confusion(counts: np.ndarray) -> float:
    """Mean of the pore and solid IoUs (eq. 6)."""
    return 0.5 * (iou_from_confusion(counts, 0) + iou_from_confusion(counts, 1))


def accuracy_from_confusion(counts: np.ndarray) -> float:
    return float(np.trace(counts) / counts.sum())


def miou(labels: np.ndarray, predictions: np.ndarray) -> float:
    return miou_from_confusion(confusion(labels, predictions))


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return accuracy_from_confusion(confusion(labels, predictions))


def porosity(segmentation: np.ndarray, where: np.ndarray | None = None) -> float:
    """Fraction of pore (label 0) voxels, of those `where` is true (default: every voxel that
    is not IGNORE)."""
    segmentation = np.asarray(segmentation)
    where = known(segmentation) if where is None else np.asarray(where, bool)
    return float(np.count_nonzero((segmentation == 0) & where) / np.count_nonzero(where))


def porosity_ttest(manual: np.ndarray, automatic: np.ndarray) -> tuple[float, float]:
    """Two-sample t-test (equal variances, as in the paper) of region porosities."""
    from scipy import stats  # here, not at the top: planning the DAG imports this module

    result = stats.ttest_ind(manual, automatic)
    return float(result.statistic), float(result.pvalue)
