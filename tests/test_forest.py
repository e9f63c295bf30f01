"""The random-forest baseline: features, training data, scorer and storage."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.feature import multiscale_basic_features

from fibseg.annotation.regions import RegionSet
from fibseg.baselines.forest import (
    forest_features,
    forest_scorer,
    forest_training_data,
    load_forest,
    save_forest,
    train_forest,
)

SIGMA_MAX = 4.0


def two_phase(rng, n_z, size):
    """Labels (y, x) of smooth blobs and an (n_z, y, x) stack: solid bright, pore dark, noisy."""
    field = ndi.gaussian_filter(rng.standard_normal((size, size)), 3)
    labels = (field > 0).astype(np.int64)
    stack = 0.3 + 0.4 * labels + rng.normal(0, 0.1, (n_z, size, size))
    return labels, stack.astype(np.float32)


def trained(rng, n_z=3, trees=10, seed=0):
    """A small forest trained on every pixel of a synthetic two-phase stack."""
    labels, stack = two_phase(rng, n_z, 48)
    X = forest_features(stack, SIGMA_MAX).reshape(-1, 3 * per_channel(SIGMA_MAX))
    return train_forest(X, labels.ravel(), trees=trees, seed=seed)


def per_channel(sigma_max):
    return multiscale_basic_features(np.zeros((8, 8), np.float32), sigma_max=sigma_max).shape[-1]


@pytest.mark.parametrize("n_z", [1, 3])
def test_features_are_multiscale_basic_features_per_slice(n_z):
    stack = np.random.default_rng(0).random((n_z, 32, 40)).astype(np.float32)
    features = forest_features(stack, SIGMA_MAX)
    assert features.shape == (32, 40, n_z * per_channel(SIGMA_MAX))
    assert features.dtype == np.float32
    # channel-major: the block of slice c holds that slice's own features
    single = multiscale_basic_features(stack[n_z // 2], sigma_max=SIGMA_MAX)
    block = slice(n_z // 2 * single.shape[-1], (n_z // 2 + 1) * single.shape[-1])
    np.testing.assert_allclose(features[..., block], single, rtol=1e-6, atol=1e-6)
    # defaults: sigmas 0.5 ... 16 (6 of them), 4 features each for a 2-D slice
    assert forest_features(stack[:, :16, :16]).shape[-1] == n_z * 6 * 4


def hand_built_regions():
    """Two regions of 24 x 24 at known places, 4 px and 2 slices of context."""
    rng = np.random.default_rng(1)
    margin_xy, margin_z, side = 4, 2, 24
    table = pd.DataFrame({"z": [5, 9], "y": [10, 50], "x": [20, 70], "height": side, "width": side})
    crops = rng.random((2, 2 * margin_z + 1, side + 2 * margin_xy, side + 2 * margin_xy))
    labels = rng.integers(0, 2, (2, side, side), dtype=np.uint8)
    return RegionSet("A", crops.astype(np.float32), labels, table, margin_xy, margin_z)


def test_training_data_points_at_the_sample_voxels():
    regions = hand_built_regions()
    rng = np.random.default_rng(2)
    rows = []
    for index, region in regions.table.iterrows():
        for _ in range(6):
            y, x = rng.integers(0, 24, 2)
            rows.append((index, region.z, region.y + y, region.x + x, regions.labels[index, y, x]))
    samples = pd.DataFrame(rows, columns=["region", "z", "y", "x", "label"])
    samples.insert(0, "dataset", "A")
    samples = samples.sample(frac=1, random_state=0)  # regions interleaved, index shuffled
    # a unique bright voxel at the fourth sample, on the annotated slice only
    spike = samples.iloc[3]
    cy = spike.y - regions.table.y[spike.region] + regions.margin_xy
    cx = spike.x - regions.table.x[spike.region] + regions.margin_xy
    regions.crops[spike.region, regions.margin_z, cy, cx] = 10.0

    X, y = forest_training_data({"A": regions}, samples, n_z=3, sigma_max=SIGMA_MAX)

    assert X.shape == (len(samples), 3 * per_channel(SIGMA_MAX)) and X.dtype == np.float32
    np.testing.assert_array_equal(y, samples.label.to_numpy())
    centre_intensity = X[:, per_channel(SIGMA_MAX)]  # slice 1 of 3, sigma 0.5, intensity
    assert np.argmax(centre_intensity) == 3 and centre_intensity[3] > 5
    for row, sample in enumerate(samples.itertuples()):
        direct = forest_features(regions.crops[sample.region, 1:4], SIGMA_MAX)
        cy = sample.y - regions.table.y[sample.region] + regions.margin_xy
        cx = sample.x - regions.table.x[sample.region] + regions.margin_xy
        np.testing.assert_array_equal(X[row], direct[cy, cx])


def test_training_data_needs_the_regions_of_every_data_set():
    samples = pd.DataFrame({"dataset": ["B"], "region": [0], "z": [5], "y": [10], "x": [20]})
    samples["label"] = 1
    with pytest.raises(KeyError, match="'B'"):
        forest_training_data({"A": hand_built_regions()}, samples, 3, SIGMA_MAX)


def test_same_seed_same_forest():
    X = np.random.default_rng(3).random((200, 6)).astype(np.float32)
    y = (X[:, 0] + 0.3 * X[:, 1] > 0.7).astype(np.int64)
    first = train_forest(X, y, trees=8, seed=5)
    second = train_forest(X, y, trees=8, seed=5, threads=2)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))


def test_scorer_separates_bright_solid_from_dark_pore():
    rng = np.random.default_rng(4)
    scorer = forest_scorer(trained(rng), SIGMA_MAX)
    labels, stack = two_phase(rng, 3, 64)

    scores = scorer(stack)
    assert scores.shape == (64, 64) and scores.dtype == np.float32
    assert np.mean((scores > 0.5) == labels) > 0.95
    roi = (5, 37, 12, 60)
    np.testing.assert_array_equal(scorer(stack, roi), scores[5:37, 12:60])


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    forest = trained(rng)
    _, stack = two_phase(rng, 3, 32)
    metadata = {"n_z": 3, "sigma_max": SIGMA_MAX, "trees": 10, "datasets": ["A", "B"]}
    path = tmp_path / "models" / "forest.joblib"

    save_forest(forest, path, metadata)
    loaded, stored = load_forest(path)

    assert stored == metadata
    assert [p.name for p in path.parent.iterdir()] == ["forest.joblib"]
    np.testing.assert_array_equal(
        forest_scorer(loaded, SIGMA_MAX)(stack), forest_scorer(forest, SIGMA_MAX)(stack)
    )
    with pytest.raises(ValueError, match="sigma_max"):
        save_forest(forest, tmp_path / "other.joblib", {"n_z": 3})


def test_default_forest_is_200_balanced_full_trees():
    X = np.random.default_rng(6).random((40, 3)).astype(np.float32)
    forest = train_forest(X, np.arange(40) % 2)
    assert forest.n_estimators == len(forest.estimators_) == 200
    assert forest.class_weight == "balanced"
    assert forest.max_depth is None and forest.random_state == 0 and forest.n_jobs == 1


def test_a_volume_scored_slice_by_slice_computes_each_slices_features_once(monkeypatch):
    """Five slices scored in turn (mirrored at the ends) give exactly the scores of each
    stack's features computed afresh; each slice's features are computed once, and the
    scorer never holds more than three slices' features."""
    from fibseg.baselines import forest as module
    from fibseg.networks.windows import neighbour_slices

    rng = np.random.default_rng(6)
    model = trained(rng)
    volume = np.stack([two_phase(rng, 1, 40)[1][0] for _ in range(5)])
    stacks = [volume[neighbour_slices(z, 3, 5)] for z in range(5)]
    fresh = [
        module.solid_probability(model, forest_features(stack, SIGMA_MAX)[2:30, 5:38])
        for stack in stacks
    ]
    computed, held = [], []
    original = module.forest_features

    def counting(stack, sigma_max):
        computed.append(stack.shape[0])
        return original(stack, sigma_max)

    monkeypatch.setattr(module, "forest_features", counting)
    scorer = forest_scorer(model, SIGMA_MAX)
    for stack, expected in zip(stacks, fresh, strict=True):
        np.testing.assert_array_equal(scorer(stack, (2, 30, 5, 38)), expected)
        held.append(len(scorer._features))
    assert computed == [1] * 5 and max(held) <= 3
