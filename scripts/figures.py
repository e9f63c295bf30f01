"""Rule figures: Figure 8 (one test region per data set) and Figure 9 (full slices)."""

import pandas as pd

from fibseg import figures
from fibseg.runtime import start_log

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
volumes = zip(
    snakemake.params.datasets,
    inputs.volumes,
    inputs.segmentations,
    inputs.volume_scores,
    strict=True,
)
figures.full_slices([figures.slice_row(*row) for row in volumes], snakemake.output.fig9)
log.info("figures written")
