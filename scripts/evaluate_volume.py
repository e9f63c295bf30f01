"""Rule evaluate_volume: whole-volume agreement with the ground truth (the demo has one)."""

import h5py
import pandas as pd

from fibseg.evaluate import volume_row
from fibseg.io import read_volume, write_csv
from fibseg.runtime import start_log

log = start_log(snakemake.log[0])
rows = []
for name, truth_spec, path in zip(
    snakemake.params.datasets, snakemake.params.truths, snakemake.input.segmentations, strict=True
):
    with h5py.File(path, "r") as handle:
        segmentation = handle["segmentation"][:]
    rows.append(volume_row(name, read_volume(truth_spec, name), segmentation))
write_csv(snakemake.output[0], pd.DataFrame(rows))
log.info("%s", rows)
