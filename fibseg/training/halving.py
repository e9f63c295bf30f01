"""Successive halving of the training grid (`grid.search.strategy: halving`).

Within each (n_xy, n_z) cell, rung 0 trains every seed up to the first rung's epoch. After
each rung a `promote` job ranks that rung's runs by their lowest validation loss so far and
writes the survivors into a fixed number of slots; each slot of the next rung resumes its
run from the committed state of the previous rung (weights, optimiser state and history)
and trains it on to the next rung's epoch. The slot counts are fixed in advance, so the DAG
is static: Snakemake plans every rung at once.

Rung 0 keeps the paths of the full grid, `results/train/nxy{n}_nz{m}/seed{s}/`; rung r >= 1
writes `results/train/nxy{n}_nz{m}/rung{r}/slot{k}/` and its promotion list
`results/train/nxy{n}_nz{m}/rung{r}/promoted.json`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..io.errors import LimitError
from .train import RANDOM_STATE

TRAIN_ROOT = "results/train"


@dataclass(frozen=True)
class GridPlan:
    """How many runs each rung of a cell trains, and up to which epoch.

    `strategy: full` is one rung: every seed for every epoch (the paper's grid)."""

    seeds: int
    rung_epochs: tuple[int, ...]
    keep: float = 1.0

    @classmethod
    def from_config(cls, grid: dict, epochs: int) -> GridPlan:
        """From the config's `grid` section and `training.epochs`."""
        search = grid.get("search", {})
        if search.get("strategy", "full") == "full":
            return cls(grid["seeds"], (epochs,))
        return cls(grid["seeds"], tuple(search["rungs"]), search["keep"])

    @property
    def halving(self) -> bool:
        return len(self.rung_epochs) > 1

    @property
    def slots(self) -> tuple[int, ...]:
        """Runs per cell in each rung: all seeds, then ceil(seeds x keep^r)."""
        return tuple(
            max(1, math.ceil(self.seeds * self.keep**rung - 1e-9))
            for rung in range(len(self.rung_epochs))
        )

    @property
    def last_rung(self) -> int:
        return len(self.rung_epochs) - 1

    def epochs_in_rung(self, rung: int) -> int:
        """Epochs each run of `rung` trains (from the previous rung's end to its own)."""
        start = self.rung_epochs[rung - 1] if rung else 0
        return self.rung_epochs[rung] - start

    def run_epochs(self) -> int:
        """Epochs trained in one cell, over all rungs."""
        return sum(slots * self.epochs_in_rung(rung) for rung, slots in enumerate(self.slots))


def check_search(search: dict, epochs: int, seeds: int) -> None:
    """The rungs must rise strictly and end at `training.epochs`; every rung must prune."""
    if search.get("strategy", "full") == "full":
        return
    rungs = search.get("rungs", [])
    if len(rungs) < 2:
        raise LimitError(
            f"has {len(rungs)} rung(s); successive halving needs at least two.",
            "give the epoch at which each rung ends, e.g. rungs: [4, 12, 40], or use "
            "strategy: full.",
            "grid.search.rungs",
        )
    if any(b <= a for a, b in zip(rungs, rungs[1:], strict=False)) or rungs[-1] != epochs:
        raise LimitError(
            f"{rungs} must rise strictly and end at training.epochs ({epochs}).",
            f"list the end epoch of each rung, the last one {epochs}.",
            "grid.search.rungs",
        )
    plan = GridPlan(seeds, tuple(rungs), search["keep"])
    if plan.slots[1] >= seeds:
        raise LimitError(
            f"keep {search['keep']} of {seeds} seeds prunes nothing after rung 0.",
            "lower grid.search.keep (0.5 halves, 0.25 quarters) or train more seeds.",
            "grid.search.keep",
        )


def run_dir(n_xy: int, n_z: int, rung: int, slot: int) -> str:
    """The directory of one run of one rung (rung 0: the seed's own directory)."""
    cell = f"{TRAIN_ROOT}/nxy{n_xy}_nz{n_z}"
    return f"{cell}/seed{slot}" if rung == 0 else f"{cell}/rung{rung}/slot{slot}"


def all_run_dirs(plan: GridPlan, cells: list[tuple[int, int]]) -> list[str]:
    """Every run directory the plan trains, rung by rung."""
    return [
        run_dir(n_xy, n_z, rung, slot)
        for rung, slots in enumerate(plan.slots)
        for n_xy, n_z in cells
        for slot in range(slots)
    ]


def read_run(directory: str | os.PathLike) -> dict:
    """The seed, rung, last epoch and lowest validation loss of one finished run."""
    directory = Path(directory)
    params = json.loads((directory / "params.json").read_text())
    history = pd.read_csv(directory / "history.csv")
    return {
        "run_dir": str(directory),
        "seed": int(params["seed"]),
        "rung": int(params.get("rung", 0)),
        "last_epoch": int(history["epoch"].max()),
        "best_val_loss": float(history["val_loss"].min()),
    }


def ranked(runs: list[dict]) -> list[dict]:
    """Runs from the lowest validation loss so far (`best_val_loss`) up; ties: lower seed."""
    return sorted(runs, key=lambda run: (run["best_val_loss"], run["seed"]))


def promote(previous_dirs: list[str], slots: int, rung: int) -> dict:
    """The `slots` runs of lowest validation loss so far (ties: the lower seed) go on to
    `rung`; the others are pruned. Slot k holds the k-th best."""
    runs = ranked([read_run(directory) for directory in previous_dirs])
    survivors = [{"slot": slot, **run} for slot, run in enumerate(runs[:slots])]
    return {"rung": rung, "slots": survivors, "pruned": runs[slots:]}


def continue_promoted(
    promotion_path: str | os.PathLike, slot: int, run_dir_: str | os.PathLike, log=None
) -> int:
    """Prepare slot `slot` of a rung to resume the run promoted into it; returns its seed."""
    promoted = json.loads(Path(promotion_path).read_text())["slots"][slot]
    fresh = continue_from(promoted["run_dir"], run_dir_)
    if log:
        how = "continues" if fresh else "resumes its own checkpoint of"
        log.info("slot %d %s seed %d from %s", slot, how, promoted["seed"], promoted["run_dir"])
    return int(promoted["seed"])


def continue_from(source_dir: str | os.PathLike, run_dir_: str | os.PathLike) -> bool:
    """Make `run_dir_` resume the finished run in `source_dir`: its final state (weights,
    optimiser and dropout generators), best model and history become the run's first
    committed checkpoint, from which fibseg.training.train resumes.

    A checkpoint already there that continues the same source is kept, so a killed rung
    resumes where it stopped; one left by another source (a re-run promotion) is dropped.
    Returns whether the run was (re)started from the source."""
    source, target = Path(source_dir), Path(run_dir_)
    checkpoints = target / "checkpoint"
    origin_file = target / "continues.json"
    history = pd.read_csv(source / "history.csv")
    origin = {"source": str(source), "source_epochs": int(history["epoch"].max()) + 1}
    if origin_file.is_file() and json.loads(origin_file.read_text()) == origin:
        if any(checkpoints.glob("epoch_[0-9][0-9][0-9][0-9]")):
            return False
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True)
    staging = checkpoints / ".seed.partial"
    staging.mkdir()
    shutil.copyfile(source / "last.keras", staging / "last.keras")
    shutil.copyfile(source / "model.keras", staging / "best.keras")
    shutil.copyfile(source / "history.csv", staging / "history.csv")
    params = json.loads((source / "params.json").read_text())
    if "random_state" in params:  # the dropout generators' state (fibseg.training.train)
        (staging / RANDOM_STATE).write_text(json.dumps(params["random_state"]))
    os.replace(staging, checkpoints / f"epoch_{origin['source_epochs'] - 1:04d}")
    origin_file.write_text(json.dumps(origin))
    return True


def final_runs(run_dirs: list[str]) -> pd.DataFrame:
    """One row per (cell, seed): the directory of the furthest rung it reached (its history
    holds every epoch it trained), and whether it was pruned before the last rung."""
    rows = []
    for directory in run_dirs:
        params = json.loads((Path(directory) / "params.json").read_text())
        rows.append(
            {
                "n_xy": params["n_xy"],
                "n_z": params["n_z"],
                "seed": params["seed"],
                "rung": int(params.get("rung", 0)),
                "run_dir": str(directory),
            }
        )
    runs = pd.DataFrame(rows)
    furthest = runs.loc[runs.groupby(["n_xy", "n_z", "seed"])["rung"].idxmax()]
    furthest = furthest.assign(pruned=furthest["rung"] < runs["rung"].max())
    return furthest.sort_values(["n_z", "n_xy", "seed"], ignore_index=True)
