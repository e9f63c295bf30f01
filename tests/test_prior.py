"""The FIB-SEM prior's recipe (fibseg.pipeline.prior, `fibseg make-prior`): a tiny prior is
reproduced exactly from its seed, is a bundle that records its recipe and simulator, segments a
volume alone through `fibseg predict`, and starts a fine-tuning run (training.init)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from test_unet import UNET_TRAINING, regions  # noqa: F401 (a fixture)

from fibseg.demo.films import random_film_spec
from fibseg.demo.synth import synthesize
from fibseg.inference.bundle import read_bundle
from fibseg.networks.registry import architecture
from fibseg.pipeline.prior import film_split, simulator_version
from fibseg.runtime.settings import PriorRecipe
from fibseg.training.train import RunFiles, TrainingRun, train_run

TINY = {
    "films": 3,
    "slices": 5,
    "side": 64,
    "regions_per_film": 2,
    "region_size": 24,
    "val_every": 3,
    "n_xy": 32,
    "epochs": 1,
    "steps_per_epoch": 2,
    "tiles_per_batch": 2,
}


def make_prior(folder, seed: int = 0) -> subprocess.CompletedProcess:
    options = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    return fibseg("make-prior", str(folder), f"--seed={seed}", *options)


def fibseg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    process = subprocess.run(
        [sys.executable, "-m", "fibseg.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if check and process.returncode:
        pytest.fail(f"fibseg {' '.join(args)} failed:\n{process.stderr[-6000:]}")
    return process


def weights(path) -> list[np.ndarray]:
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).get_weights()]


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    """The tiny prior made twice from seed 0 and once from seed 1."""
    root = tmp_path_factory.mktemp("priors")
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        make_prior(root / name, seed)
    return root


def test_a_prior_is_reproduced_from_its_seed(priors):
    first, again, other = (weights(priors / n / "model.keras") for n in ("first", "again", "other"))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(first, other, strict=True)) > 1e-3
    chosen = [json.loads((priors / n / "postprocess.json").read_text()) for n in ("first", "again")]
    assert chosen[0] == chosen[1] and set(chosen[0]) >= {"sigma", "threshold"}
    assert not list(priors.glob("*.work"))  # the films and the run are removed


def test_a_prior_is_a_bundle_that_records_its_recipe(priors):
    bundle = read_bundle(priors / "first")  # checks every file's SHA-256
    assert bundle.models == (str(priors / "first" / "model.keras"),)
    prior = bundle.metadata["prior"]
    assert prior["recipe"] == json.loads(json.dumps(dataclasses.asdict(PriorRecipe(**TINY))))
    assert prior["simulator_version"] == simulator_version()
    assert prior["steps"] == TINY["epochs"] * TINY["steps_per_epoch"]
    assert "porosity" in prior["family"] and bundle.training_voxel_sizes
    [described] = bundle.metadata["architecture"]
    assert described["file"] == "model.keras" and described["n_z"] == 3


def test_the_prior_alone_segments_a_volume(priors, tmp_path):
    spec = random_film_spec(np.random.default_rng(7), "prior", slices=4, height=64, width=64)
    tifffile.imwrite(tmp_path / "film.tif", synthesize(spec)["volume"], photometric="minisblack")
    fibseg(
        "predict",
        str(priors / "first"),
        str(tmp_path / "film.tif"),
        str(tmp_path / "segmented.tif"),
        "--voxel-size",
        "50,10,10",
    )
    segmentation = tifffile.imread(tmp_path / "segmented.tif")
    assert segmentation.shape == (4, 64, 64) and set(np.unique(segmentation)) <= {0, 1}


def test_a_run_fine_tunes_the_prior(priors, regions, tmp_path):  # noqa: F811
    directory, _ = regions
    start = str(priors / "first" / "model.keras")
    files = RunFiles([str(directory / "U.h5")], split_csv=str(directory / "split.csv"))
    run = TrainingRun(
        tmp_path / "run", architecture("unet"), 32, 3, 7, UNET_TRAINING, files, init_model=start
    )
    history = train_run(run)
    assert len(history) == UNET_TRAINING.epochs
    assert json.loads((tmp_path / "run/params.json").read_text())["init"]["model"] == start


def test_whole_films_validate():
    recipe = PriorRecipe(films=10, regions_per_film=3, val_every=5)
    split = film_split(recipe, {f"film{k:03d}": None for k in range(10)})
    by_film = split.groupby("dataset").split.agg(set)
    assert (by_film.map(len) == 1).all()  # a film is train or val, whole
    assert sorted(by_film[by_film == {"val"}].index) == ["film004", "film009"]
    assert len(split) == 30


def test_an_existing_folder_is_refused(tmp_path):
    process = fibseg("make-prior", str(tmp_path), check=False)
    assert process.returncode == 2 and "the bundle folder exists" in process.stderr


def test_the_label_budget_study_runs_the_prior_alone_and_fine_tuned(priors, tmp_path):
    out = tmp_path / "budget.csv"
    study = Path(__file__).resolve().parents[1] / "studies" / "label_budget.py"
    arguments = [
        *("--quick", "--data", "demo", "--methods", "rf,prior,unet_prior"),
        *("--prior", str(priors / "first"), "--steps-per-epoch", "2", "--out", str(out)),
    ]
    process = subprocess.run(
        [sys.executable, str(study), *arguments], capture_output=True, text=True, timeout=900
    )
    assert process.returncode == 0, process.stderr[-4000:]
    rows = pd.read_csv(out)
    assert set(rows.method) == {"rf", "prior", "unet_prior"}
    assert (rows[rows.method == "prior"].trained_on == 0).all()
    assert rows.mIoU.between(0, 1).all() and rows.porosity_error_pp.notna().all()
    histories = pd.read_csv(tmp_path / "budget_histories.csv")
    assert set(histories.method) == {"unet_prior"}
