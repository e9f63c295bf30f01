# Config and sheet validation, and the helpers the rules share.
import functools
import re
from dataclasses import asdict, replace

from snakemake.utils import validate

from fibseg.io.formats import split_spec
from fibseg.io.omezarr import CHUNKS
from fibseg.io.volume import Volume, volume_files, voxel_size_nm
from fibseg.runtime.settings import AlignSettings, InferenceSettings, TrainingSettings
from fibseg.training import halving
from fibseg.pipeline.dag import (
    chunk_names,
    chunk_slices,
    context_margins,
    export_memory_mb,
    forest_memory_mb,
    keras_input_geometry,
    predict_memory_mb,
    structure_memory_mb,
    postprocess_memory_mb,
)
from fibseg.inference.pretrained import Pretrained, check_annotations_needed, check_pretrained
from fibseg.io.errors import check_all
from fibseg.pipeline.checks import check_config
from fibseg.pipeline.sheet import is_annotated, is_painted, load_sheet

validate(config, "../schemas/config.schema.yaml")
check_config(config)
# pretrained: a model (and post-processing) of an earlier run; no training or selection
PRETRAINED = Pretrained.from_config(config)
if PRETRAINED:
    check_pretrained(PRETRAINED)

# read, validated (defaults filled), empty cells None (not NaN), external files present; every
# fault of every row at once
SHEET = load_sheet(
    config["datasets"], workflow.source_path("../schemas/datasets.schema.yaml"), "results/"
)
SHEET = SHEET.set_index("name", drop=False)
ROWS = SHEET.to_dict("index")  # name -> {column: value}, for lookup(dpath="{ds}/column")
DATASETS = list(SHEET.index)  # full volumes: preprocessed, predicted, segmented
ANNOTATED = [ds for ds in DATASETS if is_annotated(ROWS[ds])]  # the rest: predict-only
PUBLISHED = config["published"]["datasets"]  # released crops only: train and evaluate
REGION_DATASETS = ANNOTATED + [name for name in PUBLISHED if name not in DATASETS]
check_annotations_needed(REGION_DATASETS, PRETRAINED, config["datasets"])
TRAINS = PRETRAINED is None  # train, select_model, the forest, Tables 2-3 and Figure 8
OPTIMIZES_POSTPROCESS = TRAINS or PRETRAINED.postprocess is None
POSTPROCESS_JSON = "results/postprocess.json" if OPTIMIZES_POSTPROCESS else PRETRAINED.postprocess
DEMO = list(config["demo"])
THREADS = config["resources"]["threads"]
GRID_CELLS = [(n_xy, n_z) for n_z in config["grid"]["n_z"] for n_xy in config["grid"]["n_xy"]]
SEEDS = list(range(config["grid"]["seeds"]))
# grid.search: the full grid, or successive halving in rungs (fibseg/training/halving.py)
GRID_PLAN = halving.GridPlan.from_config(config["grid"], config["training"]["epochs"])
RUN_DIRS = halving.all_run_dirs(GRID_PLAN, GRID_CELLS)  # every run of every rung
FOREST = config["forest"]["enabled"] and TRAINS  # the baseline trains on the CNN's samples
FOREST_NZ = config["forest"]["n_z"]
MARGINS = context_margins(
    config["grid"]["n_xy"],
    [*config["grid"]["n_z"], FOREST_NZ if FOREST else 1],
    config["postprocess"]["sigma_grid"],
)
SMOOTH_MARGIN = MARGINS["smooth"]
SLICES_PER_JOB = config["inference"]["slices_per_job"]
TOP_K = config["ensemble"]["top_k"]
ENSEMBLE_MEMBERS = [f"results/model/member{rank}.keras" for rank in range(1, TOP_K)]
# best first: the selected runs, or the pretrained model file(s)
CNN_MODELS = [*PRETRAINED.models] if PRETRAINED else ["results/model/best.keras", *ENSEMBLE_MEMBERS]
# rule check_model loads a pretrained model in safe mode and checks it before prediction
MODEL_CHECKED = [] if TRAINS else ["results/pretrained/checked.json"]
# Rules get these settings as plain dicts (dataclasses.asdict) and their scripts rebuild
# them: Snakemake records only params of plain types, so a changed setting reruns the jobs
# that use it (tests/test_workflow_training.py).
TRAINING = TrainingSettings.from_config(config["training"])
RUNG_TRAINING = [replace(TRAINING, epochs=end) for end in GRID_PLAN.rung_epochs]
INFERENCE = InferenceSettings.from_config(config["inference"])
if PRETRAINED and PRETRAINED.bundle:  # the engine and score dtype its sigma and T were chosen on
    INFERENCE = PRETRAINED.bundle.inference(INFERENCE)
