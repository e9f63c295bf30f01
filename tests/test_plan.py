"""The plan of a run (fibseg.pipeline.plan): the data sets, grid, what is trained and predicted,
the target lists and the memory of the jobs; built the same by the `fibseg` command and by the
Snakefile (workflow/rules/common.smk's PLAN)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from helpers import REPO, demo_config
from snakemake.utils import update_config, validate

from fibseg.inference.pretrained import Pretrained
from fibseg.io.errors import InputError, InputErrors, collect
from fibseg.pipeline import dag
from fibseg.pipeline.plan import (
    MODEL_CHECKED,
    STRUCTURE_TARGETS,
    TRAINED_TARGETS,
    RunPlan,
    constraint,
)
from fibseg.pipeline.project import load_plan, merge_demo
from fibseg.pipeline.sheet import Dataset

CONFIG_SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
SHEET_SCHEMA = str(REPO / "workflow/schemas/datasets.schema.yaml")
DEMO = ["HPC22", "HPC30", "HPC45"]


def checked(config: dict) -> dict:
    validate(config, CONFIG_SCHEMA)
    return config


def with_overlays(config: dict, *overlays: dict) -> dict:
    for overlay in overlays:
        update_config(config, overlay)
    return checked(config)


def read_config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.fixture
def demo(monkeypatch) -> RunPlan:
    """The demo's plan, as `snakemake --cores all` in the repository makes it."""
    monkeypatch.chdir(REPO)
    return RunPlan.from_config(checked(demo_config()), SHEET_SCHEMA)


def paper_data(project: Path, slices: int = 200) -> None:
    """Placeholders of the paper's three volumes (the plan reads only their depth), named by
    project/sheet.tsv, which overlay.yaml names."""
    data = project / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows = ["name\tvolume\tregions\tlabels"]
    for name in DEMO:
        tifffile.imwrite(data / f"{name}.tif", np.zeros((slices, 2, 2), np.uint16))
        for suffix in (".csv", "_labels.tif"):
            (data / f"{name}{suffix}").touch()
        rows.append(f"{name}\tdata/{name}.tif\tdata/{name}.csv\tdata/{name}_labels.tif")
    (project / "sheet.tsv").write_text("\n".join(rows) + "\n")
    (project / "overlay.yaml").write_text(yaml.safe_dump({"datasets": "sheet.tsv"}))


@pytest.fixture
def paper(tmp_path, monkeypatch) -> Path:
    """A working directory with config/config.yaml and the paper's data as placeholders."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text((REPO / "config/config.yaml").read_text())
    paper_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the demo and the paper ------------------------------------------------------------------


def test_the_demo_plan(demo):
    assert demo.datasets == demo.annotated == demo.region_datasets == DEMO
    assert demo.truth_datasets == demo.aligned_here == list(demo.demo) == DEMO
    assert demo.dataset("HPC30") == Dataset(
        "HPC30",
        "results/demo/HPC30/volume.tif",
        "results/demo/HPC30/regions.csv",
        "results/demo/HPC30/labels.tif",
        None,
        False,
        "results/demo/HPC30/truth.tif",
        None,
    )
    assert demo.rows["HPC30"]["labels"] == "results/demo/HPC30/labels.tif"
    assert demo.trains and demo.forest.enabled and demo.optimizes_postprocess
    assert demo.cnn_models == ["results/model/best.keras"] and demo.model_checked == []
    assert demo.postprocess_json == "results/postprocess.json"
    assert demo.architecture.name == "unet" and demo.grid.cells == [(96, 3)]
    assert demo.grid.run_dirs == ["results/train/nxy96_nz3/seed0"]
    assert not demo.grid.rungs.halving
    assert [s.epochs for s in demo.rung_training] == [demo.training.epochs]
    assert demo.unlabelled_volumes == demo.unlabelled_teachers == []
    assert demo.training_volumes["HPC22"] == [
        "results/HPC22/checked.json",
        "results/HPC22/preprocessed.h5",
    ]
    # the volume's shape from the demo's spec (the file is made by rule synthesize_demo)
    spec = demo.demo["HPC22"]
    assert demo.volume_shape("HPC22") == (spec["slices"], spec["height"], spec["width"])
    depth = spec["slices"]
    chunks = demo.chunks("HPC22")
    assert len(chunks) == -(-depth // 16) and chunks[0] == "0000"
    assert demo.chunk_slices("HPC22", chunks[-1])[1] == depth
    # the config's voxel size, not read from a file that the workflow makes
    assert demo.voxel_size_with_source("HPC22") == ((50.0, 10.0, 10.0), ("config",) * 3)
    assert demo.training_voxel_sizes() == {name: [50.0, 10.0, 10.0] for name in DEMO}


def test_the_demos_targets(demo):
    targets = demo.all_targets()
    assert targets[: len(TRAINED_TARGETS)] == TRAINED_TARGETS
    assert "results/tables/full_volume.csv" in targets
    for name in DEMO:
        for path in (
            f"results/{name}/segmentation.tif",
            f"results/{name}/{name}.ome.zarr",
            f"results/forest/{name}/segmentation.tif",
            f"results/figures/alignment_{name}.png",
        ):
            assert path in targets
    assert targets[-2:] == STRUCTURE_TARGETS
    assert len(targets) == len(set(targets)) == len(TRAINED_TARGETS) + 1 + 4 * 3 + 1 + 2
    lean = replace(demo, ome_zarr=False, structure={**demo.structure, "enabled": False})
    assert not any(t.endswith(".ome.zarr") or t in STRUCTURE_TARGETS for t in lean.all_targets())
    assert demo.run_outputs("run", False) == {
        "model": "run/model.keras",
        "history": "run/history.csv",
        "params": "run/params.json",
    }
    assert demo.run_outputs("run", True)["last"] == "run/last.keras"


def test_the_demos_memory_is_the_estimators(demo):
    """The plan asks fibseg.pipeline.dag's estimators with the volume and the model."""
    shape = demo.volume_shape("HPC45")
    geometry = demo.architecture.grid_geometry(96, 3, demo.padding)
    assert demo.model_geometry() == geometry
    assert demo.predict_mem_mb("HPC45") == dag.predict_memory_mb(
        shape[1], shape[2], geometry, demo.inference
    )
    assert demo.forest_mem_mb("HPC45") == dag.forest_memory_mb(
        shape[1], shape[2], demo.forest.n_z, demo.forest.sigma_max
    )
    assert demo.postprocess_mem_mb("HPC45") == dag.postprocess_memory_mb(shape, demo.slab_depth)
    assert demo.export_mem_mb("HPC45") == dag.export_memory_mb(shape, 16, 2)
    assert demo.structure_mem_mb("HPC45") == dag.structure_memory_mb(
        shape, (50.0, 10.0, 10.0), demo.structure
    )
    for estimate in (demo.predict_mem_mb, demo.postprocess_mem_mb, demo.structure_mem_mb):
        assert 500 < estimate("HPC45") < 4000


