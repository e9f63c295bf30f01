"""Model selection of §3.7: per (n_xy, n_z) cell, the run and epoch of lowest validation loss."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def collect_histories(run_dirs: list[str | Path]) -> pd.DataFrame:
    """Every epoch of every run, with its n_xy, n_z, seed and total training time."""
    frames = []
    for run_dir in map(Path, run_dirs):
        params = json.loads((run_dir / "params.json").read_text())
        history = pd.read_csv(run_dir / "history.csv")
        frames.append(
            history.assign(
                n_xy=params["n_xy"],
                n_z=params["n_z"],
                seed=params["seed"],
                run_dir=str(run_dir),
                run_seconds=params["train_seconds_total"],
            )
        )
    return pd.concat(frames, ignore_index=True)


def select_cells(histories: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the (seed, epoch) of lowest val_loss, its metrics, the mean run time."""
    best = histories.loc[histories.groupby(["n_xy", "n_z"])["val_loss"].idxmin()]
    runs = histories.drop_duplicates("run_dir")
    timing = runs.groupby(["n_xy", "n_z"])["run_seconds"].agg(
        mean_train_seconds="mean", runs="count"
    )
    cells = best.set_index(["n_xy", "n_z"])[
        ["seed", "epoch", "val_loss", "val_accuracy", "val_mIoU", "run_dir"]
    ].join(timing)
    return cells.reset_index().sort_values(["n_z", "n_xy"], ignore_index=True)


def best_cell(cells: pd.DataFrame) -> dict:
    """The overall best model: lowest validation loss over all cells."""
    row = cells.loc[cells["val_loss"].idxmin()]
    return {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}


def select_model(run_dirs: list[str]) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """The best run of each cell, the overall best, and the history of the best run."""
    cells = select_cells(collect_histories(run_dirs))
    best = best_cell(cells)
    return cells, best, pd.read_csv(Path(best["run_dir"]) / "history.csv")
