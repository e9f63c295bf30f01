# Config and sheet validation, and the helpers the rules share.
import re

from snakemake.utils import validate

from fibseg.io import split_spec
from fibseg.validate import check_external_inputs, read_sheet

validate(config, "../schemas/config.schema.yaml")

SHEET = read_sheet(config["datasets"])
validate(SHEET, "../schemas/datasets.schema.yaml")
check_external_inputs(SHEET, config["datasets"], generated_prefix="results/")
SHEET = SHEET.set_index("name", drop=False)
DATASETS = list(SHEET.index)  # full volumes: preprocessed, predicted, segmented
PUBLISHED = config["published"]["datasets"]  # released crops only: train and evaluate
REGION_DATASETS = DATASETS + [name for name in PUBLISHED if name not in DATASETS]
DEMO = list(config["demo"])
THREADS = config["resources"]["threads"]
GRID_CELLS = [(n_xy, n_z) for n_z in config["grid"]["n_z"] for n_xy in config["grid"]["n_xy"]]
SEEDS = list(range(config["grid"]["seeds"]))
MARGINS = {"xy": max(config["grid"]["n_xy"]) // 2, "z": max(config["grid"]["n_z"]) // 2}


def constraint(names):
    """A wildcard pattern that matches exactly these names."""
    return "|".join(map(re.escape, names)) or "NO_DATASET"


wildcard_constraints:
    ds=constraint(REGION_DATASETS),


def dataset(ds):
    """The sheet row of one data set."""
    return SHEET.loc[ds]


def volume_file(wildcards):
    return split_spec(dataset(wildcards.ds).volume)[0]


def annotation_files(wildcards):
    row = dataset(wildcards.ds)
    return {"regions": row.regions, "labels": split_spec(row.labels)[0]}


def unaligned_or_aligned(wildcards):
    """The aligned HDF5 or, for data sets flagged `aligned`, the raw volume."""
    if dataset(wildcards.ds).aligned:
        return volume_file(wildcards)
    return f"results/{wildcards.ds}/aligned.h5"


def unaligned_or_aligned_spec(wildcards):
    if dataset(wildcards.ds).aligned:
        return dataset(wildcards.ds).volume
    return f"results/{wildcards.ds}/aligned.h5:/volume"


def all_targets():
    return [
        *expand("results/{ds}/preprocessed.h5", ds=DATASETS),
        "results/selection/cells.csv",
    ]