def test_the_paper_plans_3600_runs_and_600_chunks(paper):
    """config/paper.yaml over config/config.yaml: 6 x 6 cells of 100 seeds, one slice per
    prediction job of the three 200-slice volumes (tests/test_workflow_dag.py plans them)."""
    plan = load_plan([str(REPO / "config/paper.yaml"), "overlay.yaml"])
    assert plan.datasets == DEMO and plan.demo == {}
    assert plan.architecture.name == "patch" and len(plan.grid.cells) == 36
    assert len(plan.grid.run_dirs) == 3600 and plan.grid.run_dirs[-1].endswith("seed99")
    assert sum(len(plan.chunks(name)) for name in plan.datasets) == 600
    assert plan.chunk_slices("HPC30", "0199") == [199, 200]
    # the forest's full-volume row: the 32 slices around the centre (forest.volume_slices)
    assert plan.forest_chunks("HPC30") == [f"{z:04d}" for z in range(84, 116)]
    assert plan.stitched_slices("HPC30", forest=True) == [84, 116]
    assert plan.stitched_slices("HPC30") == [0, 200]
    assert plan.volume_shape("HPC30") == (200, 2, 2)  # read from the file's header
    assert plan.margins == {"xy": 56, "z": 5, "smooth": plan.margins["smooth"]}
    assert "results/tables/full_volume.csv" not in plan.all_targets()  # no truth


def test_the_forest_scores_whole_jobs_around_the_centre(demo):
    """At least forest.volume_slices slices, in whole predict jobs around the centre; every
    slice when that reaches the depth (the demo's 32), when it is 0, or when the CNN learns
    from the forest's scores (training.unlabelled: pseudo)."""
    assert dag.centre_chunks(200, 16, 32) == ["0005", "0006", "0007"]  # slices 80-127 hold 84-115
    assert dag.centre_chunks(200, 1, 3) == ["0098", "0099", "0100"]
    assert dag.centre_chunks(7, 2, 2) == ["0001"]  # slices 2-3: job 0001 alone
    assert dag.centre_chunks(7, 2, 3) == ["0001", "0002"]  # 2-4: jobs 2-3 and 4-5
    assert dag.centre_chunks(200, 16, 0) == dag.chunk_names(200, 16)
    assert demo.forest_chunks("HPC22") == demo.chunks("HPC22")
    pseudo = {
        "model": {"architecture": "patch", "padding": "valid"},
        "grid": {"n_xy": [81]},
        "training": {"mode": "dense", "unlabelled": {"method": "pseudo"}, "init": "scratch"},
    }
    config = with_overlays(demo_config(), pseudo)
    assert RunPlan.from_config(config, SHEET_SCHEMA).forest.volume_slices == 0


