"""Rule select_model: best run per cell, the overall best model, Figures 3-6."""

import json
import shutil

import pandas as pd

from fibseg import figures
from fibseg.io import atomic_output, write_csv
from fibseg.runtime import start_log
from fibseg.selection import best_cell, collect_histories, select_cells

log = start_log(snakemake.log[0])
run_dirs = sorted({p.rsplit("/", 1)[0] for p in snakemake.input.params})
histories = collect_histories(run_dirs)
cells = select_cells(histories)
best = best_cell(cells)
write_csv(snakemake.output.cells, cells)
with atomic_output(snakemake.output.best) as tmp:
    tmp.write_text(json.dumps(best, indent=2))
with atomic_output(snakemake.output.model) as tmp:
    shutil.copyfile(f"{best['run_dir']}/model.keras", tmp)
out = snakemake.output
figures.per_cell(cells, "val_loss", "validation loss", "Figure 3", out.fig3)
figures.per_cell(cells, "val_mIoU", "validation mIoU", "Figure 4", out.fig4)
figures.per_cell(cells, "mean_train_seconds", "mean training time (s)", "Figure 5", out.fig5)
figures.learning_curves(
    pd.read_csv(f"{best['run_dir']}/history.csv"),
    f"Figure 6: n_xy={best['n_xy']}, n_z={best['n_z']}, seed={best['seed']}",
    out.fig6,
)
log.info("best: %s", best)
