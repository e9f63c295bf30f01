"""Rule select_model: best run per cell, the overall best model, Figures 3-6."""

import json
import shutil

from fibseg import figures
from fibseg.io import atomic_output, write_csv
from fibseg.runtime import start_log
from fibseg.selection import select_model

log = start_log(snakemake.log[0])
out = snakemake.output
cells, best, history = select_model(snakemake.params.run_dirs)
write_csv(out.cells, cells)
with atomic_output(out.best) as tmp:
    tmp.write_text(json.dumps(best, indent=2))
with atomic_output(out.model) as tmp:
    shutil.copyfile(f"{best['run_dir']}/model.keras", tmp)
figures.per_cell(cells, "val_loss", "validation loss", "Figure 3", out.fig3)
figures.per_cell(cells, "val_mIoU", "validation mIoU", "Figure 4", out.fig4)
figures.per_cell(cells, "mean_train_seconds", "mean training time (s)", "Figure 5", out.fig5)
title = f"Figure 6: n_xy={best['n_xy']}, n_z={best['n_z']}, seed={best['seed']}"
figures.learning_curves(history, title, out.fig6)
log.info("best: %s", best)
