"""Rule extract_regions: context crops around every annotated region into regions.h5."""

from fibseg.io import Volume, read_volume
from fibseg.regions import extract_regions
from fibseg.runtime import start_log
from fibseg.validate import read_regions

log = start_log(snakemake.log[0])
name = snakemake.wildcards.ds
margins = snakemake.params.margins  # the largest neighbourhood, plus room for smoothing
table = read_regions(snakemake.input.regions, name)
labels = read_volume(snakemake.params.labels, name)
with Volume(snakemake.input.volume, name) as volume:
    regions = extract_regions(
        volume, table, labels, name, margins["xy"] + margins["smooth"], margins["z"]
    )
regions.write(snakemake.output[0])
log.info("%d regions, crops %s", len(table), regions.crops.shape)
