"""Rule predict_regions: scores of every annotated region plus a smoothing margin."""

import pandas as pd

from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import regions_in
from fibseg.inference.ensemble import (
    TRUSTED_FOREST_RULES,
    load_member,
    region_window,
    score_dataset_regions,
)
from fibseg.io.writers import write_h5
from fibseg.runtime.job import configure_threads, start_log
from fibseg.runtime.settings import InferenceSettings

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
inference = InferenceSettings.from_config(snakemake.params.inference)
margin = snakemake.params.margin
regions = RegionSet.read(snakemake.input.regions)
tile = region_window(regions, margin)
# a pickle (.joblib) is read only by the forest's rules, whose model is the run's own forest
# (rule train_forest): never a file named by the config
trusted = snakemake.rule in TRUSTED_FOREST_RULES
members = [
    load_member(p, inference, tile, snakemake.threads, trusted) for p in snakemake.input.models
]
val = regions_in(pd.read_csv(snakemake.input.split), regions.dataset, "val")
scores, uncertainty, kind, agreement = score_dataset_regions(
    members, regions, inference, margin, val
)
if agreement is not None:  # an approximate dense engine on a 'same' model
    log.warning("label agreement with sliding: %.4f on %d val regions", agreement, len(val))
attributes = {"margin": margin, "engine": inference.engine, "uncertainty": kind}
arrays = {"scores": scores, "uncertainty": uncertainty}
write_h5(snakemake.output[0], arrays, attributes, slice_chunks=False)
log.info("%d regions scored by %s", len(scores), [m.path for m in members])
