"""Training runs on tiny data: outputs, resume after a kill, and model selection."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import fibseg.training.train as training_module
from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import labelled_voxels, sample_split, split_regions
from fibseg.networks.registry import architecture
from fibseg.runtime.settings import TrainingSettings
from fibseg.training.halving import continue_from
from fibseg.training.selection import collect_histories, select_cells
from fibseg.training.train import RunFiles, TrainingRun, train_run

PATCH = architecture("patch")
TRAINING = TrainingSettings.from_config(
    {
        "epochs": 3,
        "batch_size": 32,
        "momentum": 0.9,
        "steps_per_epoch": None,
        "search": {
            "a": [0.025, 0.1],
            "b": [0.025, 0.1],
            "log10_lr0": [-2.0],
            "k": [2],
            "log10_c": [-7, -5],
            "p_d": [0, 0.2],
            "p_sd": [0, 0.2],
            "lr_step": 0.25,
            "augment_probability": 0.5,
        },
    }
)


@pytest.fixture(scope="module")
def tiny_regions(tmp_path_factory):
    directory = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(0)
    labels = (rng.random((10, 12, 12)) < 0.6).astype(np.uint8)
    crops = rng.random((10, 3, 32, 32)).astype(np.float32)
    crops[:, 1, 10:22, 10:22] += labels  # the label shows in the centre slice
    table = pd.DataFrame({"z": range(10), "y": 0, "x": 0, "height": 12, "width": 12})
    RegionSet("T", crops, labels, table, 10, 1).write(directory / "T.h5")
    regions = {"T": RegionSet.read(directory / "T.h5", crops=False)}
    split = split_regions({"T": table}, {"train": 0.6, "val": 0.2, "test": 0.2}, 1)
    sample_rng = np.random.default_rng(1)
    for name, fraction in (("train", 0.3), ("val", 0.3)):
        voxels = labelled_voxels(regions, split, name)
        sample_split(voxels, fraction, name == "train", sample_rng, name).to_csv(
            directory / f"{name}.csv", index=False
        )
    return directory


def run(directory, run_dir, seed=0, epochs=3, training=TRAINING, **options):
    files = RunFiles(
        [str(directory / "T.h5")], str(directory / "train.csv"), str(directory / "val.csv")
    )
    training = replace(training, epochs=epochs)
    return train_run(TrainingRun(run_dir, PATCH, 17, 3, seed, training, files, **options))


def test_training_writes_model_history_and_params(tiny_regions, tmp_path):
    history = run(tiny_regions, tmp_path / "r")
    assert history["epoch"].tolist() == [0, 1, 2]
    saved = pd.read_csv(tmp_path / "r/history.csv")
    assert list(saved.columns) == training_module.HISTORY_COLUMNS
    assert saved["lr"].tolist() == pytest.approx([0.01, 0.01, 10**-2.25])
    params = json.loads((tmp_path / "r/params.json").read_text())
    assert {"a", "b", "log10_lr0", "k", "c", "p_d", "p_sd", "versions"} <= set(params)
    assert params["best_epoch"] == int(saved["val_loss"].idxmin())
    assert not (tmp_path / "r/checkpoint").exists()
    import keras

    model = keras.saving.load_model(tmp_path / "r/model.keras")
    assert model.input_shape == (None, 17, 17, 3)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the commit of the epoch runs."""


def test_resume_after_a_kill_continues_from_the_right_epoch(tiny_regions, tmp_path, monkeypatch):
    commit = training_module.commit_epoch

    def commit_then_die(checkpoint_dir, epoch, model, history):
        commit(checkpoint_dir, epoch, model, history)
        if epoch == 1:
            raise Killed

    monkeypatch.setattr(training_module, "commit_epoch", commit_then_die)
    with pytest.raises(Killed):
        run(tiny_regions, tmp_path / "r")
    before = pd.read_csv(tmp_path / "r/checkpoint/epoch_0001/history.csv")
    assert not (tmp_path / "r/model.keras").exists()
    monkeypatch.setattr(training_module, "commit_epoch", commit)
    history = run(tiny_regions, tmp_path / "r")
    assert history["epoch"].tolist() == [0, 1, 2]  # each epoch exactly once
    pd.testing.assert_frame_equal(
        history.iloc[:2].reset_index(drop=True), before.astype(history.dtypes.to_dict())
    )
    params = json.loads((tmp_path / "r/params.json").read_text())
    assert params["resumed_from_epoch"] == 2