ALIGN = AlignSettings.from_config(config["align"])
STRUCTURE_TARGETS = ["results/tables/structure.csv", "results/figures/structure.png"]
RUN_FILES = {"model": "keras", "history": "csv", "params": "json"}  # of one training run
# the preprocessed volumes that training.unlabelled draws its tiles from (none when off)
UNLABELLED_VOLUMES = (
    expand("results/{ds}/preprocessed.h5", ds=DATASETS)
    if TRAINING.unlabelled.method != "none"
    else []
)
# the forest's score volumes that label those tiles (training.unlabelled.method: pseudo)
UNLABELLED_TEACHERS = (
    expand("results/forest/{ds}/scores.h5", ds=DATASETS)
    if TRAINING.unlabelled.method == "pseudo"
    else []
)


def constraint(names):
    """A wildcard pattern that matches exactly these names."""
    return "|".join(map(re.escape, names)) or "NO_DATASET"


wildcard_constraints:
    ds=constraint(DATASETS + REGION_DATASETS),


def dataset(ds):
    """The sheet row of one data set."""
    return SHEET.loc[ds]


def volume_file(wildcards):
    """The volume's file(s): its file or `.zarr` folder, or every slice of a folder or glob."""
    return volume_files(dataset(wildcards.ds).volume)


def annotation_files(wildcards):
    """Regions CSV and label files, or the painted annotation's files, of an annotated data
    set (none for a predict-only one)."""
    row = dataset(wildcards.ds)
    if is_painted(row):
        return {"annotation": volume_files(row.annotation)}
    if not is_annotated(row):
        return {}
    return {"regions": row.regions, "labels": volume_files(row.labels)}


def region_files(wildcards):
    """What extract_regions reads: the regions CSV and labels, or the painted annotation in
    the aligned frame (moved by rule align_annotation, or as given for `aligned` rows)."""
    row = dataset(wildcards.ds)
    if is_painted(row) and not row.aligned:
        return {"annotation": f"results/{wildcards.ds}/annotation.h5"}
    return annotation_files(wildcards)


def annotation_spec(wildcards):
    """The painted annotation in the aligned frame, as a volume spec (None for rectangles)."""
    row = dataset(wildcards.ds)
    if not is_painted(row):
        return None
    return row.annotation if row.aligned else f"results/{wildcards.ds}/annotation.h5:/annotation"


def unaligned_or_aligned(wildcards):
    """The aligned HDF5 or, for data sets flagged `aligned`, the raw volume."""
    if dataset(wildcards.ds).aligned:
        return volume_file(wildcards)
    return f"results/{wildcards.ds}/aligned.h5"


def unaligned_or_aligned_spec(wildcards):
    if dataset(wildcards.ds).aligned:
        return dataset(wildcards.ds).volume
    return f"results/{wildcards.ds}/aligned.h5:/volume"


@functools.cache
def volume_shape(ds):
    """(z, y, x) of a data set's volume: from the demo config, else from the file's header."""
    row = dataset(ds)
    if ds in config["demo"] and row.volume == f"results/demo/{ds}/volume.tif":
        demo = config["demo"][ds]
        return demo["slices"], demo["height"], demo["width"]
    with Volume(row.volume, ds) as volume:
        return volume.shape


