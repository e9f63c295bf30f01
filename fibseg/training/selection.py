"""Model selection of §3.7: per (n_xy, n_z) cell, the run and epoch of lowest validation loss."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..io.errors import LimitError
from .halving import final_runs


def collect_histories(run_dirs: list[str | Path]) -> pd.DataFrame:
    """Every epoch of every run, with its n_xy, n_z, seed, total training time and whether
    successive halving pruned it. Of a run trained over several rungs, only the furthest
    rung's directory counts (its history holds all the epochs)."""
    frames = []
    runs = final_runs([str(d) for d in run_dirs])
    for run_dir, pruned in zip(map(Path, runs["run_dir"]), runs["pruned"], strict=True):
        params = json.loads((run_dir / "params.json").read_text())
        history = pd.read_csv(run_dir / "history.csv")
        frames.append(
            history.assign(
                n_xy=params["n_xy"],
                n_z=params["n_z"],
                seed=params["seed"],
                run_dir=str(run_dir),
                run_seconds=params["train_seconds_total"],
                pruned=bool(pruned),
            )
        )
    return pd.concat(frames, ignore_index=True)


def select_cells(histories: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the (seed, epoch) of lowest val_loss, its metrics, the mean time of
    a run trained to the end, the runs trained and how many of them were pruned."""
    best = histories.loc[histories.groupby(["n_xy", "n_z"])["val_loss"].idxmin()]
    runs = histories.drop_duplicates("run_dir")
    completed = runs[~runs["pruned"]].groupby(["n_xy", "n_z"])["run_seconds"]
    timing = runs.groupby(["n_xy", "n_z"]).agg(
        runs=("run_seconds", "count"),
        pruned=("pruned", "sum"),
        cell_train_seconds=("run_seconds", "sum"),
    )
    timing.insert(0, "mean_train_seconds", completed.mean())
    cells = best.set_index(["n_xy", "n_z"])[
        ["seed", "epoch", "val_loss", "val_accuracy", "val_mIoU", "run_dir"]
    ].join(timing)
    return cells.reset_index().sort_values(["n_z", "n_xy"], ignore_index=True)


def best_cell(cells: pd.DataFrame) -> dict:
    """The overall best model: lowest validation loss over all cells."""
    row = cells.loc[cells["val_loss"].idxmin()]
    return {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}


def check_ensemble_size(top_k: int, runs: int) -> None:
    """An ensemble cannot have more members than the grid has runs."""
    if top_k > runs:
        raise LimitError(
            f"asks for {top_k} members but the grid trains only {runs} runs.",
            f"set ensemble.top_k <= {runs} or train more seeds (grid.seeds).",
            "ensemble.top_k",
        )


def top_runs(histories: pd.DataFrame, k: int) -> list[str]:
    """Run directories of the k runs of lowest validation loss over all cells, best first
    (the ensemble); ties go to the earlier run."""
    per_run = histories.groupby("run_dir", sort=False)["val_loss"].min()
    return list(per_run.sort_values(kind="stable").index[:k])


def select_model(run_dirs: list[str], top_k: int = 1) -> tuple[pd.DataFrame, dict, list[str]]:
    """The best run of each cell, the overall best, and the run directories of the ensemble
    (the best run first)."""
    return select_from_histories(collect_histories(run_dirs), top_k)


def select_from_histories(
    histories: pd.DataFrame, top_k: int = 1
) -> tuple[pd.DataFrame, dict, list[str]]:
    """`select_model` on histories already collected (`collect_histories`)."""
    cells = select_cells(histories)
    best = best_cell(cells)
    members = top_runs(histories, top_k)
    if members[0] != best["run_dir"]:
        members = [best["run_dir"], *[m for m in members if m != best["run_dir"]]][:top_k]
    return cells, best, members
