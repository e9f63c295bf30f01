"""Rule sample: a fraction of the labelled voxels per split; train stratified 50/50 (§3.3)."""

import numpy as np
import pandas as pd

from fibseg.io import write_csv
from fibseg.regions import RegionSet
from fibseg.runtime import start_log
from fibseg.sampling import labelled_voxels, sample_split

log = start_log(snakemake.log[0])
region_sets = {
    r.dataset: r for r in (RegionSet.read(p, crops=False) for p in snakemake.input.regions)
}
split_table = pd.read_csv(snakemake.input.split)
rng = np.random.default_rng(snakemake.params.sampling["seed"])
for split in ("train", "val", "test"):
    voxels = labelled_voxels(region_sets, split_table, split)
    samples = sample_split(
        voxels, snakemake.params.sampling["fraction"], split == "train", rng, split
    )
    write_csv(snakemake.output[split], samples)
    log.info(
        "%s: %d of %d voxels, solid fraction %.3f",
        split,
        len(samples),
        len(voxels),
        samples.label.mean(),
    )
