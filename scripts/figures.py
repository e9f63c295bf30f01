"""Rule figures: Figure 8 (one test region per data set) and Figure 9 (full slices)."""

import json

import pandas as pd

from fibseg import figures
from fibseg.evaluate import read_scores
from fibseg.regions import RegionSet
from fibseg.runtime import start_log

log = start_log(snakemake.log[0])
chosen = json.loads(open(snakemake.input.postprocess).read())
split = pd.read_csv(snakemake.input.split)
inputs = snakemake.input
region_rows = [
    figures.region_row(RegionSet.read(regions), *read_scores(scores), chosen, split)
    for scores, regions in zip(inputs.scores, inputs.regions, strict=True)
]
figures.region_panels(region_rows, snakemake.output.fig8)
slice_rows = [
    figures.slice_row(*row)
    for row in zip(snakemake.params.datasets, inputs.volumes, inputs.segmentations, strict=True)
]
figures.full_slices(slice_rows, snakemake.output.fig9)
log.info("figures written")
