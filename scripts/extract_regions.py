"""Rule extract_regions: context crops around every annotated region into regions.h5; the
regions of a painted annotation are derived from it first."""

from fibseg.annotation.labels import painted_labels
from fibseg.annotation.regions import extract_regions, regions_from_annotation
from fibseg.io.volume import Volume, read_volume
from fibseg.pipeline.checks import check_painted_regions, read_regions
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
name = snakemake.wildcards.ds
margins = snakemake.params.margins  # the largest neighbourhood, plus room for smoothing
if snakemake.params.annotation:  # a painted label volume, in the aligned frame
    painted = read_volume(snakemake.params.annotation, name)
    # the sheet's values by annotation_labels (aligned rows); None: align_annotation's 0/1/2
    painted = painted_labels(
        painted, snakemake.params.annotation_labels, name, snakemake.params.annotation
    )
    table, labels = regions_from_annotation(painted)
    check_painted_regions(labels, name, snakemake.params.annotation)
    log.info("%d regions derived from %s", len(table), snakemake.params.annotation)
else:
    table = read_regions(snakemake.input.regions, name)
    labels = read_volume(snakemake.params.labels, name)
with Volume(snakemake.input.volume, name) as volume:
    regions = extract_regions(
        volume, table, labels, name, margins["xy"] + margins["smooth"], margins["z"]
    )
regions.write(snakemake.output[0])
log.info("%d regions, crops %s", len(table), regions.crops.shape)
