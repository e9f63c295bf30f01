"""Rule evaluate: Tables 2 and 3, the Otsu baseline and the porosity t-tests."""

import json

import numpy as np
import pandas as pd
from skimage.filters import threshold_otsu

from fibseg.evaluate import metrics_table, read_scores, region_results, ttest_table
from fibseg.io import write_csv
from fibseg.postprocess import segment_as_chosen
from fibseg.regions import RegionSet
from fibseg.runtime import start_log

log = start_log(snakemake.log[0])
settings = json.loads(open(snakemake.input.params).read())
split = pd.read_csv(snakemake.input.split)
raw, post, otsu = [], [], []
for scores_path, regions_path in zip(snakemake.input.scores, snakemake.input.regions, strict=True):
    regions = RegionSet.read(regions_path)
    windows, margin = read_scores(scores_path)
    name = regions.dataset
    raw += region_results(windows, margin, regions.labels, name, split, lambda w: w > 0.5)
    post += region_results(
        windows, margin, regions.labels, name, split, lambda w: segment_as_chosen(w, settings)
    )
    # Global Otsu threshold of the data set's preprocessed intensities (its region contexts).
    centre = regions.crops[:, regions.margin_z]
    threshold = threshold_otsu(regions.crops)
    shift = regions.margin_xy - margin
    images = centre[:, shift : shift + windows.shape[1], shift : shift + windows.shape[2]]
    otsu += region_results(
        images, margin, regions.labels, name, split, lambda image, t=threshold: image > t
    )
    log.info("%s: Otsu threshold %.4f", name, threshold)
otsu_rows = metrics_table(otsu, "otsu")
write_csv(snakemake.output.table2, pd.concat([metrics_table(raw, "cnn"), otsu_rows]))
write_csv(snakemake.output.table3, pd.concat([metrics_table(post, "cnn"), otsu_rows]))
write_csv(snakemake.output.ttest, ttest_table(post))
log.info(
    "test mIoU after post-processing: %s",
    np.round(metrics_table(post, "cnn").query("metric == 'mIoU'")["test"].to_numpy(), 4),
)
