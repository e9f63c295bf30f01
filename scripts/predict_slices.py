"""Rule predict_slices: scores of `slices_per_job` consecutive slices (one GPU job)."""

from fibseg.infer import (
    load_model,
    make_scorer,
    model_geometry,
    score_slices,
)
from fibseg.io import Volume, write_h5
from fibseg.runtime import configure_threads, start_log

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
model = load_model(snakemake.input.model)
n_xy, n_z, padding = model_geometry(model)
scorer = make_scorer(model, snakemake.params.inference.engine, snakemake.params.inference)
first, stop = snakemake.params.slices
with Volume(snakemake.input.volume, snakemake.wildcards.ds) as volume:
    scores = score_slices(volume.read_slices, volume.shape[0], range(first, stop), n_z, scorer)
write_h5(snakemake.output[0], {"scores": scores}, {"first_slice": first, "stop_slice": stop})
log.info("slices %d-%d scored, mean score %.4f", first, stop - 1, scores.mean())
