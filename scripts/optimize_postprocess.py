"""Rule optimize_postprocess: sigma and T chosen on the validation regions only (by the
config's postprocess.criterion: the highest mIoU by default)."""

import json

import pandas as pd

from fibseg.annotation.regions import RegionSet
from fibseg.evaluation.evaluate import read_scores, split_windows
from fibseg.evaluation.postprocess import optimize
from fibseg.io.atomic import atomic_output
from fibseg.io.writers import write_csv
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
grid = snakemake.params.postprocess
region_sets = [RegionSet.read(path, crops=False) for path in snakemake.input.regions]
scores = [read_scores(path) for path in snakemake.input.scores]
split = pd.read_csv(snakemake.input.split)
windows, labels, margin = split_windows(scores, region_sets, split, "val")
best, trials = optimize(
    windows,
    labels,
    margin,
    grid["sigma_grid"],
    grid["threshold_grid"],
    grid["min_object_voxels"],
    grid["criterion"],
)
best = {**best, "min_object_voxels": grid["min_object_voxels"], "val_regions": len(windows)}
with atomic_output(snakemake.output.params) as tmp:
    tmp.write_text(json.dumps(best, indent=2))
write_csv(snakemake.output.trials, pd.DataFrame(trials))
log.info("best on %d validation regions: %s", len(windows), best)
