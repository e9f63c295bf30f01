"""Rule align_annotation: the painted labels moved by rule align's transforms (nearest
neighbour), into the frame of the aligned volume."""

import pandas as pd

from fibseg.annotation.labels import painted_labels
from fibseg.io.volume import read_volume
from fibseg.io.writers import write_h5
from fibseg.preprocess.alignment import align_labels, transforms_from_table
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
painted = painted_labels(  # 0 unlabelled, 1 pore, 2 solid
    read_volume(snakemake.params.annotation, snakemake.wildcards.ds),
    snakemake.params.annotation_labels,
    snakemake.wildcards.ds,
    snakemake.params.annotation,
)
transforms = transforms_from_table(pd.read_csv(snakemake.input.transforms))
moved = align_labels(painted, transforms)
write_h5(snakemake.output[0], {"annotation": moved}, {"dataset": snakemake.wildcards.ds})
log.info("labelled voxels before %d, after alignment %d", (painted > 0).sum(), (moved > 0).sum())
