"""Where a training run starts (training.init, fibseg.training.initial) and when it stops
(training.patience): a run fine-tunes the weights it is given, records the file's SHA-256,
refuses a model that does not fit, and stops once the validation loss stops falling."""

import hashlib
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from test_unet import UNET_TRAINING, regions  # noqa: F401 (a fixture)

from fibseg.inference.pretrained import init_model_file
from fibseg.io.errors import InputError
from fibseg.networks.registry import architecture
from fibseg.networks.unet import build_unet
from fibseg.training.train import RunFiles, TrainingRun, patience_exhausted, train_run

# a learning rate too small to move any weight measurably: what a run ends with is where it
# started (the batch normalisation's moving statistics aside, which are not trained)
STILL = replace(UNET_TRAINING, search=replace(UNET_TRAINING.search, log10_lr0=(-12.0,)))


def run(directory, run_dir, training=STILL, **options) -> pd.DataFrame:
    files = RunFiles([str(directory / "U.h5")], split_csv=str(directory / "split.csv"))
    return train_run(
        TrainingRun(run_dir, architecture("unet"), 32, 3, 7, training, files, **options)
    )


def trained_weights(path) -> list[np.ndarray]:
    import keras

    model = keras.saving.load_model(path, compile=False)
    return [np.asarray(w) for w in model.trainable_weights]


def test_a_run_fine_tunes_the_weights_it_is_given(regions, tmp_path):  # noqa: F811
    directory, _ = regions
    start = tmp_path / "start.keras"
    build_unet(3, seed=99).save(start)
    given = trained_weights(start)
    run(directory, tmp_path / "tuned", init_model=str(start))
    run(directory, tmp_path / "scratch")
    tuned = trained_weights(tmp_path / "tuned/model.keras")
    scratch = trained_weights(tmp_path / "scratch/model.keras")
    for ours, theirs in zip(tuned, given, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert max(np.abs(a - b).max() for a, b in zip(scratch, given, strict=True)) > 0.01
    params = json.loads((tmp_path / "tuned/params.json").read_text())
    digest = hashlib.sha256(start.read_bytes()).hexdigest()
    assert params["init"] == {"model": str(start), "sha256": digest}
    assert json.loads((tmp_path / "scratch/params.json").read_text())["init"] == "scratch"


def test_a_model_of_other_slices_is_refused_by_name(regions, tmp_path):  # noqa: F811
    directory, _ = regions
    start = tmp_path / "one_slice.keras"
    build_unet(1, seed=0).save(start)
    with pytest.raises(InputError, match="do not fit") as error:
        run(directory, tmp_path / "run", init_model=str(start))
    assert "one_slice.keras" in str(error.value) and "grid.n_z" in str(error.value)


def test_init_names_a_bundle_a_keras_file_or_scratch(tmp_path):
    assert init_model_file("scratch") is None
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    assert init_model_file(str(model)) == str(model)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "best.keras").write_bytes(b"k")
    (bundle / "postprocess.json").write_text("{}")
    description = {
        "format": "fibseg-model",
        "format_version": 1,
        "models": ["best.keras"],
        "postprocess": "postprocess.json",
        "inference": {},
        "training_data": [],
    }
    (bundle / "fibseg-model.json").write_text(json.dumps(description))
    assert init_model_file(str(bundle)) == str(bundle / "best.keras")
    with pytest.raises(InputError, match="neither a bundle folder nor a model file"):
        init_model_file(str(tmp_path / "missing"))
    pickled = tmp_path / "forest.joblib"
    pickled.write_bytes(b"")
    with pytest.raises(InputError, match="can run any code"):
        init_model_file(str(pickled))


@pytest.mark.parametrize(
    ("losses", "patience", "exhausted"),
    [
        ([0.5, 0.4, 0.3], 1, False),
        ([0.5, 0.4, 0.45], 1, True),
        ([0.5, 0.4, 0.45], 2, False),
        ([0.5, 0.4, 0.45, 0.4], 2, True),  # equal is no improvement
        ([0.5, 0.6, 0.7, 0.3], 2, False),
        ([0.5, 0.6], None, False),
        ([0.5], 1, False),
    ],
)
def test_patience_counts_the_epochs_since_the_best(losses, patience, exhausted):
    history = pd.DataFrame({"epoch": range(len(losses)), "val_loss": losses})
    assert patience_exhausted(history, patience) is exhausted


def test_a_run_stops_when_the_validation_loss_stops_falling(regions, tmp_path, monkeypatch):  # noqa: F811
    """Validation losses 0.5, 0.4, 0.45, 0.42, then lower ones that never come: with patience
    2 the run stops before epoch 4 and keeps epoch 1's model."""
    from fibseg.training.unet_tiles import UnetEpochs

    scripted = [0.5, 0.4, 0.45, 0.42, 0.1, 0.05]
    fit = UnetEpochs.fit

    def scripted_fit(self, model, epoch):
        result = fit(self, model, epoch)
        return {**result, "val_loss": [scripted[epoch]]}

    monkeypatch.setattr(UnetEpochs, "fit", scripted_fit)
    directory, _ = regions
    history = run(
        directory, tmp_path / "run", training=replace(UNET_TRAINING, epochs=6, patience=2)
    )
    assert history.val_loss.tolist() == pytest.approx(scripted[:4])
    params = json.loads((tmp_path / "run/params.json").read_text())
    assert params["epochs_trained"] == 4 and params["patience"] == 2 and params["best_epoch"] == 1
