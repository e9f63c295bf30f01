"""Rule select_model: best run per cell, the overall best model and the ensemble, Figures 3-6."""

import json
import shutil

import pandas as pd

from fibseg.evaluation import figures
from fibseg.io.atomic import atomic_output
from fibseg.io.writers import write_csv
from fibseg.runtime.job import start_log
from fibseg.training.selection import collect_histories, select_from_histories

log = start_log(snakemake.log[0])
out = snakemake.output
histories = collect_histories(snakemake.params.run_dirs)
cells, best, members = select_from_histories(histories, len(out.members) + 1)
write_csv(out.cells, cells)
with atomic_output(out.best) as tmp:
    tmp.write_text(json.dumps(best | {"ensemble": members}, indent=2))
for run_dir, model in zip(members, [out.model, *out.members], strict=True):
    with atomic_output(model) as tmp:
        shutil.copyfile(f"{run_dir}/model.keras", tmp)
figures.per_cell(cells, "val_loss", "validation loss", "Figure 3", out.fig3)
figures.per_cell(cells, "val_mIoU", "validation mIoU", "Figure 4", out.fig4)
figures.per_cell(cells, "mean_train_seconds", "mean training time (s)", "Figure 5", out.fig5)
title = f"Figure 6: n_xy={best['n_xy']}, n_z={best['n_z']}, seed={best['seed']}"
cell_runs = histories[(histories.n_xy == best["n_xy"]) & (histories.n_z == best["n_z"])]
figures.learning_curves(
    pd.read_csv(f"{best['run_dir']}/history.csv"),
    title,
    out.fig6,
    cell_runs,
    snakemake.params.rung_epochs,
)
log.info("best: %s; ensemble: %s", best, members)
