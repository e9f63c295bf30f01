"""The U-Net (model.architecture: unet): shapes and parameter count, how far it sees, exact
tiled inference, the loss over labelled voxels, its training tiles, seeded and resumed runs."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import fibseg.training.train as training_module
from fibseg.annotation.regions import IGNORE, RegionSet
from fibseg.annotation.sampling import split_regions
from fibseg.inference.infer import check_scorable, make_scorer
from fibseg.inference.unet_engine import UnetEngine
from fibseg.io.errors import LimitError
from fibseg.networks.registry import architecture, geometry_of
from fibseg.networks.unet import build_unet, check_unet_grid, halo, receptive_radius
from fibseg.runtime.settings import InferenceSettings, TrainingSettings
from fibseg.training.dense import dense_loss
from fibseg.training.train import RunFiles, TrainingRun, train_run
from fibseg.training.unet_tiles import UnetTiles, cut_unet_tile, tile_position


def conv_bn(c_in: int, c_out: int) -> int:
    """A 3 x 3 convolution with bias and its batch normalisation (4 numbers per channel)."""
    return 9 * c_in * c_out + c_out + 4 * c_out


def test_shapes_and_parameter_count():
    model = build_unet(3, seed=0)
    expected = (
        conv_bn(3, 24) + conv_bn(24, 24)  # level 1 down
        + conv_bn(24, 48) + conv_bn(48, 48)
        + conv_bn(48, 96) + conv_bn(96, 96)
        + conv_bn(96, 192) + conv_bn(192, 192)  # bottom
        + conv_bn(192 + 96, 96) + conv_bn(96, 96)  # up: upsampled + skip
        + conv_bn(96 + 48, 48) + conv_bn(48, 48)
        + conv_bn(48 + 24, 24) + conv_bn(24, 24)
        + 24 + 1  # 1 x 1 sigmoid
    )  # fmt: skip
    assert model.count_params() == expected
    assert 1.0e6 < expected < 1.2e6  # "about 1.1 M" (issue 27)
    assert model.input_shape == (None, None, None, 3)
    out = model.predict_on_batch(np.zeros((2, 40, 48, 3), np.float32))
    assert out.shape == (2, 40, 48, 1) and (0 <= out).all() and (out <= 1).all()
    geometry = geometry_of(model)
    assert geometry.architecture is architecture("unet")
    assert (geometry.n_xy, geometry.n_z, geometry.padding) == (0, 3, "unet")


def test_seeded_networks_are_identical_and_other_seeds_differ():
    first, again, other = build_unet(1, seed=5), build_unet(1, seed=5), build_unet(1, seed=6)
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first.get_weights()[0], other.get_weights()[0])


@pytest.fixture(scope="module")
def model():
    """A U-Net with random weights and batch statistics that are not the identity."""
    net = build_unet(3, seed=1)
    rng = np.random.default_rng(0)
    weights = [
        w if "norm" not in v.path else rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
        for w, v in zip(net.get_weights(), net.weights, strict=True)
    ]
    net.set_weights(weights)
    return net


def test_an_output_sees_no_further_than_the_receptive_radius(model):
    """A changed input pixel changes only outputs within the radius (Chebyshev), whatever its
    place relative to the pooling grid."""
    radius = receptive_radius()
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 176, 176, 3)).astype(np.float32)
    base = model.predict_on_batch(image)[0, ..., 0]
    reach = 0
    for y, x in [(88, 88), (89, 91), (93, 94)]:
        changed = image.copy()
        changed[0, y, x, :] += 10.0
        moved = np.abs(model.predict_on_batch(changed)[0, ..., 0] - base) > 1e-6
        ys, xs = np.nonzero(moved)
        reach = max(reach, np.abs(ys - y).max(), np.abs(xs - x).max())
    assert 0 < reach <= radius <= halo()


@pytest.mark.parametrize("tile", [8, 24, 40, 1024])
def test_tiled_scores_equal_the_whole_slice(model, tile):
    """Across seams and edges, and over a region of interest."""
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(3, 75, 101)).astype(np.float32)
    whole = UnetEngine(model, tile=4096).scores(stack)
    tiled = UnetEngine(model, tile=tile).scores(stack)
    assert whole.shape == (75, 101)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    roi = (10, 50, 33, 90)
    np.testing.assert_allclose(
        UnetEngine(model, tile=tile).scores(stack, roi),
        UnetEngine(model, tile=4096).scores(stack, roi),
        atol=1e-5,
    )


def test_the_scorer_picks_the_unet_engine_and_the_model_passes_check_model(model, tmp_path):
    inference = InferenceSettings(engine="sliding", tile=32)  # the engine does not apply
    stack = np.random.default_rng(3).normal(size=(3, 40, 40)).astype(np.float32)
    np.testing.assert_allclose(
        make_scorer(model, "sliding", inference)(stack), UnetEngine(model).scores(stack), atol=1e-5
    )
    assert check_scorable(model, "unet.keras", inference).record() == {
        "n_xy": 0,
        "n_z": 3,
        "padding": "unet",
    }


def test_the_loss_counts_labelled_voxels_only():
    """sum(w * bce) / (voxels with w > 0), by hand on a 2 x 2 tile with one unlabelled voxel."""
    labels = np.array([[[[1.0], [0.0]], [[1.0], [0.0]]]], np.float32)
    scores = np.array([[[[0.8], [0.3]], [[0.6], [0.9]]]], np.float32)
    weights = np.array([[[2.0, 0.5], [2.0, 0.0]]], np.float32)  # (1, 0) unlabelled
    bce = [-np.log(0.8), -np.log(0.7), -np.log(0.6)]
    expected = (2.0 * bce[0] + 0.5 * bce[1] + 2.0 * bce[2]) / 3
    loss = float(np.asarray(dense_loss()(labels, scores, sample_weight=weights)))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_grid_sizes_for_the_unet_are_tile_sides():
    check_unet_grid([64, 96], [1, 3])
    with pytest.raises(LimitError, match="multiple of 8"):
        check_unet_grid([81], [3])
    with pytest.raises(LimitError, match="odd"):
        check_unet_grid([64], [2])


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    """Ten 16 x 16 regions, part unlabelled (IGNORE), with 24 px of context, 3 slices."""
    directory = tmp_path_factory.mktemp("unet_regions")
    rng = np.random.default_rng(4)
    labels = (rng.random((10, 16, 16)) < 0.5).astype(np.uint8)
    labels[:, :4, :] = IGNORE
    crops = rng.random((10, 3, 64, 64)).astype(np.float32) * 0.5
    crops[:, 1, 24:40, 24:40] += labels * (labels != IGNORE)
    table = pd.DataFrame({"z": range(10), "y": 0, "x": 0, "height": 16, "width": 16})
    RegionSet("U", crops, labels, table, 24, 1).write(directory / "U.h5")
    split = split_regions({"U": table}, {"train": 0.6, "val": 0.2, "test": 0.2}, 1)
    split.to_csv(directory / "split.csv", index=False)
    return directory, split


def test_a_tile_holds_its_labels_anywhere_with_the_context_beneath(regions):
    directory, _ = regions
    region_set = RegionSet.read(directory / "U.h5")
    extent = (4, 16, 0, 16)  # the labelled rows and columns of region 0
    rng = np.random.default_rng(5)
    for _ in range(20):
        top, left = tile_position(extent, 32, rng)
        assert top <= 4 and top + 32 >= 16 and left <= 0 and left + 32 >= 16
        image, labels, mask = cut_unet_tile(region_set, 0, top, left, 32, 3)
        assert image.shape == (32, 32, 3) and mask.sum() == 12 * 16
        rows, cols = slice(4 - top, 16 - top), slice(-left, 16 - left)
        np.testing.assert_array_equal(labels[rows, cols], region_set.labels[0, 4:16])
        # the input under the labels is the region's own crop
        np.testing.assert_array_equal(image[rows, cols, 1], region_set.crops[0, 1, 28:40, 24:40])
    assert tile_position(extent, 32, None) == (4 - 10, 0 - 8)  # centred


def test_a_batch_weighs_the_classes_equally_and_the_unlabelled_not_at_all(regions):
    directory, split = regions
    region_set = {"U": RegionSet.read(directory / "U.h5")}
    train = sorted(split[split.split == "train"].region)
    tiles = UnetTiles(region_set, {"U": train}, side=32, n_z=3, tiles_per_batch=3, seed=0)
    inputs, labels, weights = tiles[0]
    assert inputs.shape == (3, 32, 32, 3) and labels.shape == (3, 32, 32, 1)
    assert np.count_nonzero(weights) == 3 * 12 * 16
    assert tiles.labelled == len(train) * 12 * 16
    w_pore, w_solid = tiles.weights
    pore = (labels[..., 0] == 0) & (weights > 0)
    assert np.allclose(weights[pore], w_pore) and np.allclose(weights[labels[..., 0] == 1], w_solid)


UNET_TRAINING = TrainingSettings.from_config(
    {
        "epochs": 2,
        "optimizer": "adam",
        "steps_per_epoch": 2,
        "tiles_per_batch": 2,
        "search": {"log10_lr0": [-3.0], "k": [20]},
    }
)


def unet_run(directory, run_dir, epochs=2, **options):
    files = RunFiles([str(directory / "U.h5")], split_csv=str(directory / "split.csv"))
    training = replace(UNET_TRAINING, epochs=epochs)
    return train_run(
        TrainingRun(run_dir, architecture("unet"), 32, 3, 7, training, files, **options)
    )


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the commit of the epoch runs."""


