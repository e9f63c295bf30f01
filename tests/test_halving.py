"""Successive halving: slot counts, promotion, the runs that selection sees, config errors."""

import json

import numpy as np
import pandas as pd
import pytest

from fibseg.io.errors import LimitError
from fibseg.training.halving import (
    GridPlan,
    all_run_dirs,
    check_search,
    continue_from,
    final_runs,
    promote,
    run_dir,
)
from fibseg.training.selection import collect_histories, select_cells


def test_slots_and_epochs_of_the_paper_grid_with_quartering():
    plan = GridPlan(100, (4, 12, 40), 0.25)
    assert plan.slots == (100, 25, 7)  # ceil(100 / 16) = 7
    assert [plan.epochs_in_rung(r) for r in range(3)] == [4, 8, 28]
    assert plan.run_epochs() == 100 * 4 + 25 * 8 + 7 * 28  # 796, against 4,000 in full
    assert GridPlan(100, (40,)).run_epochs() == 4000 and not GridPlan(100, (40,)).halving
    assert GridPlan(4, (1, 3), 0.5).slots == (4, 2)
    assert GridPlan(3, (1, 2, 3), 0.5).slots == (3, 2, 1)  # ceil(1.5), ceil(0.75)


def test_full_strategy_is_the_paper_grid():
    plan = GridPlan.from_config({"seeds": 3, "search": {"strategy": "full"}}, 40)
    assert plan.rung_epochs == (40,) and plan.slots == (3,)
    assert all_run_dirs(plan, [(33, 1)]) == [f"results/train/nxy33_nz1/seed{s}" for s in range(3)]


def test_run_dirs_of_every_rung():
    plan = GridPlan(4, (1, 3), 0.5)
    assert all_run_dirs(plan, [(17, 1), (17, 3)]) == [
        *[f"results/train/nxy17_nz{z}/seed{s}" for z in (1, 3) for s in range(4)],
        *[f"results/train/nxy17_nz{z}/rung1/slot{s}" for z in (1, 3) for s in range(2)],
    ]
    assert run_dir(17, 3, 2, 1) == "results/train/nxy17_nz3/rung2/slot1"


@pytest.mark.parametrize(
    ("search", "key"),
    [
        ({"strategy": "halving", "rungs": [40], "keep": 0.5}, "rungs"),
        ({"strategy": "halving", "rungs": [12, 4, 40], "keep": 0.5}, "rungs"),
        ({"strategy": "halving", "rungs": [4, 12, 30], "keep": 0.5}, "rungs"),
        ({"strategy": "halving", "rungs": [4, 40], "keep": 0.95}, "keep"),  # ceil(9.5) = 10
    ],
)
def test_bad_rungs_are_refused_naming_the_key(search, key):
    with pytest.raises(LimitError) as error:
        check_search(search, 40, 10 if key == "keep" else 100)
    assert error.value.key == f"grid.search.{key}"
    check_search({"strategy": "full", "rungs": [1], "keep": 0.9}, 40, 100)  # ignored when full


def write_run(directory, seed, val_losses, rung=0, n_xy=17, n_z=1, start=0):
    directory.mkdir(parents=True, exist_ok=True)
    epochs = range(start, start + len(val_losses))
    pd.DataFrame(
        {
            "epoch": list(epochs),
            "loss": 0.5,
            "val_loss": val_losses,
            "val_accuracy": 0.9,
            "val_mIoU": 0.8,
            "seconds": 2.0,
        }
    ).to_csv(directory / "history.csv", index=False)
    params = {
        "n_xy": n_xy,
        "n_z": n_z,
        "seed": seed,
        "rung": rung,
        "train_seconds_total": 2.0 * len(val_losses),
    }
    (directory / "params.json").write_text(json.dumps(params))
    return str(directory)


def test_promote_keeps_the_lowest_validation_loss_so_far_ties_to_the_lower_seed(tmp_path):
    runs = [
        write_run(tmp_path / "seed0", 0, [0.6, 0.5]),  # best 0.5
        write_run(tmp_path / "seed1", 1, [0.4, 0.7]),  # best 0.4, though it ends worse
        write_run(tmp_path / "seed2", 2, [0.9, 0.5]),  # ties seed 0, loses on seed
        write_run(tmp_path / "seed3", 3, [0.8, 0.8]),
    ]
    promotion = promote(runs, 2, 1)
    assert [(s["slot"], s["seed"]) for s in promotion["slots"]] == [(0, 1), (1, 0)]
    assert [p["seed"] for p in promotion["pruned"]] == [2, 3]
    assert promotion["slots"][0]["run_dir"] == runs[1]
    assert promotion["slots"][1]["best_val_loss"] == 0.5


