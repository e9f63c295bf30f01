"""Rule figures: Figure 8, one test region per data set with its segmentations."""

import pandas as pd

from fibseg.evaluation import figures
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
inputs = snakemake.input
figures.figure8(
    inputs.regions,
    inputs.scores,
    inputs.postprocess,
    pd.read_csv(inputs.split),
    inputs.forest_scores,
    inputs.forest_postprocess[0] if inputs.forest_postprocess else None,
    snakemake.output.fig8,
)
log.info("figure 8 written")
