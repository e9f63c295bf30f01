"""Rule stitch: gather the chunk scores into one (z, y, x) volume, every slice in its place."""

from fibseg.io.writers import stitch_chunks
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
shape = stitch_chunks(
    snakemake.input, snakemake.output[0], snakemake.params.dtype, snakemake.params.voxel_size_nm
)
log.info("stitched %d chunks into %s", len(snakemake.input), shape)
