"""Rule check_model: load each pretrained model in safe mode and check that fibseg can score
it with the configured engine, before any prediction job."""

import json

from fibseg.inference.infer import check_scorable, load_model
from fibseg.io.atomic import atomic_output
from fibseg.runtime.job import start_log
from fibseg.runtime.settings import InferenceSettings

log = start_log(snakemake.log[0])
inference = InferenceSettings.from_config(snakemake.params.inference)
summary = []
for path in snakemake.input:
    geometry = check_scorable(load_model(path), path, inference)
    summary.append({"model": path, **geometry.record()})
    log.info("%s: n_xy %d, n_z %d, padding %s", path, geometry.n_xy, geometry.n_z, geometry.padding)
with atomic_output(snakemake.output[0]) as tmp:
    tmp.write_text(json.dumps(summary, indent=2))
