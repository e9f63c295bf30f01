"""Post-processing against a direct implementation, and sigma/T chosen on val only."""

from collections import deque

import h5py
import numpy as np
import pandas as pd
import pytest
from skimage.filters import threshold_otsu

from fibseg.evaluate import otsu_volume, region_results, split_windows
from fibseg.postprocess import optimize, segment
from fibseg.regions import RegionSet


def gaussian_direct(image, sigma):
    """Separable Gaussian with mirrored edges ('symmetric'), radius round(4 sigma)."""
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image.astype(np.float64), radius, mode="symmetric")
    rows = np.array([np.convolve(r, kernel, mode="valid") for r in padded])
    return np.array([np.convolve(c, kernel, mode="valid") for c in rows.T]).T


def components(mask):
    """4-connected components by breadth-first search: a list of pixel lists."""
    seen = np.zeros_like(mask, bool)
    found = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        queue, pixels = deque([start]), []
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if (
                    0 <= ny < mask.shape[0]
                    and 0 <= nx < mask.shape[1]
                    and mask[ny, nx]
                    and not seen[ny, nx]
                ):
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(pixels)
    return found


def segment_direct(scores, sigma, threshold, min_size):
    solid = gaussian_direct(scores, sigma) > threshold
    solid = gaussian_direct(solid, sigma) > threshold
    for phase in (True, False):
        mask = solid == phase
        for pixels in components(mask):
            if len(pixels) < min_size:
                for pixel in pixels:
                    solid[pixel] = not phase
    return solid


@pytest.mark.parametrize(
    "seed, sigma, threshold", [(0, 1.0, 0.4), (1, 2.63, 0.402), (2, 1.5, 0.55)]
)
def test_segment_matches_the_direct_implementation(seed, sigma, threshold):
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    scores = np.clip(ndi.gaussian_filter(rng.random((60, 70)), 2) * 4 - 1.5, 0, 1)
    scores = np.clip(scores + rng.normal(0, 0.2, scores.shape), 0, 1)
    ours = segment(scores, sigma, threshold, min_size=30)
    direct = segment_direct(scores, sigma, threshold, min_size=30)
    np.testing.assert_array_equal(ours, direct)


def test_sigma_and_threshold_are_chosen_on_val_only():
    rng = np.random.default_rng(0)
    labels = [(rng.random((12, 12)) < 0.5).astype(np.uint8) for _ in range(6)]
    windows = np.stack([np.pad(label * 0.5 + 0.2, 2, mode="edge") for label in labels])
    split = pd.DataFrame(
        {
            "dataset": "D",
            "region": range(6),
            "split": ["train", "train", "val", "val", "test", "test"],
        }
    )

    def chosen(current):
        val = [
            r
            for r in region_results(current, 2, np.stack(labels), "D", split, lambda w: w)
            if r.split == "val"
        ]
        best, _ = optimize(
            [current[r.region] for r in val],
            [r.labels for r in val],
            2,
            [0.0],
            [0.3, 0.5, 0.6],
            min_size=0,
        )
        return best

    before = chosen(windows)
    changed = windows.copy()
    changed[[0, 1, 4, 5]] = 1 - changed[[0, 1, 4, 5]]  # train and test turned upside down
    assert chosen(changed) == before
    changed = windows.copy()
    changed[[2, 3]] = changed[[2, 3]] + 0.35  # val alone shifted: the threshold follows
    assert chosen(changed)["threshold"] != before["threshold"]


def test_validation_windows_of_different_margins_are_refused():
    table = pd.DataFrame({"z": [0, 1], "y": 0, "x": 0, "height": 4, "width": 4})
    labels = np.zeros((2, 4, 4), np.uint8)
    region_sets = [
        RegionSet(name, np.zeros((2, 1, 8, 8), np.float32), labels, table, 2, 0)
        for name in ("A", "B")
    ]
    splits = pd.DataFrame(
        {"dataset": ["A", "A", "B", "B"], "region": [0, 1, 0, 1], "split": ["val", "test"] * 2}
    )
    same = [(np.zeros((2, 8, 8)), 2), (np.ones((2, 8, 8)), 2)]
    windows, chosen_labels, margin = split_windows(same, region_sets, splits, "val")
    assert margin == 2 and len(windows) == len(chosen_labels) == 2
    assert windows[0].max() == 0 and windows[1].min() == 1  # region 0 of A, then of B
    with pytest.raises(ValueError, match=r"different margins \[2, 3\]"):
        split_windows(
            [(np.zeros((2, 8, 8)), 2), (np.zeros((2, 10, 10)), 3)], region_sets, splits, "val"
        )


def test_otsu_of_a_whole_volume_splits_two_populations(tmp_path):
    rng = np.random.default_rng(3)
    truth = (rng.random((4, 20, 20)) < 0.6).astype(np.uint8)
    volume = np.where(truth, 0.7, 0.3) + rng.normal(0, 0.02, truth.shape)
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as handle:
        handle["volume"] = volume.astype(np.float32)
    solid = otsu_volume(f"{path}:/volume")
    assert solid.dtype == np.uint8 and solid.shape == truth.shape
    # Otsu's criterion is flat across the gap between the populations and skimage takes its
    # first bin, so a voxel at the very top of the pore population may go either way.
    assert np.mean(solid == truth) > 0.995
    # skimage on the raw values (256 bins over their range, not 1024 over [0, 1]) agrees
    assert np.mean(solid == (volume > threshold_otsu(volume))) > 0.995