@functools.cache
def voxel_size(ds):
    """(z, y, x) nm of a data set: the sheet's voxel_size_nm, else per axis the volume's own
    metadata (not read for volumes the workflow makes), else the config's voxel_size_nm."""
    row = dataset(ds)
    external = not str(row.volume).startswith("results/")
    return voxel_size_nm(
        row.volume if external else None,
        tuple(config["voxel_size_nm"]),
        row.get("voxel_size_nm"),
        ds,
        config["datasets"],
    )


# A bundle's model segments only volumes of about its training data's voxel size.
if PRETRAINED:
    check_all(lambda ds: PRETRAINED.check_voxel_size(voxel_size(ds), ds), DATASETS)


def voxel_size_param(wildcards):
    return list(voxel_size(wildcards.ds))


def volume_depth(ds):
    return volume_shape(ds)[0]


def model_geometries():
    """(n_xy, n_z, padding) of the largest model: of the pretrained files where they can be
    read, else of the grid."""
    unet = config["model"]["architecture"] == "unet"
    padding = "unet" if unet else config["model"]["padding"]
    grid = (max(config["grid"]["n_xy"]), max(config["grid"]["n_z"]), padding)
    found = [keras_input_geometry(path) for path in PRETRAINED.models] if PRETRAINED else []
    return max(found, key=lambda g: g[0] ** 2 * g[1]) if found and all(found) else grid


def predict_mem_mb(wildcards, attempt):
    """Memory of one predict_slices job, for the largest model of the grid (or the
    pretrained one); a retry (`retries` in the SLURM profile) asks for `attempt` times it."""
    _, height, width = volume_shape(wildcards.ds)
    return predict_memory_mb(height, width, *model_geometries(), INFERENCE) * attempt


def postprocess_mem_mb(wildcards, attempt):
    """One slab's masks and connected-component labels (the volume is streamed); `attempt`
    times it on a retry."""
    slab = config["postprocess"]["slab_depth"]
    return postprocess_memory_mb(volume_shape(wildcards.ds), slab) * attempt


EXPORT_THREADS = 2  # slabs that export_ome_zarr reads and writes at a time


def export_mem_mb(wildcards, attempt):
    """Memory of one export_ome_zarr job: a few slabs of whole slices; `attempt` times it on
    a retry."""
    return export_memory_mb(volume_shape(wildcards.ds), CHUNKS[0], EXPORT_THREADS) * attempt


def slices_of_chunk(wildcards):
    """[first, stop) slice of one predict_slices job."""
    return chunk_slices(wildcards.chunk, volume_depth(wildcards.ds), SLICES_PER_JOB)


def score_chunks(wildcards):
    chunks = chunk_names(volume_depth(wildcards.ds), SLICES_PER_JOB)
    return expand("results/{ds}/scores/{chunk}.h5", ds=wildcards.ds, chunk=chunks)


def forest_score_chunks(wildcards):
    chunks = chunk_names(volume_depth(wildcards.ds), SLICES_PER_JOB)
    return expand("results/forest/{ds}/scores/{chunk}.h5", ds=wildcards.ds, chunk=chunks)


def score_chunk(path):
    """A predict job's score file: temporary (deleted once stitched into the data set's
    scores) unless `outputs.keep_score_chunks`."""
    return path if config["outputs"]["keep_score_chunks"] else temp(path)


def forest_mem_mb(wildcards, attempt):
    """Memory of one predict_forest_slices job: the features of a slice; `attempt` times it
    on a retry."""
    _, height, width = volume_shape(wildcards.ds)
    return forest_memory_mb(height, width, FOREST_NZ, config["forest"]["sigma_max"]) * attempt


def forest_files(pattern, **wildcards):
    """The forest's files (none when forest.enabled is false)."""
    return expand(pattern, **wildcards) if FOREST else []


TRUTH_DATASETS = [ds for ds in DATASETS if dataset(ds).truth]