def test_selection_sees_each_seed_once_at_its_furthest_rung(tmp_path):
    cell = tmp_path / "nxy17_nz1"
    rung0 = [write_run(cell / f"seed{s}", s, [0.9 - 0.1 * s]) for s in range(4)]
    # seeds 3 and 2 were promoted into slots 0 and 1 and trained on for two epochs
    rung1 = [
        write_run(cell / "rung1/slot0", 3, [0.6, 0.55, 0.3], rung=1),
        write_run(cell / "rung1/slot1", 2, [0.7, 0.5, 0.45], rung=1),
    ]
    runs = final_runs(rung0 + rung1)
    assert runs["seed"].tolist() == [0, 1, 2, 3]
    assert runs["run_dir"].tolist() == [rung0[0], rung0[1], rung1[1], rung1[0]]
    assert runs["pruned"].tolist() == [True, True, False, False]
    histories = collect_histories(rung0 + rung1)
    assert len(histories) == 1 + 1 + 3 + 3  # each seed's epochs once
    cells = select_cells(histories)
    row = cells.iloc[0]
    assert (row.seed, row.epoch, row.val_loss) == (3, 2, 0.3)
    assert (row.runs, row.pruned) == (4, 2)
    assert row.mean_train_seconds == 6.0  # the completed runs only
    assert row.cell_train_seconds == 2.0 + 2.0 + 6.0 + 6.0


def test_continue_from_seeds_a_checkpoint_and_keeps_its_own_on_a_rerun(tmp_path):
    source = tmp_path / "seed0"
    write_run(source, 0, [0.5, 0.4, 0.3])
    for name in ("last.keras", "model.keras"):
        (source / name).write_bytes(name.encode())
    target = tmp_path / "rung1/slot0"
    assert continue_from(source, target)
    seeded = target / "checkpoint/epoch_0002"
    assert (seeded / "last.keras").read_bytes() == b"last.keras"
    assert (seeded / "best.keras").read_bytes() == b"model.keras"
    # a killed rung leaves its own later checkpoint: the re-run keeps it
    seeded.rename(target / "checkpoint/epoch_0004")
    assert not continue_from(source, target)
    assert (target / "checkpoint/epoch_0004").is_dir()
    # a different promotion (another source) starts over from the new source
    other = tmp_path / "seed1"
    write_run(other, 1, [0.2, 0.1, 0.1])
    for name in ("last.keras", "model.keras"):
        (other / name).write_bytes(b"other")
    assert continue_from(other, target)
    assert [p.name for p in (target / "checkpoint").iterdir()] == ["epoch_0002"]
    assert (target / "checkpoint/epoch_0002/last.keras").read_bytes() == b"other"
    np.testing.assert_array_equal(
        pd.read_csv(target / "checkpoint/epoch_0002/history.csv")["val_loss"], [0.2, 0.1, 0.1]
    )


def test_simulate_replays_the_rungs_on_full_learning_curves():
    """benchmarks/halving_evidence.py replays halving plans on curves trained to the end."""
    from benchmarks.halving_evidence import simulate

    curves = {  # seed -> val_loss per epoch (6 epochs)
        0: [0.9, 0.8, 0.7, 0.6, 0.5, 0.1],  # slow starter: the final best
        1: [0.5, 0.4, 0.4, 0.4, 0.4, 0.4],
        2: [0.6, 0.3, 0.3, 0.3, 0.3, 0.3],
        3: [0.7, 0.6, 0.2, 0.2, 0.2, 0.2],
    }
    histories = {
        seed: pd.DataFrame({"epoch": range(6), "val_loss": losses})
        for seed, losses in curves.items()
    }
    # after epoch 1 (index 0) the best two so far are 1 and 2; after epoch 3, of those, 2
    assert simulate(histories, GridPlan(4, (1, 3, 6), 0.5)) == [[0, 1, 2, 3], [1, 2], [2]]
    # rung 0 to epoch 3: 3 (0.2) and 2 (0.3) go on; the slow starter is pruned
    assert simulate(histories, GridPlan(4, (3, 6), 0.5)) == [[0, 1, 2, 3], [3, 2]]
    assert simulate(histories, GridPlan(4, (6,))) == [[0, 1, 2, 3]]
