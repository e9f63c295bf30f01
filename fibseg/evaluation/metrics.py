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


def boundary_distance(truth: np.ndarray) -> np.ndarray:
    """Per voxel of a (z, y, x) truth, the in-plane distance (px) to the nearest voxel of the
    other class in its slice: 1 next to the boundary, sqrt(2) diagonally next to it."""
    from scipy import ndimage

    # each transform is 0 on the other class: their sum is every voxel's own distance
    truth = np.asarray(truth).astype(bool)
    return np.stack(
        [ndimage.distance_transform_edt(p) + ndimage.distance_transform_edt(~p) for p in truth]
    )


def errors_by_boundary_distance(
    truth: np.ndarray, segmentation: np.ndarray, edges: tuple[float, ...] = (0, 1.5, 3, 6)
) -> list[dict]:
    """Where a segmentation's errors lie, in bands of in-plane distance to the truth's
    boundary (`boundary_distance`): each band (edges[i], edges[i+1]], the last open-ended,
    with its share of the voxels, its error rate, its share of all errors and its pores read
    as solid (as a share of all errors)."""
    truth, segmentation = np.asarray(truth), np.asarray(segmentation)
    if truth.shape != segmentation.shape:
        raise ValueError(f"truth {truth.shape} and segmentation {segmentation.shape} differ")
    solid = truth.astype(bool)
    distance = boundary_distance(solid)
    wrong = solid != segmentation.astype(bool)
    pore_as_solid = wrong & ~solid
    errors = max(int(np.count_nonzero(wrong)), 1)
    rows = []
    for low, high in zip(edges, (*edges[1:], np.inf), strict=True):
        band = (distance > low) & (distance <= high)
        voxels = int(np.count_nonzero(band))
        rows.append(
            {
                "from_px": low,
                "to_px": high,
                "voxel_share": voxels / truth.size,
                "error_rate": np.count_nonzero(wrong & band) / voxels if voxels else 0.0,
                "error_share": np.count_nonzero(wrong & band) / errors,
                "pore_as_solid_share": np.count_nonzero(pore_as_solid & band) / errors,
            }
        )
    return rows
