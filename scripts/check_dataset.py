"""Rule check_dataset: fail at once, with a clear message, on malformed input."""

import json

from fibseg.io.atomic import atomic_output
from fibseg.io.volume import report_voxel_size
from fibseg.pipeline.checks import check_dataset
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
summary = check_dataset(
    snakemake.wildcards.ds,
    snakemake.params.volume,
    snakemake.input.get("regions"),  # none for a predict-only data set
    snakemake.params.labels,
    snakemake.params.annotation,  # a painted label volume instead of regions and labels
    snakemake.params.annotation_labels,  # its values: pore, solid, unlabelled
)
made = str(snakemake.params.volume).startswith("results/")  # the demo's: config voxel size
voxel, sources = snakemake.params.voxel_size["nm"], snakemake.params.voxel_size["source"]
report_voxel_size(log, snakemake.wildcards.ds, voxel, sources, searched=not made)
summary |= {"voxel_size_nm": list(voxel), "voxel_size_source": list(sources)}
log.info("checked: %s", summary)
with atomic_output(snakemake.output[0]) as tmp:
    tmp.write_text(json.dumps(summary, indent=2))
