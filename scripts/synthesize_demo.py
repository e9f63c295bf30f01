"""Rule synthesize_demo: one synthetic FIB-SEM data set with shine-through, its truth and
labels as a user sees them in the volume aligned as rule align aligns it. The demo key
`style` picks the generator: easy (the defaults) or hard (the hard films)."""

from fibseg.demo.films import styled_spec
from fibseg.demo.synth import seen_after_alignment, synthesize
from fibseg.io.writers import write_csv, write_tiff
from fibseg.runtime.job import start_log
from fibseg.runtime.settings import AlignSettings

log = start_log(snakemake.log[0])
spec = styled_spec(**snakemake.params.spec)
log.info("synthesising %s", spec)
data = seen_after_alignment(synthesize(spec), AlignSettings.from_config(snakemake.params.align))
write_tiff(snakemake.output.volume, data["volume"])
write_tiff(snakemake.output.truth, data["truth"])
write_tiff(snakemake.output.labels, data["labels"])
write_csv(snakemake.output.regions, data["regions"])
log.info("truth porosity %.4f", 1 - data["truth"].mean())
