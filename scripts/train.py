"""Rule train: one (n_xy, n_z, seed) run of the grid, resuming from its last checkpoint."""

from pathlib import Path

from fibseg.runtime import configure_threads, start_log
from fibseg.train import train_run

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
history = train_run(
    Path(snakemake.output.model).parent,
    snakemake.input.regions,
    snakemake.input.train,
    snakemake.input.val,
    snakemake.input.split,
    int(snakemake.wildcards.nxy),
    int(snakemake.wildcards.nz),
    int(snakemake.wildcards.seed),
    snakemake.params.padding,
    snakemake.params.training,
    log,
    snakemake.input.volumes,
)
log.info("best val_loss %.5f", history["val_loss"].min())
