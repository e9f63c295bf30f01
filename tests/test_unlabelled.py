"""Learning from unlabelled voxels (fibseg.training.unlabelled) and dense training in steps, on tiny
data: pseudo-labels by hand, the volume windows and the forest's scores of the voxels the
twin's outputs stand for, the forest steering the network, a falling loss, determinism, and
that `training.unlabelled` off is today's training exactly."""

import json
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest

from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import split_regions
from fibseg.networks.model import build_model
from fibseg.networks.registry import architecture
from fibseg.networks.twin import from_fragment_layout, twin_geometry
from fibseg.runtime.settings import TrainingSettings, UnlabelledSettings
from fibseg.training.dense import training_twin
from fibseg.training.tiles import DenseTiles
from fibseg.training.train import RunFiles, TrainingRun, train_run
from fibseg.training.unlabelled import (
    VolumeWindows,
    check_unlabelled,
    output_voxel_offset,
    pseudo_labels,
)

PATCH = architecture("patch")
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
    from it with the 40 px of context an 81 x 81 'valid' model needs, the forest's scores of
    the volume (forest.h5: 0.9 on solid, 0.1 on pore), and the volume itself."""
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
    # a forest that is right where the truth is and unsure nowhere
    write_scores(directory / "forest.h5", np.where(solid, 0.9, 0.1))
    return directory, volume


def train(directory, run_dir, settings, seed=0, teacher_files=None):
    files = RunFiles(
        [str(directory / "V.h5")],
        split_csv=str(directory / "split.csv"),
        volumes=[str(directory / "pre.h5")],
        teachers=[str(directory / "forest.h5")] if teacher_files is None else teacher_files,
    )
    return train_run(TrainingRun(run_dir, PATCH, 81, 3, seed, settings, files, padding="valid"))


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


def write_scores(path, scores):
    with h5py.File(path, "w") as handle:
        handle["scores"] = np.asarray(scores, np.float32)
    return str(path)


def windows_of(directory, scores, seed=5):
    return VolumeWindows([str(directory / "pre.h5")], [scores], 81, 3, 16, seed)


def test_volume_windows_are_seeded_crops_of_the_volume(data):
    directory, volume = data
    windows = windows_of(directory, str(directory / "forest.h5"))
    first, scores = windows.draw(3, epoch=2, index=4)
    assert first.shape == (3, 16 + 76 - 1, 16 + 76 - 1, 3) and first.dtype == np.float32
    assert scores.shape == (3, 16, 16) and np.isin(scores, np.float32([0.1, 0.9])).all()
    again, scores_again = windows.draw(3, epoch=2, index=4)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(scores, scores_again)
    assert not np.array_equal(first, windows.draw(3, epoch=2, index=5)[0])
    assert np.isin(first, volume).all()  # mirrored and turned, but the volume's own values


def test_forest_scores_are_the_voxels_the_outputs_stand_for(data, tmp_path):
    """Forest scores that are the volume's own values: each block of scores must be the
    centre slice of its window at the voxels the twin's outputs stand for
    (`output_voxel_offset`), under every transform."""
    directory, volume = data
    windows = windows_of(directory, write_scores(tmp_path / "teacher.h5", volume))
    start = output_voxel_offset(81)
    for index in range(6):
        inputs, blocks = windows.draw(3, epoch=1, index=index)
        assert blocks.shape == (3, 16, 16)
        np.testing.assert_array_equal(blocks, inputs[:, start : start + 16, start : start + 16, 1])


def test_forest_scores_of_the_wrong_shape_are_refused(data, tmp_path):
    directory, volume = data
    wrong = write_scores(tmp_path / "wrong.h5", volume[:, :50])
    with pytest.raises(ValueError, match=r"wrong.h5 have shape \(6, 50, 96\).*rebuild"):
        VolumeWindows([str(directory / "pre.h5")], [wrong], 81, 3, 16, 5)
    with pytest.raises(ValueError, match="one forest score volume per preprocessed volume, got 2"):
        VolumeWindows([str(directory / "pre.h5")], [wrong, wrong], 81, 3, 16, 5)
    with pytest.raises(ValueError, match="got 0 for 1"):
        VolumeWindows([str(directory / "pre.h5")], [], 81, 3, 16, 5)


def test_the_forest_steers_the_network(data, tmp_path):
    """The same run taught by a forest that calls every voxel solid, and by one that calls
    every voxel pore (pseudo-labels weighing 5 x the labels): the first must score the
    volume as more solid than the second. Without the forest's score volumes the run is
    refused."""
    directory, volume = data
    taught = replace(PSEUDO, weight=5.0, confidence=0.9)
    settings = replace(SETTINGS, epochs=2, unlabelled=taught)
    probe = windows_of(directory, str(directory / "forest.h5"), seed=9).draw(4, 0, 0)[0]
    means = {}
    for name, value in (("solid", 1.0), ("pore", 0.0)):
        teacher = write_scores(tmp_path / f"{name}.h5", np.full(volume.shape, value))
        run = train(directory, tmp_path / name, settings, teacher_files=[teacher])
        assert len(run) == 2
        twin = training_twin(keras_load(tmp_path / name / "model.keras"))
        scores = from_fragment_layout(np.asarray(twin.predict_on_batch(probe))[..., 0], 4)
        means[name] = float(scores.mean())
    assert means["solid"] > means["pore"] + 0.1, means
    with pytest.raises(Exception, match="method: pseudo.*need the forest's score volumes"):
        train(directory, tmp_path / "none", settings, teacher_files=[])


def keras_load(path):
    import keras

    return keras.saving.load_model(path, safe_mode=True)


def test_pseudo_labels_need_the_forest():
    check_unlabelled("dense", "pseudo", forest_enabled=True)
    check_unlabelled("dense", "none", forest_enabled=False)
    with pytest.raises(Exception, match=r"forest.enabled is false.*method: none"):
        check_unlabelled("dense", "pseudo", forest_enabled=False)


def test_unlabelled_needs_dense_training(data, tmp_path):
    check_unlabelled("dense", "pseudo")
    check_unlabelled("patches", "none")
    with pytest.raises(Exception, match="needs dense training"):
        check_unlabelled("patches", "pseudo")
    # train_run refuses it too, before it trains anything
    directory, _ = data
    patches = replace(SETTINGS, mode="patches", unlabelled=PSEUDO)
    with pytest.raises(Exception, match=r"\('pseudo'\) needs dense training, not 'patches'"):
        train(directory, tmp_path / "patches", patches)
    assert not (tmp_path / "patches/model.keras").exists()


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
    files = RunFiles([str(directory / "V.h5")], split_csv=str(directory / "split.csv"))
    plain = train_run(
        TrainingRun(tmp_path / "plain", PATCH, 81, 3, 0, SETTINGS, files, padding="valid")
    )
    off = replace(PSEUDO, method="none", weight=3.0, start_epoch=0)
    with_off = train(directory, tmp_path / "off", replace(SETTINGS, unlabelled=off))
    pd.testing.assert_frame_equal(
        plain.drop(columns="seconds"), with_off.drop(columns="seconds"), check_exact=True
    )


def test_twin_output_stands_for_the_voxel_of_its_patch():
    """Twin output p scores the patch centred at input p + output_voxel_offset (the patch
    model's voxel), which lies inside the twin's receptive field [p, p + field) but is not
    its middle: for n_xy 81 the field is 76 and the voxel 40, not 38."""
    for n_xy in (81, 97, 113):
        field, offset = twin_geometry(n_xy, "valid")
        assert offset == 0 and output_voxel_offset(n_xy) == n_xy // 2 < field
    field, _ = twin_geometry(81, "valid")
    assert output_voxel_offset(81) == 40 and field == 76
    model = build_model(81, 3, "valid", seed=2)
    twin = training_twin(model)
    rng = np.random.default_rng(0)
    side, start = 16, output_voxel_offset(81)
    window = rng.random((1, side + 75, side + 75, 3)).astype(np.float32)
    dense = from_fragment_layout(np.asarray(twin.predict_on_batch(window))[..., 0], 1)[0]
    for i, j in ((0, 0), (3, 7), (10, 2)):
        y, x = i + start, j + start  # the voxel; its 81 x 81 patch starts 40 before it
        patch = window[:, y - 40 : y + 41, x - 40 : x + 41]
        np.testing.assert_allclose(dense[i, j], model.predict_on_batch(patch)[0, 0], atol=2e-6)
        # a change at the voxel moves output (i, j); one just past the field does not
        for dy, dx, moves in ((0, 0, True), (field - start, 0, False), (0, field - start, False)):
            changed = window.copy()
            changed[0, y + dy, x + dx, 1] += 0.5
            score = from_fragment_layout(np.asarray(twin.predict_on_batch(changed))[..., 0], 1)[
                0, i, j
            ]
            assert (abs(score - dense[i, j]) > 1e-7) == moves
