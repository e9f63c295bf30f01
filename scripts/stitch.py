"""Rule stitch: gather the chunk scores into one (z, y, x) volume, every slice in its place."""

from fibseg.io.writers import stitch_chunks
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
first, stop = snakemake.params.slices
shape = stitch_chunks(
    snakemake.input,
    snakemake.output[0],
    snakemake.params.dtype,
    snakemake.params.voxel_size_nm,
    (first, stop),
)
log.info("stitched %d chunks into %s (slices %d-%d)", len(snakemake.input), shape, first, stop - 1)
