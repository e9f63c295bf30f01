"""Rule split: train/val/test per data set, seeded, or from a split column (§3.3)."""

from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import split_regions
from fibseg.io.writers import write_csv
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
tables = {r.dataset: r.table for r in (RegionSet.read(p, crops=False) for p in snakemake.input)}
fractions = {k: snakemake.params.split[k] for k in ("train", "val", "test")}
split = split_regions(tables, fractions, snakemake.params.split["seed"])
write_csv(snakemake.output[0], split)
log.info("regions per split:\n%s", split.groupby(["dataset", "split"]).size())
