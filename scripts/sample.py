"""Rule sample: a fraction of the labelled voxels per split; train stratified 50/50 (§3.3)."""

import pandas as pd

from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import sample_splits
from fibseg.io.writers import write_csv
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
region_sets = {r.dataset: r for r in (RegionSet.read(p, False) for p in snakemake.input.regions)}
sampling = snakemake.params.sampling
drawn = sample_splits(
    region_sets, pd.read_csv(snakemake.input.split), sampling["fraction"], sampling["seed"]
)
for split, (samples, labelled) in drawn.items():
    write_csv(snakemake.output[split], samples)
    log.info("%s: %d of %d voxels, solid %.3f", split, len(samples), labelled, samples.label.mean())
