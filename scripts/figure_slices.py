"""Rule figure_slices: Figure 9, a full slice of every data set (predict-only ones too), its
segmentation and its uncertainty."""

from fibseg.evaluation import figures
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
inputs = snakemake.input
volumes = zip(
    snakemake.params.datasets,
    inputs.volumes,
    inputs.segmentations,
    inputs.volume_scores,
    strict=True,
)
figures.full_slices([figures.slice_row(*row) for row in volumes], snakemake.output.fig9)
log.info("figure 9 written")
