import numpy as np
import pandas as pd
import pytest

from fibseg.annotation.regions import RegionSet
from fibseg.training.augment import dihedral, rescale_intensity
from fibseg.training.patches import PatchSource


def dihedral_image(image, code):
    """The same transform applied to a whole (y, x) image, written independently."""
    out = np.fliplr(image) if code >= 4 else image
    return np.rot90(out, code % 4)


def test_patch_and_label_transform_together():
    rng = np.random.default_rng(0)
    size, n = 41, 9
    image = rng.random((size, size)).astype(np.float32)
    label = (rng.random((size, size)) < 0.5).astype(np.uint8)
    half = n // 2
    for code in range(8):
        y, x = rng.integers(half, size - half, 2)
        patch = image[y - half : y + half + 1, x - half : x + half + 1][None, :, :, None]
        moved = dihedral(patch, np.array([code]))[0, :, :, 0]
        # the same voxel, located in the transformed image and label
        marker = np.zeros((size, size), bool)
        marker[y, x] = True
        ty, tx = np.argwhere(dihedral_image(marker, code))[0]
        whole = dihedral_image(image, code)
        np.testing.assert_array_equal(
            moved, whole[ty - half : ty + half + 1, tx - half : tx + half + 1]
        )
        assert dihedral_image(label, code)[ty, tx] == label[y, x]
        assert moved[half, half] == image[y, x]


def test_all_eight_transforms_are_distinct():
    patch = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    results = {dihedral(patch, np.array([c])).tobytes() for c in range(8)}
    assert len(results) == 8


def test_rescale_intensity_follows_eq_3_and_4():
    rng = np.random.default_rng(1)
    patches = rng.normal(0.5, 0.1, (4000, 9, 9, 3)).astype(np.float32)
    out = rescale_intensity(patches, a=0.05, b=0.08, probability=0.5, rng=rng)
    changed = ~np.all(out == patches, axis=(1, 2, 3))
    assert 0.45 < changed.mean() < 0.55
    mean_ratio = out[changed].mean(axis=(1, 2, 3)) / patches[changed].mean(axis=(1, 2, 3))
    std_ratio = out[changed].std(axis=(1, 2, 3)) / patches[changed].std(axis=(1, 2, 3))
    assert mean_ratio.mean() == pytest.approx(1, abs=0.01)
    assert mean_ratio.std() == pytest.approx(0.05, rel=0.1)
    assert std_ratio.std() == pytest.approx(0.08, rel=0.1)


def test_patch_source_cuts_the_neighbourhood_of_each_sample():
    rng = np.random.default_rng(2)
    crops = rng.random((2, 5, 30, 30)).astype(np.float32)  # margin_z 2, margin_xy 7
    table = pd.DataFrame({"z": [4, 9], "y": [100, 3], "x": [50, 0], "height": 16, "width": 16})
    regions = RegionSet("D", crops, np.zeros((2, 16, 16), np.uint8), table, 7, 2)
    samples = pd.DataFrame(
        {
            "dataset": "D",
            "region": [0, 1, 1],
            "z": [4, 9, 9],
            "y": [100, 3, 18],
            "x": [65, 0, 15],
            "label": [0, 1, 1],
        }
    )
    source = PatchSource({"D": regions}, samples)
    patches = source.cut(np.array([0, 1, 2]), n_xy=9, n_z=3)
    assert patches.shape == (3, 9, 9, 3)
    # sample 0: region 0, local (0, 15) -> crop (7, 22); slices 1..3 around the centre 2
    np.testing.assert_array_equal(patches[0], np.moveaxis(crops[0, 1:4, 3:12, 18:27], 0, -1))
    np.testing.assert_array_equal(patches[2], np.moveaxis(crops[1, 1:4, 18:27, 18:27], 0, -1))
    with pytest.raises(ValueError, match="too small"):
        source.cut(np.array([0]), n_xy=17, n_z=3)