def test_a_halving_rung_continues_a_run_exactly_as_if_never_stopped(tiny_regions, tmp_path):
    """Rung 0 trains 1 epoch and keeps its last state; rung 1 resumes it up to epoch 3. The
    learning curve and the best model equal those of one uninterrupted 3-epoch run."""
    whole = run(tiny_regions, tmp_path / "whole", seed=1)
    run(tiny_regions, tmp_path / "seed1", seed=1, epochs=1, keep_last_state=True)
    assert (tmp_path / "seed1/last.keras").is_file()
    assert continue_from(tmp_path / "seed1", tmp_path / "slot0")
    rung = run(tiny_regions, tmp_path / "slot0", seed=1, rung=1, keep_last_state=True)
    assert rung["epoch"].tolist() == [0, 1, 2]
    columns = ["loss", "val_loss", "accuracy", "val_accuracy", "lr"]
    np.testing.assert_allclose(rung[columns], whole[columns], rtol=1e-5)
    params = json.loads((tmp_path / "slot0/params.json").read_text())
    assert (params["rung"], params["resumed_from_epoch"], params["seed"]) == (1, 1, 1)
    import keras

    best = [keras.saving.load_model(tmp_path / d / "model.keras") for d in ("whole", "slot0")]
    for a, b in zip(best[0].get_weights(), best[1].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_select_model_picks_the_true_minimum(tmp_path):
    rng = np.random.default_rng(5)
    truth = {}
    for n_xy in (33, 49):
        for n_z in (1, 3):
            for seed in range(3):
                run_dir = tmp_path / f"nxy{n_xy}_nz{n_z}/seed{seed}"
                run_dir.mkdir(parents=True)
                history = pd.DataFrame(
                    {
                        "epoch": range(5),
                        "loss": rng.random(5),
                        "val_loss": rng.random(5),
                        "val_accuracy": rng.random(5),
                        "val_mIoU": rng.random(5),
                    }
                )
                history.to_csv(run_dir / "history.csv", index=False)
                (run_dir / "params.json").write_text(
                    json.dumps(
                        {"n_xy": n_xy, "n_z": n_z, "seed": seed, "train_seconds_total": seed}
                    )
                )
                for row in history.itertuples():
                    key = (n_xy, n_z)
                    if key not in truth or row.val_loss < truth[key][0]:
                        truth[key] = (row.val_loss, seed, row.epoch)
    runs = sorted(str(p.parent) for p in tmp_path.glob("*/seed*/params.json"))
    cells = select_cells(collect_histories(runs))
    assert len(cells) == 4
    for row in cells.itertuples():
        assert (row.val_loss, row.seed, row.epoch) == truth[(row.n_xy, row.n_z)]
        assert row.mean_train_seconds == 1.0 and row.runs == 3


@pytest.fixture(scope="module")
def valid_regions(tmp_path_factory):
    """Ten 16 x 16 regions with the 40 px of context that an 81 x 81 'valid' model needs."""
    directory = tmp_path_factory.mktemp("valid_regions")
    rng = np.random.default_rng(2)
    labels = (rng.random((10, 16, 16)) < 0.5).astype(np.uint8)
    crops = rng.random((10, 3, 96, 96)).astype(np.float32) * 0.5
    crops[:, 1, 40:56, 40:56] += labels
    table = pd.DataFrame({"z": range(10), "y": 0, "x": 0, "height": 16, "width": 16})
    RegionSet("V", crops, labels, table, 40, 1).write(directory / "V.h5")
    split = split_regions({"V": table}, {"train": 0.6, "val": 0.2, "test": 0.2}, 1)
    split.to_csv(directory / "split.csv", index=False)
    return directory, split


def test_dense_mode_trains_on_every_labelled_voxel_of_the_split(valid_regions, tmp_path):
    directory, split = valid_regions
    settings = replace(TRAINING, mode="dense", epochs=2, tiles_per_batch=2)
    files = RunFiles([str(directory / "V.h5")], split_csv=str(directory / "split.csv"))
    history = train_run(
        TrainingRun(tmp_path / "d", PATCH, 81, 3, 0, settings, files, padding="valid")
    )
    assert history["epoch"].tolist() == [0, 1]
    assert np.isfinite(history[["loss", "val_loss", "val_mIoU"]].to_numpy()).all()
    params = json.loads((tmp_path / "d/params.json").read_text())
    assert params["mode"] == "dense"
    assert params["train_samples"] == (split.split == "train").sum() * 16 * 16
    assert params["val_samples"] == (split.split == "val").sum() * 16 * 16
    assert (tmp_path / "d/model.keras").exists()


def test_adam_trains_resumes_with_its_own_state_and_is_recorded(tiny_regions, tmp_path):
    """`training.optimizer: adam`: the run's optimiser is Adam, params.json says so, and a run
    stopped after epoch 0 and continued ends as one uninterrupted run (Adam's moments travel
    with the checkpoint). The SGD run of the same seed differs."""
    adam = replace(TRAINING, optimizer="adam")
    whole = run(tiny_regions, tmp_path / "whole", seed=2, training=adam)
    import keras

    model = keras.saving.load_model(tmp_path / "whole/model.keras")
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert json.loads((tmp_path / "whole/params.json").read_text())["optimizer"] == "adam"
    run(tiny_regions, tmp_path / "first", seed=2, epochs=1, training=adam, keep_last_state=True)
    assert continue_from(tmp_path / "first", tmp_path / "rest")
    rest = run(tiny_regions, tmp_path / "rest", seed=2, training=adam, rung=1)
    columns = ["loss", "val_loss", "accuracy", "lr"]
    np.testing.assert_allclose(rest[columns], whole[columns], rtol=1e-5)
    sgd = run(tiny_regions, tmp_path / "sgd", seed=2)
    assert not np.allclose(sgd["loss"], whole["loss"])
