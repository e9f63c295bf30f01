# Config validation, the plan of the run and the input functions of the rules.
from dataclasses import asdict  # the rules hand settings to their scripts as plain dicts

from snakemake.utils import validate

from fibseg.io.volume import volume_files
from fibseg.pipeline.plan import RunPlan, constraint

validate(config, "../schemas/config.schema.yaml")
# The plan of the run (fibseg/pipeline/plan.py), as `fibseg check` builds it too: the checks
# across keys, a pretrained model, the sheet and its files (every fault at once); then the
# data sets, the grid, what is trained and predicted, the settings, the target lists and the
# memory of the jobs. Snakemake records only params of plain types, so the rules pass the
# settings as dataclasses.asdict: a changed setting reruns the jobs that use it.
PLAN = RunPlan.from_config(config, workflow.source_path("../schemas/datasets.schema.yaml"))


wildcard_constraints:
    ds=constraint(PLAN.datasets + PLAN.region_datasets),


def volume_file(wildcards):
    """The volume's file(s): its file or `.zarr` folder, or every slice of a folder or glob."""
    return volume_files(PLAN.dataset(wildcards.ds).volume)


def annotation_files(wildcards):
    """Regions CSV and label files, or the painted annotation's files, of an annotated data
    set (none for a predict-only one)."""
    row = PLAN.dataset(wildcards.ds)
    if row.painted:
        return {"annotation": volume_files(row.annotation)}
    if not row.annotated:
        return {}
    return {"regions": row.regions, "labels": volume_files(row.labels)}


def region_files(wildcards):
    """What extract_regions reads: the regions CSV and labels, or the painted annotation in
    the aligned frame (moved by rule align_annotation, or as given for `aligned` rows)."""
    row = PLAN.dataset(wildcards.ds)
    if row.painted and not row.aligned:
        return {"annotation": f"results/{wildcards.ds}/annotation.h5"}
    return annotation_files(wildcards)


def annotation_spec(wildcards):
    """The painted annotation in the aligned frame, as a volume spec (None for rectangles)."""
    row = PLAN.dataset(wildcards.ds)
    if not row.painted:
        return None
    return row.annotation if row.aligned else f"results/{wildcards.ds}/annotation.h5:/annotation"


def unaligned_or_aligned(wildcards):
    """The aligned HDF5 or, for data sets flagged `aligned`, the raw volume."""
    if PLAN.dataset(wildcards.ds).aligned:
        return volume_file(wildcards)
    return f"results/{wildcards.ds}/aligned.h5"


def unaligned_or_aligned_spec(wildcards):
    if PLAN.dataset(wildcards.ds).aligned:
        return PLAN.dataset(wildcards.ds).volume
    return f"results/{wildcards.ds}/aligned.h5:/volume"


def voxel_size_param(wildcards):
    return list(PLAN.voxel_size(wildcards.ds))


def voxel_size_with_source_param(wildcards):
    voxel, sources = PLAN.voxel_size_with_source(wildcards.ds)
    return {"nm": list(voxel), "source": list(sources)}


def training_voxel_sizes(wildcards):
    return PLAN.training_voxel_sizes()


def memory(estimate):
    """A rule's mem_mb: the plan's estimate for the data set (fibseg/pipeline/memory.py), and
    `attempt` times it on a retry (`retries` in the SLURM profile)."""
    return lambda wildcards, attempt: estimate(wildcards.ds) * attempt


def slices_of_chunk(wildcards):
    """[first, stop) slice of one predict_slices job."""
    return PLAN.chunk_slices(wildcards.ds, wildcards.chunk)


def score_chunks(wildcards):
    chunks = PLAN.chunks(wildcards.ds)
    return expand("results/{ds}/scores/{chunk}.h5", ds=wildcards.ds, chunk=chunks)


def forest_score_chunks(wildcards):
    chunks = PLAN.forest_chunks(wildcards.ds)
    return expand("results/forest/{ds}/scores/{chunk}.h5", ds=wildcards.ds, chunk=chunks)


def score_chunk(path):
    """A predict job's score file: temporary (deleted once stitched into the data set's
    scores) unless `outputs.keep_score_chunks`."""
    return path if PLAN.keep_score_chunks else temp(path)


def forest_files(pattern, **wildcards):
    """The forest's files (none when forest.enabled is false)."""
    return expand(pattern, **wildcards) if PLAN.forest.enabled else []


def truth_files(wildcards):
    return [path for ds in PLAN.truth_datasets for path in volume_files(PLAN.dataset(ds).truth)]


def structure_truth(wildcards):
    """The truth's file where the data set has one (the analysis runs on it too)."""
    truth = PLAN.dataset(wildcards.ds).truth
    return volume_files(truth) if truth else []


def previous_rung_runs(wildcards):
    """The finished runs of the previous rung in this cell, that `promote` ranks."""
    return PLAN.grid.previous_runs(int(wildcards.nxy), int(wildcards.nz), int(wildcards.rung))


def previous_rung_files(wildcards):
    """History, parameters and states of the previous rung's runs in this cell."""
    return [
        f"{run}/{name}"
        for run in previous_rung_runs(wildcards)
        for name in ("history.csv", "params.json", "model.keras", "last.keras")
    ]


if PLAN.grid.rungs.halving:
    logger.info(PLAN.grid.describe())
