"""Rule structure_table: structure.csv (segmentation, truth and their difference per data set
and metric) and the structure figure."""

import json
from pathlib import Path

import pandas as pd

from fibseg.evaluation.figures import structure_panels
from fibseg.io.writers import write_csv
from fibseg.runtime.job import start_log
from fibseg.structure.analysis import structure_table

log = start_log(snakemake.log[0])
inputs = snakemake.input
names = snakemake.params.datasets
results = {n: json.loads(Path(p).read_text()) for n, p in zip(names, inputs.analyses, strict=True)}
table = pd.DataFrame(structure_table(results))
write_csv(snakemake.output.table, table)
structure_panels(results, dict(zip(names, inputs.maps, strict=True)), snakemake.output.figure)
log.info("\n%s", table.to_string(index=False))
