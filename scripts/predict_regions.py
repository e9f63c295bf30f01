"""Rule predict_regions: scores of every annotated region plus a smoothing margin."""

import pandas as pd

from fibseg.infer import load_model, model_geometry, score_dataset_regions
from fibseg.io import write_h5
from fibseg.regions import RegionSet
from fibseg.runtime import configure_threads, start_log
from fibseg.sampling import regions_in

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
inference, margin = snakemake.params.inference, snakemake.params.margin
model = load_model(snakemake.input.model)
regions = RegionSet.read(snakemake.input.regions)
val = regions_in(pd.read_csv(snakemake.input.split), regions.dataset, "val")
scores, agreement = score_dataset_regions(model, regions, inference, margin, val)
if agreement is not None:  # an approximate dense engine on a 'same' model
    log.warning("label agreement with sliding: %.4f on %d val regions", agreement, len(val))
attributes = {"margin": margin, "engine": inference.engine}
write_h5(snakemake.output[0], {"scores": scores}, attributes, slice_chunks=False)
log.info("%d regions scored, model %s", len(scores), model_geometry(model))
