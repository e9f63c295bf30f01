"""Rule describe_model: results/model/fibseg-model.json, the description of the selected
model(s) that `fibseg export-model` copies into a bundle with the model files."""

import json
from pathlib import Path

from fibseg.inference.bundle import describe_model, training_data_entry
from fibseg.io.atomic import atomic_output
from fibseg.pipeline.dag import keras_input_geometry
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
best = json.loads(Path(snakemake.input.best).read_text())
models = {Path(path).name: path for path in snakemake.input.models}
architectures = []
for name, path in models.items():
    geometry = keras_input_geometry(path)  # fibseg wrote the file: it can be read
    architectures.append({"file": name, **geometry.architecture.describe(geometry)})
params = json.loads((Path(best["ensemble"][0]) / "params.json").read_text())
volumes = snakemake.params.volumes  # data set -> its checked.json and preprocessed.h5
training_data = [
    training_data_entry(name, voxel, *volumes.get(name, (None, None)))
    for name, voxel in snakemake.params.voxel_sizes.items()
]
description = describe_model(
    models,
    best,
    snakemake.input.postprocess,
    training_data,
    snakemake.params.inference,
    snakemake.params.align,
    architectures,
    params.get("versions", {}),
    params.get("init", "scratch"),
)
with atomic_output(snakemake.output[0]) as tmp:
    tmp.write_text(json.dumps(description, indent=2) + "\n")
log.info("described %s, trained on %s", list(models), [d["name"] for d in training_data])
