"""The training grid of a run: its (n_xy, n_z) cells, the seeds of each, and the rungs of
successive halving (fibseg/training/halving.py) with the directories of their runs."""

from __future__ import annotations

from dataclasses import dataclass

from ..training import halving


@dataclass(frozen=True)
class Grid:
    """The training grid: n_xy x n_z cells of `seeds` runs each, trained in the `rungs` of
    successive halving (one rung: the full grid; fibseg/training/halving.py)."""

    n_xy: list[int]
    n_z: list[int]
    seeds: int
    rungs: halving.GridPlan

    @property
    def cells(self) -> list[tuple[int, int]]:
        return [(n_xy, n_z) for n_z in self.n_z for n_xy in self.n_xy]

    @property
    def run_dirs(self) -> list[str]:
        """Every run of every rung."""
        return halving.all_run_dirs(self.rungs, self.cells)

    def previous_runs(self, n_xy: int, n_z: int, rung: int) -> list[str]:
        """The runs of the rung before `rung` in this cell, that rule promote ranks."""
        slots = self.rungs.slots[rung - 1]
        return [halving.run_dir(n_xy, n_z, rung - 1, slot) for slot in range(slots)]

    def describe(self) -> str:
        """The rungs, as the workflow logs them when it halves."""
        rungs = zip(self.rungs.slots, self.rungs.rung_epochs, strict=True)
        return (
            "successive halving, per cell: "
            + "; ".join(
                f"rung {rung}: {slots} run(s) to epoch {end}"
                for rung, (slots, end) in enumerate(rungs)
            )
            + f"; {len(self.cells)} cell(s)"
        )
