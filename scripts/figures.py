"""Rule figures: Figure 8 (one test region per data set) and Figure 9 (full slices)."""

import json

import h5py
import pandas as pd

from fibseg import figures
from fibseg.evaluate import read_scores
from fibseg.postprocess import segment_as_chosen
from fibseg.regions import RegionSet
from fibseg.runtime import start_log
from fibseg.sampling import regions_in

log = start_log(snakemake.log[0])
settings = json.loads(open(snakemake.input.params).read())
split = pd.read_csv(snakemake.input.split)
region_rows = []
for scores_path, regions_path in zip(snakemake.input.scores, snakemake.input.regions, strict=True):
    regions = RegionSet.read(regions_path)
    windows, margin = read_scores(scores_path)
    index = regions_in(split, regions.dataset, "test")[0]
    label = regions.labels[index]
    h, w = label.shape
    inner = (slice(margin, margin + h), slice(margin, margin + w))
    m = regions.margin_xy
    region_rows.append(
        {
            "title": f"{regions.dataset}, region {index}",
            "image": regions.crops[index, regions.margin_z, m : m + h, m : m + w],
            "manual": label,
            "score": windows[index][inner],
            "automatic": segment_as_chosen(windows[index], settings)[inner],
        }
    )
figures.region_panels(region_rows, snakemake.output.fig8)
slice_rows = []
for volume_path, segmentation_path in zip(
    snakemake.input.volumes, snakemake.input.segmentations, strict=True
):
    with h5py.File(volume_path, "r") as volume, h5py.File(segmentation_path, "r") as seg:
        middle = volume["volume"].shape[0] // 2
        slice_rows.append(
            {
                "title": volume_path.split("/")[1],
                "image": volume["volume"][middle],
                "segmentation": seg["segmentation"][middle],
            }
        )
figures.full_slices(slice_rows, snakemake.output.fig9)
log.info("figures written")
