"""Rule predict_slices: scores of `slices_per_job` consecutive slices (one GPU job)."""

from fibseg.inference.ensemble import TRUSTED_FOREST_RULES, ensemble_slices, load_member
from fibseg.io.volume import Volume
from fibseg.io.writers import write_h5
from fibseg.runtime.job import configure_threads, start_log
from fibseg.runtime.settings import InferenceSettings

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
inference = InferenceSettings.from_config(snakemake.params.inference)
# a pickle (.joblib) is read only by the forest's rules, whose model is the run's own forest
# (rule train_forest): never a file named by the config
trusted = snakemake.rule in TRUSTED_FOREST_RULES
members = [
    load_member(p, inference, None, snakemake.threads, trusted) for p in snakemake.input.models
]
first, stop = snakemake.params.slices
with Volume(snakemake.input.volume, snakemake.wildcards.ds) as volume:
    log.info("scoring slices %d-%d of %s", first, stop - 1, volume.shape)
    scores, uncertainty, kind = ensemble_slices(
        volume.read_slices, volume.shape[0], range(first, stop), members, log
    )
attributes = {"first_slice": first, "stop_slice": stop, "uncertainty": kind}
write_h5(snakemake.output[0], {"scores": scores, "uncertainty": uncertainty}, attributes)
log.info(
    "slices %d-%d scored by %d member(s), mean %.4f", first, stop - 1, len(members), scores.mean()
)