def test_the_paper_with_halving_plans_each_rung(paper):
    overlays = ["paper.yaml", "halving.yaml"]
    plan = load_plan([*(str(REPO / "config" / name) for name in overlays), "overlay.yaml"])
    assert plan.grid.rungs.slots == (100, 25, 7)
    assert [s.epochs for s in plan.rung_training] == [4, 12, 40]
    assert len(plan.grid.run_dirs) == 36 * (100 + 25 + 7)
    assert plan.grid.previous_runs(33, 1, 2) == [
        f"results/train/nxy33_nz1/rung1/slot{k}" for k in range(25)
    ]
    assert plan.grid.describe() == (
        "successive halving, per cell: rung 0: 100 run(s) to epoch 4; rung 1: 25 run(s) to "
        "epoch 12; rung 2: 7 run(s) to epoch 40; 36 cell(s)"
    )


# --- the kinds of data set --------------------------------------------------------------------


def mixed_rows() -> list[Dataset]:
    """Rectangles with a truth, painted, painted and aligned, predict-only (no file exists:
    the voxel sizes are the sheet's)."""
    return [
        Dataset("EXT", "data/vol.tif", "data/r.csv", "data/l.tif", truth="data/t.tif"),
        Dataset("PAINT", "data/paint.tif", annotation="data/a.tif"),
        Dataset("ALN", "data/aln.tif", annotation="data/b.tif", aligned=True),
        Dataset("PRED", "data/pred.tif", voxel_size_nm="40,4,4"),
    ]


def in_the_sheet(rows: list[Dataset], voxel: str = "20,5,5") -> list[Dataset]:
    return [replace(row, voxel_size_nm=row.voxel_size_nm or voxel) for row in rows]


def mixed_config(**sections) -> dict:
    published = {"datasets": {"PUB": {"regions": "r.tif", "masks": "m.mat"}}}
    config = {
        "datasets": "sheet.tsv",
        "grid": {"n_xy": [17, 33], "n_z": [1, 3], "seeds": 2},
        "model": {"architecture": "patch", "padding": "valid"},
        "training": {"init": "scratch"},  # the prior is a U-Net
        "published": published,
        "ensemble": {"top_k": 3},
        "inference": {"slices_per_job": 7},
    }
    return with_overlays(read_config("config.yaml"), config, sections)


def test_painted_aligned_predict_only_and_published_data_sets():
    plan = RunPlan.of(mixed_config(), in_the_sheet(mixed_rows()))
    assert plan.datasets == ["EXT", "PAINT", "ALN", "PRED"]
    assert plan.annotated == ["EXT", "PAINT", "ALN"]
    assert plan.region_datasets == ["EXT", "PAINT", "ALN", "PUB"]
    assert plan.truth_datasets == ["EXT"] and plan.aligned_here == ["EXT", "PAINT", "PRED"]
    assert [plan.dataset(n).painted for n in plan.datasets] == [False, True, True, False]
    assert list(plan.training_volumes) == ["EXT", "PAINT", "ALN"]
    assert plan.cnn_models == [
        "results/model/best.keras",
        "results/model/member1.keras",
        "results/model/member2.keras",
    ]
    assert plan.grid.cells == [(17, 1), (33, 1), (17, 3), (33, 3)]
    assert len(plan.grid.run_dirs) == 8
    assert plan.margins["xy"] == 16 and plan.margins["z"] == 1
    # the sheet's voxel size wins; the published crops take the config's
    assert plan.voxel_size_with_source("PRED") == ((40.0, 4.0, 4.0), ("sheet",) * 3)
    assert plan.training_voxel_sizes() == {
        "EXT": [20.0, 5.0, 5.0],
        "PAINT": [20.0, 5.0, 5.0],
        "ALN": [20.0, 5.0, 5.0],
        "PUB": list(plan.default_voxel_size),
    }


def test_pseudo_labels_feed_the_forests_volume_scores_to_training():
    training = {"mode": "dense", "unlabelled": {"method": "pseudo"}}
    plan = RunPlan.of(mixed_config(training=training), mixed_rows())
    assert plan.unlabelled_volumes == [f"results/{n}/preprocessed.h5" for n in plan.datasets]
    assert plan.unlabelled_teachers == [f"results/forest/{n}/scores.h5" for n in plan.datasets]


