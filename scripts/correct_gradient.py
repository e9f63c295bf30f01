"""Rule correct_gradient: scale to [0, 1] and remove the linear x intensity gradient (§3.1)."""

from fibseg.io.volume import Volume
from fibseg.preprocess.gradient import correct_gradient
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
with Volume(snakemake.params.volume, snakemake.wildcards.ds) as volume:
    summary = correct_gradient(volume, snakemake.output[0], snakemake.params.voxel_size_nm)
log.info("gradient fit: %s", summary)
log.info("voxel size (z, y, x): %s nm", snakemake.params.voxel_size_nm)