def truth_files(wildcards):
    return [path for ds in TRUTH_DATASETS for path in volume_files(dataset(ds).truth)]


# data set -> its checked.json and preprocessed.h5, for the annotated rows of the sheet (rule
# describe_model records their dtype and gradient; published data sets have no volume)
TRAINING_VOLUMES = {
    ds: [f"results/{ds}/checked.json", f"results/{ds}/preprocessed.h5"] for ds in ANNOTATED
}


def training_voxel_sizes(wildcards):
    """(z, y, x) nm of every data set the CNN trains on (published ones: the config's)."""
    return {
        ds: list(voxel_size(ds)) if ds in DATASETS else list(config["voxel_size_nm"])
        for ds in REGION_DATASETS
    }


# the data sets that rule align registers (the rest are flagged `aligned` in the sheet)
ALIGNED_HERE = [ds for ds in DATASETS if not dataset(ds).aligned]


def all_targets():
    """Every segmentation; with training also the selection, Tables 2-3 and Figure 8 (with
    `pretrained` the split of the regions is unknown, so no region tables)."""
    trained = [
        "results/selection/cells.csv",
        "results/model/fibseg-model.json",
        "results/tables/table2.csv",
        "results/tables/table3.csv",
        "results/tables/porosity_ttest.csv",
        "results/figures/fig8_regions.png",
    ]
    return [
        *(trained if TRAINS else []),
        *(["results/tables/full_volume.csv"] if TRUTH_DATASETS else []),
        *expand("results/{ds}/segmentation.tif", ds=DATASETS),
        *(
            expand("results/{ds}/{ds}.ome.zarr", ds=DATASETS)
            if config["outputs"]["ome_zarr"]
            else []
        ),
        *(expand("results/forest/{ds}/segmentation.tif", ds=DATASETS) if FOREST else []),
        *(["results/figures/fig9_slices.png"] if DATASETS else []),
        *expand("results/figures/alignment_{ds}.png", ds=ALIGNED_HERE),
        *(STRUCTURE_TARGETS if config["structure"]["enabled"] and DATASETS else []),
    ]


def structure_truth(wildcards):
    """The truth's file where the data set has one (the analysis runs on it too)."""
    truth = dataset(wildcards.ds).truth
    return volume_files(truth) if truth else []


def structure_mem_mb(wildcards, attempt):
    """Memory of one analyze_structure job: the native volume and the analysis grid;
    `attempt` times it on a retry."""
    shape, voxel = volume_shape(wildcards.ds), voxel_size(wildcards.ds)
    return structure_memory_mb(shape, voxel, config["structure"]) * attempt


def run_outputs(run, keep_last_state):
    """The files of one training run; `last` (the run's last state) when a later rung of
    successive halving resumes from it."""
    files = {name: f"{run}/{name}.{ext}" for name, ext in RUN_FILES.items()}
    return files | ({"last": f"{run}/last.keras"} if keep_last_state else {})


def previous_rung_runs(wildcards):
    """The finished runs of the previous rung in this cell, that `promote` ranks."""
    rung = int(wildcards.rung)
    return [
        halving.run_dir(int(wildcards.nxy), int(wildcards.nz), rung - 1, slot)
        for slot in range(GRID_PLAN.slots[rung - 1])
    ]


def previous_rung_files(wildcards):
    """History, parameters and states of the previous rung's runs in this cell."""
    return [
        f"{run}/{name}"
        for run in previous_rung_runs(wildcards)
        for name in ("history.csv", "params.json", "model.keras", "last.keras")
    ]


if GRID_PLAN.halving:
    logger.info(
        "successive halving, per cell: "
        + "; ".join(
            f"rung {rung}: {slots} run(s) to epoch {end}"
            for rung, (slots, end) in enumerate(zip(GRID_PLAN.slots, GRID_PLAN.rung_epochs))
        )
        + f"; {len(GRID_CELLS)} cell(s)"
    )
