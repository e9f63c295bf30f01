"""Rule predict_regions: scores of every annotated region plus a smoothing margin."""

from fibseg.infer import load_model, make_scorer, model_geometry, score_regions
from fibseg.io import write_h5
from fibseg.regions import RegionSet
from fibseg.runtime import configure_threads, start_log
from fibseg.sampling import regions_in

log = start_log(snakemake.log[0])
configure_threads(snakemake.threads)
inference, margin = snakemake.params.inference, snakemake.params.margin
model = load_model(snakemake.input.model)
n_xy, n_z, padding = model_geometry(model)
regions = RegionSet.read(snakemake.input.regions)
window = int(max(regions.table.height.max(), regions.table.width.max())) + 2 * margin
scorer = make_scorer(model, inference.engine, inference, tile=window)
scores = score_regions(regions, scorer, n_z, margin)
if inference.engine == "dense" and padding == "same":
    import pandas as pd

    from fibseg.infer import label_agreement

    split = pd.read_csv(snakemake.input.split)
    val = regions_in(split, regions.dataset, "val")
    sliding = score_regions(regions, make_scorer(model, "sliding", inference), n_z, margin, val)
    log.warning(
        "approximate dense engine on a 'same' model: label agreement with sliding "
        "%.4f over this data set's %d validation regions",
        label_agreement(scores[val], sliding),
        len(val),
    )
write_h5(
    snakemake.output[0],
    {"scores": scores},
    {"margin": margin, "engine": inference.engine},
    slice_chunks=False,
)
log.info(
    "%d regions scored with %s (n_xy=%d, n_z=%d, %s)",
    len(scores),
    inference.engine,
    n_xy,
    n_z,
    padding,
)