def test_a_pretrained_model_trains_nothing():
    models = ("earlier/best.keras", "earlier/member1.keras")
    plan = RunPlan.of(mixed_config(), mixed_rows(), Pretrained(models, "earlier/pp.json"))
    assert not plan.trains and not plan.forest.enabled and not plan.optimizes_postprocess
    assert plan.cnn_models == list(models) and plan.model_checked == [MODEL_CHECKED]
    assert plan.postprocess_json == "earlier/pp.json"
    targets = plan.all_targets()
    assert not set(TRAINED_TARGETS) & set(targets)
    assert not any(t.startswith("results/forest/") for t in targets)
    # unreadable files: the grid's geometry sizes the prediction jobs
    assert plan.model_geometry() == plan.architecture.grid_geometry(33, 3, "valid")
    # without its post-processing, sigma and T are chosen here
    plan = RunPlan.of(mixed_config(), mixed_rows(), Pretrained(models))
    assert plan.optimizes_postprocess and plan.postprocess_json == "results/postprocess.json"


def test_constraint_matches_exactly_the_names():
    assert constraint(["A.1", "B"]) == r"A\.1|B"
    assert constraint([]) == "NO_DATASET"


# --- faults --------------------------------------------------------------------------------------


def test_every_fault_of_the_sheet_and_the_training_data_at_once(tmp_path, monkeypatch):
    """A missing volume, a half-annotated row and no annotated data set: one InputErrors."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sheet.tsv").write_text(
        "name\tvolume\tregions\tlabels\nA\tmissing.tif\t\t\nB\tmissing_too.tif\tr.csv\t\n"
    )
    config = with_overlays(read_config("config.yaml"), {"datasets": "sheet.tsv"})
    with pytest.raises(InputErrors) as raised:
        RunPlan.from_config(config, SHEET_SCHEMA)
    text = str(raised.value)
    assert "missing.tif" in text and "missing_too.tif" in text
    assert "nothing to train on" in text
    # given a collector, the faults go to it and the plan comes back
    with pytest.raises(InputErrors), collect() as faults:
        plan = RunPlan.from_config(config, SHEET_SCHEMA, faults)
        assert plan.datasets == ["A", "B"] and len(faults.errors) >= 3


def test_a_config_fault_is_raised_before_the_sheet_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = with_overlays(
        read_config("config.yaml"),
        {
            "datasets": "no_sheet.tsv",
            "model": {"architecture": "patch"},
            "training": {"init": "scratch"},
            "grid": {"n_xy": [32]},
        },
    )
    with pytest.raises(InputError, match="grid.n_xy"):
        RunPlan.from_config(config, SHEET_SCHEMA)


def test_the_demo_is_merged_only_without_a_sheet():
    config = read_config("config.yaml")
    overrides = {"grid": {"seeds": 5}}
    update_config(config, overrides)
    merge_demo(config, overrides, lambda path: str(REPO / path))
    assert config["datasets"] == str(REPO / "config/datasets.tsv")
    assert list(config["demo"]) == DEMO  # the demo's settings
    assert config["grid"]["seeds"] == 5  # under the run's own
    named = {"datasets": "mine.tsv"}
    merge_demo(named, {}, lambda path: str(REPO / path))
    assert named == {"datasets": "mine.tsv"}


# --- the same plan from the command and from the Snakefile --------------------------------------


def snakefile_plan(project: Path, *configfiles: str) -> RunPlan:
    """PLAN as the Snakefile builds it when Snakemake loads the workflow in `project` with
    these --configfile overlays (in process, through the Snakemake API; no job is run)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings

    configs = ConfigSettings(configfiles=[(project / path).resolve() for path in configfiles])
    with SnakemakeApi() as api:
        workflow = api.workflow(
            ResourceSettings(cores=1), configs, snakefile=REPO / "Snakefile", workdir=project
        )
        return workflow.dag().workflow_api._workflow.globals["PLAN"]


@pytest.fixture
def fibseg_source(monkeypatch):
    """The Snakefile sets FIBSEG_SOURCE where it is unset; the test leaves it as it was."""
    monkeypatch.setenv("FIBSEG_SOURCE", os.environ.get("FIBSEG_SOURCE", str(REPO)))


def test_the_command_and_the_snakefile_plan_the_demo_alike(monkeypatch, fibseg_source):
    monkeypatch.chdir(REPO)
    plan = load_plan()
    assert plan == snakefile_plan(REPO)
    assert plan.datasets == DEMO and plan.sheet == "config/datasets.tsv"
    patches = ["config/demo_patches.yaml", "config/demo_ensemble.yaml"]
    plan = load_plan(patches)
    assert plan == snakefile_plan(REPO, *patches) != load_plan()
    assert plan.architecture.name == "patch" and plan.demo


def test_the_command_and_the_snakefile_plan_the_paper_alike(paper, fibseg_source):
    overlays = [str(REPO / "config/paper.yaml"), "overlay.yaml"]
    plan = load_plan(overlays)
    assert plan == snakefile_plan(paper, *overlays)
    assert len(plan.grid.run_dirs) == 3600
    halving = [*overlays, str(REPO / "config/halving.yaml")]
    assert load_plan(halving) == snakefile_plan(paper, *halving) != plan
