"""A real snakemake run of a tiny training grid, from synthesis to model selection."""

import json

import h5py
import pandas as pd
import pytest
from helpers import (
    TINY_DEMO,
    demo_sheet_rows,
    edit_config,
    planned_jobs,
    run_snakemake,
    write_project,
)

pytestmark = pytest.mark.workflow

TINY_GRID = {
    "datasets": "config/datasets.tsv",
    "demo": TINY_DEMO,
    "grid": {"n_xy": [17], "n_z": [1, 3], "seeds": 1},
    "sampling": {"fraction": 0.1, "seed": 1},
    "training": {"epochs": 2, "batch_size": 64},
}


def test_tiny_grid_produces_every_file(tmp_path):
    project = write_project(tmp_path, TINY_GRID, demo_sheet_rows(list(TINY_DEMO)))
    run_snakemake(project, "results/selection/cells.csv")
    results = project / "results"
    for name in TINY_DEMO:
        with h5py.File(results / f"{name}/regions.h5") as handle:
            assert handle["crops"].shape == (10, 3, 24 + 2 * 24, 24 + 2 * 24)
            assert handle["labels"].shape == (10, 24, 24)
            # n_xy // 2 = 8, plus 16 for smoothing (4 x the largest sigma, 4)
            assert handle.attrs["margin_xy"] == 8 + 16 and handle.attrs["margin_z"] == 1
    split = pd.read_csv(results / "split.csv")
    assert split.groupby("dataset").split.value_counts().unstack().loc["T22"].to_dict() == {
        "test": 2,
        "train": 6,
        "val": 2,
    }
    train = pd.read_csv(results / "samples/train.csv")
    assert (train.label == 0).sum() == (train.label == 1).sum()
    assert len(train) == 2 * (round(0.1 * 2 * 6 * 24 * 24) // 2)
    for n_z in (1, 3):
        run = results / f"train/nxy17_nz{n_z}/seed0"
        assert {p.name for p in run.iterdir()} == {"model.keras", "history.csv", "params.json"}
        assert len(pd.read_csv(run / "history.csv")) == 2
    cells = pd.read_csv(results / "selection/cells.csv")
    assert sorted(cells.n_z) == [1, 3]
    best = json.loads((results / "selection/best.json").read_text())
    assert best["val_loss"] == cells.val_loss.min()
    assert (results / "model/best.keras").stat().st_size > 0
    for figure in ("fig3_val_loss", "fig4_val_miou", "fig5_train_time", "fig6_learning_curves"):
        assert (results / f"figures/{figure}.png").stat().st_size > 1000

    # Nothing is left to do; a changed training setting retrains (Snakemake records only
    # params of plain types, so the settings travel as dicts), an unrelated one does not.
    target = "results/selection/cells.csv"
    assert planned_jobs(project, target) == set()
    edit_config(project, **{"postprocess.min_object_voxels": 5})
    assert planned_jobs(project, target) == set()
    edit_config(project, **{"training.optimizer": "adam"})
    assert {"train", "select_model"} <= planned_jobs(project, target)