def test_a_unet_run_is_seeded_and_resumes_exactly(regions, tmp_path, monkeypatch):
    """Two runs of one seed give the same weights; a run killed after epoch 0 and re-run
    ends with the weights of the uninterrupted one."""
    directory, split = regions
    whole = unet_run(directory, tmp_path / "whole")
    again = unet_run(directory, tmp_path / "again")
    pd.testing.assert_frame_equal(whole.drop(columns="seconds"), again.drop(columns="seconds"))
    params = json.loads((tmp_path / "whole/params.json").read_text())
    assert params["architecture"] == "unet"
    assert params["train_samples"] == (split.split == "train").sum() * 12 * 16

    commit = training_module.commit_epoch

    def commit_then_die(checkpoint_dir, epoch, model, history):
        commit(checkpoint_dir, epoch, model, history)
        if epoch == 0:
            raise Killed

    monkeypatch.setattr(training_module, "commit_epoch", commit_then_die)
    with pytest.raises(Killed):
        unet_run(directory, tmp_path / "resumed")
    monkeypatch.setattr(training_module, "commit_epoch", commit)
    resumed = unet_run(directory, tmp_path / "resumed")
    columns = ["loss", "val_loss", "accuracy", "lr"]
    np.testing.assert_allclose(resumed[columns], whole[columns], rtol=1e-5)
    import keras

    models = [
        keras.saving.load_model(tmp_path / d / "model.keras", compile=False)
        for d in ("whole", "resumed")
    ]
    assert models[0].name.startswith("fibseg_unet")
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
