"""Rule figure_alignment: a data set's slice positions, their uncertainty and the drift test."""

import json
from pathlib import Path

import pandas as pd

from fibseg.evaluation import figures
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
summary = json.loads(Path(snakemake.input.report).read_text())
figures.alignment_panel(pd.read_csv(snakemake.input.transforms), summary, snakemake.output[0])
log.info("%s: %s", summary["dataset"], summary["statement"])
