"""Rule promote: rank a rung's runs of one cell by validation loss, keep the best in slots."""

import json

from fibseg.io.atomic import atomic_output
from fibseg.runtime.job import start_log
from fibseg.training.halving import promote

log = start_log(snakemake.log[0])
promotion = promote(snakemake.params.runs, snakemake.params.slots, int(snakemake.wildcards.rung))
with atomic_output(snakemake.output[0]) as tmp:
    tmp.write_text(json.dumps(promotion, indent=2))
for run in promotion["slots"]:
    log.info("slot %d: seed %d (val_loss %.5f)", run["slot"], run["seed"], run["best_val_loss"])
log.info("pruned seeds %s", [run["seed"] for run in promotion["pruned"]])
