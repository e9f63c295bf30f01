"""What each `training.patience` would have done to runs trained long: from the per-epoch
histories of the label-budget study (`*_histories.csv`, e.g. of `--epochs-unet 60
--patience 8`), for every patience up to the one the run used, the epoch at which the run
would have stopped, the epoch it would have kept (lowest validation loss so far) and that
epoch's validation loss and mIoU (the run's own patience gives the run's own best).

    python studies/patience.py results/patience/hard_histories.csv --steps-per-epoch 25

A patience p is exact here only up to the patience of the run itself: a run that stopped
after p' epochs without a lower val_loss says nothing of what a longer patience finds later.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fibseg.training.train import patience_exhausted

RUN_KEYS = ["data", "budget", "method", "seed"]


def stopped_under(history: pd.DataFrame, patience: int) -> dict[str, float]:
    """The epoch `train_run` would stop before with `patience`, and the epoch it keeps."""
    history = history.sort_values("epoch").reset_index(drop=True)
    for end in range(1, len(history) + 1):
        if patience_exhausted(history.iloc[:end], patience):
            break
    seen = history.iloc[:end]
    best = seen.loc[seen["val_loss"].idxmin()]
    return {
        "patience": patience,
        "epochs_run": end,
        "best_epoch": int(best["epoch"]),
        "val_loss": float(best["val_loss"]),
        "val_mIoU": float(best["val_mIoU"]),
    }


def patience_table(histories: pd.DataFrame, patiences: range, steps: int) -> pd.DataFrame:
    """One row per run and patience."""
    rows = []
    for keys, history in histories.groupby(RUN_KEYS, sort=False):
        for patience in patiences:
            row = dict(zip(RUN_KEYS, keys, strict=True)) | stopped_under(history, patience)
            rows.append(row | {"steps_run": row["epochs_run"] * steps})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("histories", nargs="+", type=Path, help="*_histories.csv files")
    parser.add_argument("--max-patience", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    args = parser.parse_args(argv)
    histories = pd.concat(map(pd.read_csv, args.histories), ignore_index=True)
    table = patience_table(histories, range(1, args.max_patience + 1), args.steps_per_epoch)
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))


if __name__ == "__main__":
    main()
