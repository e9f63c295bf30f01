"""Rule evaluate_volume: whole-volume agreement with the ground truth (the demo has one)."""

import pandas as pd

from fibseg.evaluation.evaluate import volume_rows
from fibseg.io.writers import write_csv
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
segmentations = {"cnn": snakemake.input.segmentations}
if snakemake.input.forest_segmentations:
    segmentations["rf"] = snakemake.input.forest_segmentations
rows = volume_rows(
    snakemake.params.datasets, snakemake.params.truths, segmentations, snakemake.input.volumes
)
write_csv(snakemake.output[0], pd.DataFrame(rows))
log.info("\n%s", pd.DataFrame(rows).to_string(index=False))
