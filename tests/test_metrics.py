import numpy as np
import pytest

from fibseg.evaluation.evaluate import slicewise_volume_row, volume_row
from fibseg.evaluation.metrics import (
    accuracy,
    confusion,
    miou,
    porosity,
    porosity_ttest,
)


def test_hand_computed_case():
    # labels:      predictions:
    # 1 1 0        1 0 0
    # 1 0 0        1 1 0
    labels = np.array([[1, 1, 0], [1, 0, 0]])
    predictions = np.array([[1, 0, 0], [1, 1, 0]])
    # solid: |L1 ∩ P1| = 2, |L1 ∪ P1| = 4 -> 0.5; pore: |L0 ∩ P0| = 2, |L0 ∪ P0| = 4 -> 0.5
    assert miou(labels, predictions) == pytest.approx(0.5)
    assert accuracy(labels, predictions) == pytest.approx(4 / 6)
    assert porosity(labels) == pytest.approx(0.5) and porosity(predictions) == pytest.approx(0.5)
    np.testing.assert_array_equal(confusion(labels, predictions), [[2, 1], [1, 2]])


def test_unbalanced_case_and_perfect_prediction():
    labels = np.array([1] * 8 + [0] * 2)
    predictions = np.array([1] * 9 + [0])
    # solid IoU = 8/9, pore IoU = 1/2
    assert miou(labels, predictions) == pytest.approx((8 / 9 + 1 / 2) / 2)
    assert accuracy(labels, predictions) == pytest.approx(0.9)
    assert porosity(labels) == pytest.approx(0.2)
    assert miou(labels, labels) == 1.0 and accuracy(labels, labels) == 1.0


def test_porosity_ttest_against_the_formula():
    a = np.array([0.20, 0.25, 0.22, 0.18, 0.24])
    b = np.array([0.26, 0.27, 0.21, 0.30, 0.25, 0.28])
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    t = (a.mean() - b.mean()) / np.sqrt(pooled * (1 / len(a) + 1 / len(b)))
    statistic, p_value = porosity_ttest(a, b)
    assert statistic == pytest.approx(t)
    assert 0 < p_value < 0.05


def test_volume_row_slice_by_slice_against_hand_counts():
    """Two slices, one voxel of the truth unlabelled (255): 7 labelled voxels, of which the
    truth has 3 pore, the segmentation (8 voxels) 4 pore; pore IoU 2/4, solid IoU 3/5."""
    truth = np.array([[[0, 0], [1, 1]], [[0, 1], [1, 255]]], np.uint8)
    segmentation = np.array([[[0, 1], [1, 0]], [[0, 1], [1, 0]]], np.uint8)
    row = volume_row("D", truth, segmentation)
    assert row["mIoU"] == pytest.approx((2 / 4 + 3 / 5) / 2)
    assert row["accuracy"] == pytest.approx(5 / 7)
    assert row["porosity_truth"] == pytest.approx(3 / 7)
    assert row["porosity_automatic"] == pytest.approx(4 / 8)
    assert row["voxels"] == 8
    assert slicewise_volume_row("D", iter(zip(truth, segmentation, strict=True))) == row
