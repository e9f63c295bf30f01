"""studies/patience.py: what each training.patience would have done to a long run, checked
against a history worked out by hand."""

import pandas as pd
import pytest

from studies.patience import patience_table

LOSSES = [0.5, 0.4, 0.45, 0.42, 0.41, 0.3]


def history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": range(len(LOSSES)),
            "val_loss": LOSSES,
            "val_mIoU": [0.6, 0.7, 0.65, 0.68, 0.69, 0.8],
            "data": "hard",
            "budget": "demo",
            "method": "unet_prior",
            "seed": 0,
        }
    )


@pytest.mark.parametrize(
    ("patience", "epochs_run", "best_epoch", "val_mIoU"),
    [(1, 3, 1, 0.7), (2, 4, 1, 0.7), (3, 5, 1, 0.7), (4, 6, 5, 0.8)],
)
def test_a_patience_stops_after_that_many_epochs_without_a_lower_val_loss(
    patience, epochs_run, best_epoch, val_mIoU
):
    """Best 0.4 at epoch 1; 0.45, 0.42, 0.41 do not beat it; 0.3 at epoch 5 does. Patience
    p stops after epoch 1 + p (keeping epoch 1) unless epoch 5 comes within it."""
    row = patience_table(history(), range(patience, patience + 1), steps=25).iloc[0]
    assert (row["epochs_run"], row["best_epoch"]) == (epochs_run, best_epoch)
    assert row["val_mIoU"] == val_mIoU and row["steps_run"] == 25 * epochs_run
