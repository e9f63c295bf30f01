"""Learning from unlabelled voxels (fibseg.training.unlabelled) and dense training in steps, on tiny
data: pseudo-labels by hand, the volume windows, a falling loss, determinism, and that
`training.unlabelled` off is today's training exactly; the blind-spot masking and its
pretraining (method masked): the voxel an output stands for, a falling loss, determinism,
the pretrained weights in the classifier, and no pretraining when a run resumes."""

import json
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest

import fibseg.training.unlabelled
from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import split_regions
from fibseg.networks.model import build_model
from fibseg.networks.twin import from_fragment_layout, twin_geometry
from fibseg.runtime.settings import TrainingSettings, UnlabelledSettings
from fibseg.training.dense import training_twin
from fibseg.training.halving import continue_from
from fibseg.training.tiles import DenseTiles
from fibseg.training.train import train_run
from fibseg.training.unlabelled import (
    VolumeWindows,
    blind_spot_batch,
    blind_spot_offset,
    check_unlabelled,
    pretrain_blind_spot,
    pseudo_labels,
)

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
MASKED = UnlabelledSettings(
    method="masked", tiles_per_batch=2, pretrain_steps=60, mask_fraction=0.05
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


def train(directory, run_dir, settings, seed=0, **options):
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
        **options,
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


def write_scores(path, scores):
    with h5py.File(path, "w") as handle:
        handle["scores"] = np.asarray(scores, np.float32)
    return str(path)


def test_forest_teacher_scores_are_the_voxels_the_outputs_stand_for(data, tmp_path):
    """A teacher whose score is the volume's own value: each teacher block must be the
    centre slice of its window at the voxels the twin's outputs stand for
    (`blind_spot_offset`), under every transform; the windows are those of `draw`."""
    directory, volume = data
    teacher = write_scores(tmp_path / "teacher.h5", volume)
    windows = VolumeWindows([str(directory / "pre.h5")], 81, 3, 16, 5, [teacher])
    start = blind_spot_offset(81)
    for index in range(6):
        inputs, blocks = windows.draw_with_teacher(3, epoch=1, index=index)
        np.testing.assert_array_equal(inputs, windows.draw(3, epoch=1, index=index))
        assert blocks.shape == (3, 16, 16)
        np.testing.assert_array_equal(blocks, inputs[:, start : start + 16, start : start + 16, 1])
    plain = VolumeWindows([str(directory / "pre.h5")], 81, 3, 16, 5)
    np.testing.assert_array_equal(plain.draw(3, 1, 2), windows.draw(3, 1, 2))
    with pytest.raises(ValueError, match="no teacher score volumes"):
        plain.draw_with_teacher(3, 1, 2)


def test_forest_teacher_of_the_wrong_shape_is_refused(data, tmp_path):
    directory, volume = data
    wrong = write_scores(tmp_path / "wrong.h5", volume[:, :50])
    with pytest.raises(ValueError, match=r"wrong.h5 have shape \(6, 50, 96\).*rebuild"):
        VolumeWindows([str(directory / "pre.h5")], 81, 3, 16, 5, [wrong])
    with pytest.raises(ValueError, match="one score volume per preprocessed volume, got 2 for 1"):
        VolumeWindows([str(directory / "pre.h5")], 81, 3, 16, 5, [wrong, wrong])


def test_the_forest_teacher_steers_the_network(data, tmp_path):
    """The same run taught by a forest that calls every voxel solid, and by one that calls
    every voxel pore (pseudo-labels weighing 5 x the labels): the first must score the
    volume as more solid than the second. Without a teacher file the run is refused."""
    directory, volume = data
    taught = replace(PSEUDO, teacher="forest", weight=5.0, confidence=0.9)
    settings = replace(SETTINGS, epochs=2, unlabelled=taught)
    means = {}
    for name, value in (("solid", 1.0), ("pore", 0.0)):
        teacher = write_scores(tmp_path / f"{name}.h5", np.full(volume.shape, value))
        run = train(directory, tmp_path / name, settings, teacher_files=[teacher])
        assert len(run) == 2
        model = keras_load(tmp_path / name / "model.keras")
        twin = training_twin(model)
        windows = VolumeWindows([str(directory / "pre.h5")], 81, 3, 16, 9).draw(4, 0, 0)
        scores = from_fragment_layout(np.asarray(twin.predict_on_batch(windows))[..., 0], 4)
        means[name] = float(scores.mean())
    assert means["solid"] > means["pore"] + 0.1, means
    with pytest.raises(Exception, match="teacher: forest needs the forest's score volumes"):
        train(directory, tmp_path / "none", settings)


def keras_load(path):
    import keras

    return keras.saving.load_model(path, safe_mode=True)


def test_forest_teacher_needs_the_forest():
    check_unlabelled("dense", "pseudo", "forest", forest_enabled=True)
    check_unlabelled("dense", "masked", "forest", forest_enabled=False)  # teacher unused
    with pytest.raises(Exception, match=r"forest.enabled is false.*teacher: network"):
        check_unlabelled("dense", "pseudo", "forest", forest_enabled=False)


def test_unlabelled_needs_dense_training():
    check_unlabelled("dense", "pseudo")
    check_unlabelled("dense", "masked")
    check_unlabelled("patches", "none")
    for method in ("pseudo", "masked"):
        with pytest.raises(Exception, match="needs dense training"):
            check_unlabelled("patches", method)


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


# --- masked: blind-spot pretraining ---------------------------------------------------------


def test_twin_output_stands_for_the_blind_spot_voxel():
    """Twin output p scores the patch centred at input p + blind_spot_offset (the patch
    model's voxel), which lies inside the twin's receptive field [p, p + field) but is not
    its middle: for n_xy 81 the field is 76 and the voxel 40, not 38."""
    for n_xy in (81, 97, 113):
        field, offset = twin_geometry(n_xy, "valid")
        assert offset == 0 and blind_spot_offset(n_xy) == n_xy // 2 < field
    field, _ = twin_geometry(81, "valid")
    assert blind_spot_offset(81) == 40 and field == 76
    model = build_model(81, 3, "valid", seed=2)
    twin = training_twin(model)
    rng = np.random.default_rng(0)
    side, start = 16, blind_spot_offset(81)
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


def test_blind_spot_batch_masks_centre_voxels_with_neighbours():
    rng = np.random.default_rng(1)
    windows = rng.random((3, 16 + 75, 16 + 75, 3)).astype(np.float32)
    inputs, targets, weights = blind_spot_batch(windows, 81, 0.05, 2, np.random.default_rng(4))
    assert inputs.shape == windows.shape and targets.shape == weights.shape == (3, 16, 16)
    np.testing.assert_array_equal(weights.sum(axis=(1, 2)), [13, 13, 13])  # round(0.05 * 256)
    assert set(np.unique(weights)) == {0.0, 1.0}
    start = blind_spot_offset(81)
    changed = inputs != windows
    assert not changed[..., [0, 2]].any()  # only the centre slice
    for b in range(3):
        i, j = np.nonzero(weights[b])
        y, x = i + start, j + start
        # exactly the masked voxels changed, the targets are their original values ...
        expected = np.zeros(windows.shape[1:3], bool)
        expected[y, x] = True
        np.testing.assert_array_equal(changed[b, ..., 1], expected)
        np.testing.assert_array_equal(targets[b, i, j], windows[b, y, x, 1])
        assert not targets[b][weights[b] == 0].any()
        # ... and each now holds the value of another voxel within 2 of it (same slice)
        for yy, xx in zip(y, x, strict=True):
            near = windows[b, yy - 2 : yy + 3, xx - 2 : xx + 3, 1].copy()
            near[2, 2] = np.nan
            assert inputs[b, yy, xx, 1] in near
    again = blind_spot_batch(windows, 81, 0.05, 2, np.random.default_rng(4))
    np.testing.assert_array_equal(again[0], inputs)


def pretrained(data, seed=0, steps=MASKED.pretrain_steps, build_seed=0, out=None):
    directory, _ = data
    model = build_model(81, 3, "valid", p_d=0.1, seed=build_seed)
    windows = VolumeWindows([str(directory / "pre.h5")], 81, 3, 16, seed=seed)
    settings = replace(MASKED, pretrain_steps=steps)
    history = pretrain_blind_spot(model, windows, settings, seed, out=out)
    return model, history


def test_blind_spot_pretraining_loss_falls(data, tmp_path):
    """The loss falls, and below the volume's variance (the error of the best constant
    guess): the network predicts a hidden voxel from its neighbours (about 0.69 of it after
    200 steps, from about 3 times it at the start)."""
    _, volume = data
    history = pretrained(data, steps=200, out=tmp_path / "pretrain_history.csv")[1]
    assert len(history) == 200
    first, last = history["loss"].iloc[:10].mean(), history["loss"].iloc[-20:].mean()
    assert last < 0.5 * first, (first, last)
    assert last < 0.85 * volume.var(), (last, volume.var())
    written = pd.read_csv(tmp_path / "pretrain_history.csv")
    assert written.columns.tolist() == ["step", "loss", "seconds"]
    np.testing.assert_allclose(written["loss"], history["loss"])


def test_blind_spot_pretraining_is_seeded_and_stays_in_the_classifier(data):
    initial = build_model(81, 3, "valid", p_d=0.1, seed=0)
    one, _ = pretrained(data, steps=4)
    two, _ = pretrained(data, steps=4)
    other, _ = pretrained(data, seed=1, steps=4)
    for a, b in zip(one.get_weights(), two.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    trunk = ("block1_conv1", "block4_conv2", "dense1", "dense2")
    for name in trunk:
        before = initial.get_layer(name).get_weights()[0]
        assert not np.array_equal(one.get_layer(name).get_weights()[0], before)
        assert not np.array_equal(
            one.get_layer(name).get_weights()[0], other.get_layer(name).get_weights()[0]
        )
    # the head is not the classifier's: its score layer is untouched
    for a, b in zip(
        one.get_layer("score").get_weights(), initial.get_layer("score").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    patches = np.random.default_rng(0).random((2, 81, 81, 3)).astype(np.float32)
    assert not np.allclose(one.predict_on_batch(patches), initial.predict_on_batch(patches))


def test_masked_pretrains_a_fresh_run_only(data, tmp_path, monkeypatch):
    """train_run pretrains before epoch 0 (pretrain_history.csv), then trains as usual; a run
    that resumes from a checkpoint (here a rung of successive halving) does not pretrain."""
    directory, _ = data
    settings = replace(SETTINGS, epochs=1, unlabelled=replace(MASKED, pretrain_steps=3))
    first = train_run(
        tmp_path / "a",
        [str(directory / "V.h5")],
        "unused",
        "unused",
        str(directory / "split.csv"),
        81,
        3,
        0,
        "valid",
        settings,
        volume_files=[str(directory / "pre.h5")],
        keep_last_state=True,
    )
    assert len(first) == 1
    assert pd.read_csv(tmp_path / "a/pretrain_history.csv")["step"].tolist() == [0, 1, 2]
    continue_from(tmp_path / "a", tmp_path / "b")

    def forbidden(*args, **kwargs):
        raise AssertionError("a resumed run must not pretrain")

    monkeypatch.setattr(fibseg.training.unlabelled, "pretrain_blind_spot", forbidden)
    resumed = train(directory, tmp_path / "b", replace(settings, epochs=2))
    assert resumed["epoch"].tolist() == [0, 1]
    assert not (tmp_path / "b/pretrain_history.csv").exists()
