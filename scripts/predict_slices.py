"""Rule predict_slices: scores of `slices_per_job` consecutive slices (one GPU job)."""

from fibseg.inference.ensemble import TRUSTED_FOREST_RULES, score_chunk
from fibseg.runtime.job import configure_threads, start_log
from fibseg.runtime.settings import InferenceSettings

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
# a pickle (.joblib) is read only by the forest's rules, whose model is the run's own forest
# (rule train_forest): never a file named by the config
trusted = snakemake.rule in TRUSTED_FOREST_RULES
score_chunk(
    snakemake.input.volume,
    snakemake.wildcards.ds,
    snakemake.input.models,
    snakemake.params.slices,
    InferenceSettings.from_config(snakemake.params.inference),
    snakemake.threads,
    trusted,
    snakemake.output[0],
    log,
)
