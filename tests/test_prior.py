"""The FIB-SEM prior's recipe (fibseg.pipeline.prior, `fibseg make-prior`): a tiny prior is
reproduced exactly from its seed, is a bundle that records its recipe and simulator, and starts
a fine-tuning run (training.init). The shipped prior (`prior`) is the default recipe's, matches
its SHA-256 and segments a film alone through `fibseg predict`."""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.filters import threshold_otsu
from test_unet import UNET_TRAINING, regions  # noqa: F401 (a fixture)

from fibseg.demo.films import random_film_spec
from fibseg.demo.synth import synthesize
from fibseg.evaluation.metrics import miou
from fibseg.inference.bundle import PRIOR_FOLDER, read_bundle
from fibseg.inference.infer import load_model
from fibseg.inference.pretrained import init_model_file
from fibseg.io.errors import InputError
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


def test_the_shipped_prior_is_the_default_recipe_and_matches_its_sha256(tmp_path):
    bundle = read_bundle("prior")  # refuses a file whose SHA-256 is not the description's
    assert bundle.path == PRIOR_FOLDER and set(bundle.metadata["sha256"]) == {
        "model.keras",
        "postprocess.json",
    }
    for name, expected in bundle.metadata["sha256"].items():
        assert hashlib.sha256((PRIOR_FOLDER / name).read_bytes()).hexdigest() == expected
    recipe = json.loads(json.dumps(dataclasses.asdict(PriorRecipe())))
    assert bundle.metadata["prior"]["recipe"] == recipe
    assert sum(path.stat().st_size for path in PRIOR_FOLDER.iterdir()) <= 5_000_000
    assert init_model_file("prior") == str(PRIOR_FOLDER / "model.keras")
    assert load_model(bundle.models[0]).input_shape == (None, None, None, recipe["n_z"])
    changed = shutil.copytree(PRIOR_FOLDER, tmp_path / "changed")
    with open(changed / "model.keras", "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(InputError, match="SHA-256 differs"):
        read_bundle(changed)


def test_the_shipped_prior_alone_segments_a_film(tmp_path):
    spec = random_film_spec(np.random.default_rng(7), "prior", slices=4, height=64, width=64)
    film = synthesize(spec)
    tifffile.imwrite(tmp_path / "film.tif", film["volume"], photometric="minisblack")
    fibseg(
        "predict",
        "prior",
        str(tmp_path / "film.tif"),
        str(tmp_path / "segmented.tif"),
        "--voxel-size",
        "50,10,10",
    )
    segmentation = tifffile.imread(tmp_path / "segmented.tif")
    assert segmentation.shape == (4, 64, 64) and set(np.unique(segmentation)) <= {0, 1}
    # the shipped prior scores 0.850 on this film (no label seen), global Otsu 0.823
    volume = film["volume"]
    otsu = (volume > threshold_otsu(volume)).astype(np.uint8)
    assert miou(film["truth"], segmentation) > max(0.8, miou(film["truth"], otsu))


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
