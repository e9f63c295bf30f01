"""The U-Net (model.architecture: unet) through the real workflow on tiny data: fine-tuned from
the shipped FIB-SEM prior (training.init: prior) on the regions of one data set, scoring both
in chunks of slices, in the tables beside Otsu; then reused with `pretrained` in a second
project: checked, nothing trained, the same segmentation voxel for voxel."""

import hashlib
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import TINY_DEMO, planned_jobs, run_snakemake, write_project

from fibseg.inference.bundle import PRIOR_FOLDER
from fibseg.inference.infer import load_model
from fibseg.inference.unet_engine import UnetEngine

pytestmark = pytest.mark.workflow

SETTINGS = {
    "datasets": "config/datasets.tsv",
    "model": {"architecture": "unet"},
    "grid": {"n_xy": [32], "n_z": [3], "seeds": 1},
    "sampling": {"fraction": 0.1, "seed": 1},
    "training": {
        "epochs": 2,
        "steps_per_epoch": 3,
        "tiles_per_batch": 4,
        "optimizer": "adam",
        "search": {"log10_lr0": [-3.0], "k": [20]},
        "init": "prior",
    },
    "forest": {"enabled": False},
    "structure": {"enabled": False},
    "inference": {"slices_per_job": 4, "tile": 40},
    "postprocess": {"sigma_grid": [0.0, 1.0], "threshold_grid": [0.4, 0.5]},
}
HEADER = "name\tvolume\tregions\tlabels\taligned\ttruth\n"
ANNOTATED = (
    "T22\tresults/demo/T22/volume.tif\tresults/demo/T22/regions.csv\t"
    "results/demo/T22/labels.tif\tfalse\tresults/demo/T22/truth.tif\n"
)
PREDICT_ONLY = "T45\tresults/demo/T45/volume.tif\t\t\tfalse\t\n"


def test_the_unet_fine_tunes_the_prior_scores_and_is_reused_voxel_for_voxel(tmp_path):
    first = write_project(
        tmp_path / "first", {**SETTINGS, "demo": TINY_DEMO}, HEADER + ANNOTATED + PREDICT_ONLY
    )
    run_snakemake(first)
    results = first / "results"
    params = json.loads((results / "train/nxy32_nz3/seed0/params.json").read_text())
    assert params["architecture"] == "unet" and params["n_xy"] == 32
    shipped = PRIOR_FOLDER / "model.keras"
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert params["init"] == {"model": str(shipped), "sha256": digest}
    model = load_model(str(results / "model/best.keras"))
    assert model.name.startswith("fibseg_unet") and model.input_shape == (None, None, None, 3)
    # the stitched chunks (slices 0-3, 4-5) are the engine's scores of whole slices
    with h5py.File(results / "T45/scores.h5") as handle:
        scores = handle["scores"][:]
    with h5py.File(results / "T45/preprocessed.h5") as handle:  # what the network sees
        volume = handle["volume"][:]
    mirrored = np.concatenate([volume[1:2], volume, volume[-2:-1]])  # z mirrored at the ends
    engine = UnetEngine(model, tile=4096)
    for z in (0, 4, 5):
        np.testing.assert_allclose(scores[z], engine.scores(mirrored[z : z + 3]), atol=1e-5)
    for table in ("table2", "table3"):
        frame = pd.read_csv(results / f"tables/{table}.csv")
        assert {"cnn", "otsu"} <= set(frame.method) and set(frame.dataset) >= {"T22"}
    full = pd.read_csv(results / "tables/full_volume.csv")
    assert set(full.method) == {"cnn", "otsu"} and full.mIoU.between(0, 1).all()

    pretrained = {
        "model": str(results / "model/best.keras"),
        "postprocess": str(results / "postprocess.json"),
    }
    second = write_project(
        tmp_path / "second",
        {**SETTINGS, "demo": {"T45": TINY_DEMO["T45"]}, "pretrained": pretrained},
        HEADER + PREDICT_ONLY,
    )
    jobs = planned_jobs(second)
    assert {"check_model", "predict_slices", "postprocess"} <= jobs
    assert not jobs & {"train", "sample", "split", "select_model", "optimize_postprocess"}
    run_snakemake(second)
    checked = json.loads((second / "results/pretrained/checked.json").read_text())
    assert [(c["n_z"], c["padding"]) for c in checked] == [(3, "unet")]
    np.testing.assert_array_equal(
        tifffile.imread(second / "results/T45/segmentation.tif"),
        tifffile.imread(results / "T45/segmentation.tif"),
    )
