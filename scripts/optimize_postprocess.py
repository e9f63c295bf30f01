"""Rule optimize_postprocess: sigma and T of highest mIoU on the validation regions only."""

import json

import pandas as pd

from fibseg.evaluate import read_scores
from fibseg.io import atomic_output, write_csv
from fibseg.postprocess import optimize
from fibseg.regions import RegionSet
from fibseg.runtime import start_log
from fibseg.sampling import regions_in

log = start_log(snakemake.log[0])
settings = snakemake.params.postprocess
split = pd.read_csv(snakemake.input.split)
windows, labels, margins = [], [], set()
for scores_path, regions_path in zip(snakemake.input.scores, snakemake.input.regions, strict=True):
    regions = RegionSet.read(regions_path, crops=False)
    scores, margin = read_scores(scores_path)
    margins.add(margin)
    for index in regions_in(split, regions.dataset, "val"):
        windows.append(scores[index])
        labels.append(regions.labels[index])
best, trials = optimize(
    windows,
    labels,
    margins.pop(),
    settings["sigma_grid"],
    settings["threshold_grid"],
    settings["min_object_voxels"],
)
best = {**best, "min_object_voxels": settings["min_object_voxels"], "val_regions": len(windows)}
with atomic_output(snakemake.output.params) as tmp:
    tmp.write_text(json.dumps(best, indent=2))
write_csv(snakemake.output.trials, pd.DataFrame(trials))
log.info("best on %d validation regions: %s", len(windows), best)
