"""Rule train (and train_rung): one (n_xy, n_z, seed) run of the grid, resuming from its last
checkpoint; a later rung of successive halving resumes the run that its slot was promoted."""

from pathlib import Path

from fibseg.runtime.job import configure_threads, start_log
from fibseg.runtime.settings import TrainingSettings
from fibseg.training.halving import continue_promoted
from fibseg.training.train import train_run

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
run_dir = Path(snakemake.output.model).parent
rung = int(snakemake.wildcards.get("rung", 0))
if rung:
    seed = continue_promoted(snakemake.input.promoted, int(snakemake.wildcards.slot), run_dir, log)
else:
    seed = int(snakemake.wildcards.seed)
history = train_run(
    run_dir,
    snakemake.input.regions,
    snakemake.input.train,
    snakemake.input.val,
    snakemake.input.split,
    int(snakemake.wildcards.nxy),
    int(snakemake.wildcards.nz),
    seed,
    snakemake.params.padding,
    TrainingSettings.from_config(snakemake.params.training),
    log,
    snakemake.input.volumes,
    rung=rung,
    keep_last_state="last" in snakemake.output.keys(),
    teacher_files=snakemake.input.teachers,
    architecture=snakemake.params.architecture,
)
log.info("best val_loss %.5f", history["val_loss"].min())
