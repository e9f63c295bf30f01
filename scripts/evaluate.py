"""Rule evaluate: Tables 2 and 3, the Otsu baseline and the porosity t-tests."""

import json

import pandas as pd

from fibseg.annotation.regions import RegionSet
from fibseg.evaluation.evaluate import read_scores, region_tables
from fibseg.io.writers import write_csv
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
inputs = snakemake.input
region_sets = [RegionSet.read(path) for path in inputs.regions]
scores = {"cnn": [read_scores(path) for path in inputs.scores]}
chosen = {"cnn": json.loads(open(inputs.postprocess).read())}
if inputs.forest_scores:
    scores["rf"] = [read_scores(path) for path in inputs.forest_scores]
    chosen["rf"] = json.loads(open(inputs.forest_postprocess[0]).read())
tables = region_tables(region_sets, scores, chosen, pd.read_csv(inputs.split))
for name, table in tables.items():
    write_csv(snakemake.output[name], table)
log.info("Table 3:\n%s", tables["table3"].query("metric == 'mIoU'").to_string(index=False))
