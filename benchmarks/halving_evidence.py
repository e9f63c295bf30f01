"""Does successive halving keep the winner? Evidence from one cell trained to the end.

Reads the runs of one (n_xy, n_z) cell of the full grid (results/train/nxy{n}_nz{m}/seed*/),
each trained for every epoch, and reports:
- the Spearman rank correlation between each seed's lowest validation loss up to epoch e
  (what `promote` ranks by) and its lowest over the whole run (what `select_model` ranks by);
- for halving plans, replayed on these curves (`simulate`): the seeds each rung keeps,
  whether the final best seed survives, the best seed it does keep (its rank among all
  seeds, its lowest validation loss against the winner's), and the epochs trained as a share
  of the full grid's.

    python benchmarks/halving_evidence.py results/train/nxy81_nz1
    python benchmarks/halving_evidence.py results/train/nxy81_nz1 --plans 4,12,40:0.25 2,40:0.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fibseg.training.halving import GridPlan, ranked  # noqa: E402


def simulate(histories: dict[int, pd.DataFrame], plan: GridPlan) -> list[list[int]]:
    """The seeds that each rung of `plan` would train, replayed on learning curves of runs
    trained to the end (one cell; seed -> history with epoch and val_loss)."""
    alive = sorted(histories)
    rungs = [alive]
    for rung in range(1, len(plan.rung_epochs)):
        end = plan.rung_epochs[rung - 1]
        so_far = [
            {"seed": seed, "best_val_loss": float(h.loc[h["epoch"] < end, "val_loss"].min())}
            for seed, h in histories.items()
            if seed in alive
        ]
        alive = [run["seed"] for run in ranked(so_far)[: plan.slots[rung]]]
        rungs.append(alive)
    return rungs


def read_cell(cell: Path) -> dict[int, pd.DataFrame]:
    runs = sorted(cell.glob("seed*/history.csv"), key=lambda p: int(p.parent.name[4:]))
    if not runs:
        raise SystemExit(f"no seed*/history.csv under {cell}")
    return {int(path.parent.name[4:]): pd.read_csv(path) for path in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cell", type=Path, help="a cell's directory of a full-grid run")
    parser.add_argument(
        "--plans",
        nargs="+",
        default=["4,12,40:0.25", "4,40:0.25", "2,8,40:0.5", "8,40:0.5", "4,12,40:0.5"],
        help="halving plans, rungs:keep (the last rung = the epochs trained)",
    )
    args = parser.parse_args()
    histories = read_cell(args.cell)
    epochs = min(int(h["epoch"].max()) + 1 for h in histories.values())
    final = {seed: h["val_loss"].min() for seed, h in histories.items()}
    winner = min(final, key=lambda seed: (final[seed], seed))
    print(f"{args.cell}: {len(histories)} seeds, {epochs} epochs; final best seed {winner}")
    print(
        "lowest val_loss per seed: "
        + ", ".join(f"{s}: {v:.4f}" for s, v in sorted(final.items(), key=lambda i: i[1]))
    )

    print("\nrank correlation, lowest val_loss up to epoch e against over the whole run")
    print(f"{'e':>4} {'Spearman':>9} {'best at e is final best':>24}")
    for end in (1, 2, 4, 8, 12, 20, 30):
        if end >= epochs:
            continue
        early = {s: h.loc[h["epoch"] < end, "val_loss"].min() for s, h in histories.items()}
        rho = spearmanr([early[s] for s in final], [final[s] for s in final]).statistic
        leader = min(early, key=lambda seed: (early[seed], seed))
        print(f"{end:>4} {rho:>9.3f} {str(leader == winner):>24}")

    print("\nhalving replayed on these curves")
    print(
        f"{'plan (rungs:keep)':>18} {'runs per rung':>16} {'kept winner':>12} "
        f"{'best kept (rank)':>17} {'loss vs winner':>15} {'epochs':>7}"
    )
    order = sorted(final, key=lambda seed: (final[seed], seed))
    for text in args.plans:
        rungs, keep = text.split(":")
        plan = GridPlan(len(histories), tuple(int(r) for r in rungs.split(",")), float(keep))
        if plan.rung_epochs[-1] != epochs:
            plan = GridPlan(plan.seeds, (*plan.rung_epochs[:-1], epochs), plan.keep)
        kept = simulate(histories, plan)
        share = plan.run_epochs() / (len(histories) * epochs)
        best_kept = min(kept[-1], key=lambda seed: (final[seed], seed))
        print(
            f"{text:>18} {'/'.join(map(str, plan.slots)):>16} "
            f"{str(winner in kept[-1]):>12} {best_kept:>11} ({order.index(best_kept) + 1:>2}) "
            f"{final[best_kept] / final[winner] - 1:>+15.2%} {share:>7.2f}"
        )
        print(f"{'':>18} seeds per rung: {kept}")


if __name__ == "__main__":
    main()
