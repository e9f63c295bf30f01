"""Rule train (and train_rung): one (n_xy, n_z, seed) run of the grid, resuming from its last
checkpoint; a later rung of successive halving resumes the run that its slot was promoted."""

from pathlib import Path

from fibseg.networks.registry import architecture
from fibseg.runtime.job import configure_threads, start_log
from fibseg.runtime.settings import TrainingSettings
from fibseg.training.halving import continue_promoted
from fibseg.training.train import RunFiles, TrainingRun, train_run

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
run_dir = Path(snakemake.output.model).parent
rung = int(snakemake.wildcards.get("rung", 0))
if rung:
    seed = continue_promoted(snakemake.input.promoted, int(snakemake.wildcards.slot), run_dir, log)
else:
    seed = int(snakemake.wildcards.seed)
files = snakemake.input
run = TrainingRun(
    run_dir,
    architecture(snakemake.params.architecture),
    int(snakemake.wildcards.nxy),
    int(snakemake.wildcards.nz),
    seed,
    TrainingSettings.from_config(snakemake.params.training),
    RunFiles(files.regions, files.train, files.val, files.split, files.volumes, files.teachers),
    padding=snakemake.params.padding,
    rung=rung,
    keep_last_state="last" in snakemake.output.keys(),
    # a fresh run starts from it; a later rung resumes its run and only records it
    init_model=next(iter(files.get("init", [])), None),
)
history = train_run(run, log)
log.info("best val_loss %.5f", history["val_loss"].min())
