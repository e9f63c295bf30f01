"""A real successive-halving run: 1 cell, 4 seeds, 2 rungs; a killed rung-1 run resumes."""

import json
import os
import re
import signal

import pandas as pd
import pytest
from helpers import (
    TINY_DEMO,
    demo_sheet_rows,
    run_snakemake,
    start_snakemake,
    wait_for,
    write_project,
)

pytestmark = pytest.mark.workflow

HALVING = {
    "datasets": "config/datasets.tsv",
    "demo": TINY_DEMO,
    "grid": {
        "n_xy": [17],
        "n_z": [1],
        "seeds": 4,
        "search": {"strategy": "halving", "rungs": [2, 6], "keep": 0.5},
    },
    "sampling": {"fraction": 0.1, "seed": 1},
    "training": {"epochs": 6, "batch_size": 64},
}
CELL = "results/train/nxy17_nz1"


def test_halving_keeps_the_best_half_and_a_killed_rung_resumes(tmp_path):
    project = write_project(tmp_path, HALVING, demo_sheet_rows(list(TINY_DEMO)))
    run_snakemake(project, f"{CELL}/rung1/promoted.json")
    best_so_far = {
        seed: pd.read_csv(project / f"{CELL}/seed{seed}/history.csv")["val_loss"].min()
        for seed in range(4)
    }
    ranked = sorted(best_so_far, key=lambda seed: (best_so_far[seed], seed))
    promotion = json.loads((project / f"{CELL}/rung1/promoted.json").read_text())
    assert [run["seed"] for run in promotion["slots"]] == ranked[:2]
    assert sorted(run["seed"] for run in promotion["pruned"]) == sorted(ranked[2:])

    # kill rung 1's first slot after an epoch of its own (the seeded checkpoint is epoch 1)
    slot = project / f"{CELL}/rung1/slot0"
    process = start_snakemake(project, f"{CELL}/rung1/slot0/history.csv")
    wait_for(lambda: any((slot / "checkpoint").glob("epoch_000[2-4]")))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (slot / "model.keras").exists()
    run_snakemake(project, "--unlock")
    run_snakemake(project, "results/selection/cells.csv", "--rerun-incomplete")
    log = (project / "logs/train/nxy17_nz1_rung1_slot0.log").read_text()
    assert "resumes its own checkpoint" in log
    assert re.search(r"resuming after epoch [2-4]", log)

    for number, run in enumerate(promotion["slots"]):
        history = pd.read_csv(project / f"{CELL}/rung1/slot{number}/history.csv")
        assert history["epoch"].tolist() == list(range(6))  # each epoch exactly once
        rung0 = pd.read_csv(project / run["run_dir"] / "history.csv")
        pd.testing.assert_frame_equal(history.iloc[:2], rung0, check_dtype=False)
        params = json.loads((project / f"{CELL}/rung1/slot{number}/params.json").read_text())
        assert (params["seed"], params["rung"]) == (run["seed"], 1)
    cells = pd.read_csv(project / "results/selection/cells.csv")
    assert (cells.loc[0, "runs"], cells.loc[0, "pruned"]) == (4, 2)
    best = json.loads((project / "results/selection/best.json").read_text())
    assert best["run_dir"].startswith(f"{CELL}/rung1/slot") and best["seed"] in ranked[:2]
    assert (project / "results/figures/fig6_learning_curves.png").stat().st_size > 1000
