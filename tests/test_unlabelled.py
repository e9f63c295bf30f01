"""Learning from unlabelled voxels (fibseg.unlabelled) and dense training in steps, on tiny
data: pseudo-labels by hand, the volume windows, a falling loss, determinism, and that
`training.unlabelled` off is today's training exactly."""

import json
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest

from fibseg.dense_training import DenseTiles
from fibseg.regions import RegionSet
from fibseg.sampling import split_regions
from fibseg.settings import TrainingSettings, UnlabelledSettings
from fibseg.train import train_run
from fibseg.unlabelled import VolumeWindows, check_unlabelled, pseudo_labels

SETTINGS = replace(
    TrainingSettings.from_config(
        {"momentum": 0.9, "search": {"log10_lr0": [-2.0], "k": [2], "p_d": [0, 0.2]}}
    ),
    mode="dense",
    epochs=3,
    tiles_per_batch=2,
)
PSEUDO = UnlabelledSettings(
    method="pseudo", weight=1.0, confidence=0.6, tiles_per_batch=2, start_epoch=0
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 6 x 96 x 96 volume whose bright squares are solid, ten labelled 16 x 16 regions cut
    from it with the 40 px of context an 81 x 81 'valid' model needs, and the volume itself."""
    directory = tmp_path_factory.mktemp("unlabelled")
    rng = np.random.default_rng(3)
    solid = np.kron(rng.random((6, 12, 12)) < 0.5, np.ones((1, 8, 8))).astype(np.uint8)
    volume = (0.2 + 0.5 * solid + 0.05 * rng.standard_normal(solid.shape)).astype(np.float32)
    with h5py.File(directory / "pre.h5", "w") as handle:
        handle["volume"] = volume
    crops, labels = [], []
    for z in range(1, 5):
        for y0 in (8, 40, 64):
            crop = np.pad(volume[z - 1 : z + 2], ((0, 0), (40, 40), (40, 40)), mode="reflect")
            crops.append(crop[:, y0 : y0 + 96, y0 : y0 + 96])
            labels.append(solid[z, y0 : y0 + 16, y0 : y0 + 16])
    count = len(labels)
    table = pd.DataFrame({"z": np.arange(count) % 6, "y": 0, "x": 0, "height": 16, "width": 16})
    RegionSet("V", np.stack(crops), np.stack(labels), table, 40, 1).write(directory / "V.h5")
    split = split_regions({"V": table}, {"train": 0.6, "val": 0.2, "test": 0.2}, 1)
    split.to_csv(directory / "split.csv", index=False)
    return directory, volume


def train(directory, run_dir, settings, seed=0):
    return train_run(
        run_dir,
        [str(directory / "V.h5")],
        "unused when dense",
        "unused when dense",
        str(directory / "split.csv"),
        81,
        3,
        seed,
        "valid",
        settings,
        volume_files=[str(directory / "pre.h5")],
    )


def test_pseudo_labels_by_hand():
    scores = np.array([[0.95, 0.05, 0.6], [0.99, 0.5, 0.02]])
    labels, weights = pseudo_labels(scores, 0.9, 6.0)
    np.testing.assert_array_equal(labels, [[1, 0, 1], [1, 1, 0]])
    # two confident voxels per class, each class weighs 6 / 2 in all
    np.testing.assert_allclose(weights, [[1.5, 1.5, 0], [1.5, 0, 1.5]])
    _, weights = pseudo_labels(np.array([0.97, 0.92, 0.2]), 0.9, 4.0)
    np.testing.assert_allclose(weights, [2.0, 2.0, 0.0])  # one class present: all to it
    _, weights = pseudo_labels(np.array([0.5, 0.7]), 0.9, 4.0)
    assert not weights.any()


def test_volume_windows_are_seeded_crops_of_the_volume(data):
    directory, volume = data
    windows = VolumeWindows([str(directory / "pre.h5")], 81, 3, 16, seed=5)
    first = windows.draw(3, epoch=2, index=4)
    assert first.shape == (3, 16 + 76 - 1, 16 + 76 - 1, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, windows.draw(3, epoch=2, index=4))
    assert not np.array_equal(first, windows.draw(3, epoch=2, index=5))
    assert np.isin(first, volume).all()  # mirrored and turned, but the volume's own values


def test_unlabelled_needs_dense_training():
    check_unlabelled("dense", "pseudo")
    check_unlabelled("patches", "none")
    with pytest.raises(Exception, match="needs dense training"):
        check_unlabelled("patches", "pseudo")


def test_dense_steps_go_round_the_tiles_again(data):
    directory, _ = data
    regions = {"V": RegionSet.read(directory / "V.h5")}
    selection = {"V": list(range(12))}
    one_pass = DenseTiles(regions, selection, 81, 3, 4, seed=1, shuffle=True)
    steps = DenseTiles(regions, selection, 81, 3, 4, seed=1, shuffle=True, max_batches=7)
    assert len(one_pass) == 3 and len(steps) == 7
    # the first pass is today's order; then each pass is a new permutation of the 12 tiles
    np.testing.assert_array_equal(steps.order[:12], one_pass.order)
    for start in (12, 24):
        assert sorted(steps.order[start : start + 12]) == list(range(12))
    assert not np.array_equal(steps.order[12:24], steps.order[:12])
    inputs, labels, weights = steps[6]
    assert inputs.shape[0] == 4


def test_pseudo_labels_train_deterministically_with_a_falling_loss(data, tmp_path):
    directory, _ = data
    settings = replace(SETTINGS, epochs=4, unlabelled=PSEUDO)
    first = train(directory, tmp_path / "a", settings)
    second = train(directory, tmp_path / "b", settings)
    assert first["loss"].iloc[-1] < first["loss"].iloc[0]
    pd.testing.assert_frame_equal(
        first.drop(columns="seconds"), second.drop(columns="seconds"), check_exact=True
    )
    params = json.loads((tmp_path / "a/params.json").read_text())
    assert params["unlabelled"]["method"] == "pseudo"


def test_unlabelled_off_is_todays_training(data, tmp_path):
    """method none ignores every other unlabelled setting and the volumes: the same history
    as the plain dense training, value for value."""
    directory, _ = data
    plain = train_run(
        tmp_path / "plain",
        [str(directory / "V.h5")],
        "unused",
        "unused",
        str(directory / "split.csv"),
        81,
        3,
        0,
        "valid",
        SETTINGS,
    )
    off = replace(PSEUDO, method="none", weight=3.0, start_epoch=0)
    with_off = train(directory, tmp_path / "off", replace(SETTINGS, unlabelled=off))
    pd.testing.assert_frame_equal(
        plain.drop(columns="seconds"), with_off.drop(columns="seconds"), check_exact=True
    )
