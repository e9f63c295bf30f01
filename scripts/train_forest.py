"""Rule train_forest: the random-forest baseline on the CNN's train samples."""

import pandas as pd

from fibseg.annotation.regions import RegionSet
from fibseg.baselines.forest import forest_training_data, save_forest, train_forest
from fibseg.runtime.job import start_log

log = start_log(snakemake.log[0])
settings, n_z = snakemake.params.forest, snakemake.params.n_z
region_sets = {r.dataset: r for r in map(RegionSet.read, snakemake.input.regions)}
features, labels = forest_training_data(
    region_sets, pd.read_csv(snakemake.input.train), n_z, settings["sigma_max"]
)
log.info("%d samples of %d features, solid fraction %.3f", *features.shape, labels.mean())
forest = train_forest(features, labels, settings["trees"], settings["seed"], snakemake.threads)
metadata = {"n_z": n_z, "sigma_max": settings["sigma_max"], "trees": settings["trees"]}
save_forest(forest, snakemake.output[0], metadata)
log.info("forest of %d trees written", settings["trees"])
