"""Rule import_published: the paper's released crops and masks as a regions.h5."""

from fibseg.annotation.published import import_published
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
margins = snakemake.params.margins
regions = import_published(
    snakemake.wildcards.ds,
    snakemake.input.regions,
    snakemake.input.masks,
    snakemake.input.split or None,
    margins["xy"],
    margins["z"],
    smooth_margin=margins["smooth"],
)
regions.write(snakemake.output[0])
log.info("imported %d regions, crops %s", len(regions.table), regions.crops.shape)
