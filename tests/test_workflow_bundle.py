"""A tiny run exported as a model bundle (`fibseg export-model`): `fibseg predict` and the
workflow's `pretrained: {bundle}` route both reproduce the run's segmentation voxel for voxel,
and a volume of another voxel size is refused with a message that names both sizes. Then the
correct-and-retrain loop: the segmentation, corrected by painting, becomes a painted
annotation (`fibseg to-annotation`) on which a new model is trained."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import TINY_DEMO, planned_jobs, run_snakemake, write_project

from fibseg.io.volume import metadata_voxel_size_nm, read_volume

pytestmark = pytest.mark.workflow

SETTINGS = {
    "datasets": "config/datasets.tsv",
    "grid": {"n_xy": [17], "n_z": [1], "seeds": 1},
    # enough to learn something (a constant segmentation would prove little): 30 % of the
    # labelled voxels, 4 epochs of Adam at 10^-3
    "sampling": {"fraction": 0.3, "seed": 1},
    "training": {
        "epochs": 4,
        "batch_size": 32,
        "optimizer": "adam",
        "search": {"log10_lr0": [-3.0], "k": [20]},
    },
    "forest": {"enabled": False},
    "structure": {"enabled": False},
    "inference": {"slices_per_job": 4, "extract_batch": 4096, "predict_batch": 1024},
    "postprocess": {
        "sigma_grid": [0.0, 1.0],
        "threshold_grid": [0.4, 0.5],
        "min_object_voxels": 10,
    },
}
HEADER = "name\tvolume\tregions\tlabels\taligned\ttruth\n"
ANNOTATED = (
    "T22\tresults/demo/T22/volume.tif\tresults/demo/T22/regions.csv\t"
    "results/demo/T22/labels.tif\tfalse\tresults/demo/T22/truth.tif\n"
)
PREDICT_ONLY = "T45\tresults/demo/T45/volume.tif\t\t\tfalse\t\n"


def fibseg(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """The `fibseg` command (as `python -m fibseg.cli`) in `cwd`."""
    process = subprocess.run(
        [sys.executable, "-m", "fibseg.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if check and process.returncode != 0:
        pytest.fail(f"fibseg {' '.join(map(str, args))} failed:\n{process.stderr[-6000:]}")
    return process


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run: T22 annotated, T45 only segmented."""
    project = write_project(
        tmp_path_factory.mktemp("trained"),
        {**SETTINGS, "demo": TINY_DEMO},
        HEADER + ANNOTATED + PREDICT_ONLY,
    )
    run_snakemake(project)
    return project


def test_a_bundle_reproduces_the_run(finished, tmp_path):
    results = finished / "results"
    bundle = tmp_path / "model"
    fibseg("export-model", results, bundle, cwd=finished)
    metadata = json.loads((bundle / "fibseg-model.json").read_text())
    assert sorted(p.name for p in bundle.iterdir()) == [
        "best.keras",
        "fibseg-model.json",
        "postprocess.json",
    ]
    assert metadata["models"] == ["best.keras"]
    assert metadata["architecture"] == [
        {"file": "best.keras", "network": "patch", "n_xy": 17, "n_z": 1, "padding": "same"}
    ]
    assert metadata["inference"]["engine"] == "sliding"
    assert metadata["preprocessing"]["alignment"]["method"] == "joint"
    [trained_on] = metadata["training_data"]
    assert trained_on["name"] == "T22" and trained_on["voxel_size_nm"] == [50.0, 10.0, 10.0]
    assert trained_on["dtype"] == "uint16" and "slope_per_px" in trained_on["gradient"]
    assert (
        metadata["versions"]["trained_with"]["keras"]
        == metadata["versions"]["exported_with"]["keras"]
    )
    assert json.loads((bundle / "postprocess.json").read_text()) == json.loads(
        (results / "postprocess.json").read_text()
    )
    # the bundle's folder exists now: a second export is refused, with exit code 2
    again = fibseg("export-model", results, bundle, cwd=finished, check=False)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr

    # fibseg predict: the same segmentation, scores and aligned volume as the run's
    out = tmp_path / "out"
    fibseg(
        "predict",
        bundle,
        "results/demo/T45/volume.tif",
        out / "T45.tif",
        "--voxel-size",
        "50,10,10",
        "--scores",
        out / "scores.h5",
        "--write-aligned",
        out / "aligned.h5",
        cwd=finished,
    )
    segmentation = tifffile.imread(out / "T45.tif")
    expected = tifffile.imread(results / "T45/segmentation.tif")
    assert segmentation.shape == (6, 96, 96) and 0 < segmentation.mean() < 1
    np.testing.assert_array_equal(segmentation, expected)
    assert metadata_voxel_size_nm(str(out / "T45.tif")) == pytest.approx((50, 10, 10))
    for name, key in (("scores.h5", "scores"), ("aligned.h5", "volume")):
        with h5py.File(out / name) as mine, h5py.File(results / "T45" / name) as theirs:
            np.testing.assert_array_equal(mine[key][:], theirs[key][:])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no scratch left

    # a bundle trained on another voxel size refuses the volume
    other = tmp_path / "coarse"
    other.mkdir()
    for path in bundle.iterdir():
        (other / path.name).write_bytes(path.read_bytes())
    coarse = {**metadata, "training_data": [{**trained_on, "voxel_size_nm": [100, 20, 20]}]}
    (other / "fibseg-model.json").write_text(json.dumps(coarse))
    refused = fibseg(
        "predict",
        other,
        "results/demo/T45/volume.tif",
        tmp_path / "never.tif",
        "--voxel-size",
        "50,10,10",
        cwd=finished,
        check=False,
    )
    message = refused.stderr
    assert refused.returncode == 2 and "Traceback" not in message, message
    assert "data set 'volume.tif'" in message and "50 x 10 x 10 nm" in message
    assert "T22: 100 x 20 x 20 nm" in message and "by 50%" in message
    assert "Fix: resample" in message and "--voxel-size" in message
    assert not (tmp_path / "never.tif").exists()

    # the workflow's pretrained route with the bundle: nothing trained, the same segmentation
    second = write_project(
        tmp_path / "second",
        {**SETTINGS, "demo": {"T45": TINY_DEMO["T45"]}, "pretrained": {"bundle": str(bundle)}},
        HEADER + PREDICT_ONLY,
    )
    jobs = planned_jobs(second)
    assert {"check_model", "predict_slices", "postprocess"} <= jobs
    assert not jobs & {"train", "select_model", "optimize_postprocess", "describe_model"}
    run_snakemake(second)
    np.testing.assert_array_equal(
        tifffile.imread(second / "results/T45/segmentation.tif"), expected
    )
    # ... and it refuses a data set of twice the voxel size before any job
    sheet = second / "config/datasets.tsv"
    sheet.write_text("name\tvolume\tvoxel_size_nm\nT45\tresults/demo/T45/volume.tif\t100,20,20\n")
    process = run_snakemake(second, "-n", check=False)
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert "data set 'T45'" in output and "100 x 20 x 20 nm" in output and "T22" in output


def test_a_corrected_segmentation_trains_a_new_model(finished, tmp_path):
    """The loop of docs/cli.md: segment, correct in napari, to-annotation, retrain. The
    segmentation lies in the aligned frame, so the new sheet row takes the aligned volume
    with `aligned: true`."""
    results = finished / "results"
    segmentation = tifffile.imread(results / "T45/segmentation.tif")
    truth = tifffile.imread(results / "demo/T45/truth.tif")  # the aligned frame
    wrong = segmentation != truth
    assert wrong.any()
    corrections = np.zeros_like(segmentation)  # painted where the CNN erred, slices 1 and 4
    for z in (1, 4):
        corrections[z][wrong[z]] = truth[z][wrong[z]] + 1
    tifffile.imwrite(tmp_path / "corrections.tif", corrections)
    data = tmp_path / "data"
    fibseg(
        "to-annotation",
        results / "T45/segmentation.tif",
        "--corrected",
        tmp_path / "corrections.tif",
        data / "reviewed.tif",
        cwd=tmp_path,
    )
    reviewed = read_volume(str(data / "reviewed.tif"))  # only the slices painted in
    np.testing.assert_array_equal(reviewed[[0, 2, 3, 5]], 0)
    np.testing.assert_array_equal(reviewed[[1, 4]], truth[[1, 4]] + 1)
    fibseg(
        "to-annotation",
        results / "T45/segmentation.tif",
        "--corrected",
        tmp_path / "corrections.tif",
        "--slices",
        "all",
        data / "annotation.tif",
        cwd=tmp_path,
    )
    annotation = read_volume(str(data / "annotation.tif"))
    expected = segmentation + 1
    expected[[1, 4]] = truth[[1, 4]] + 1
    np.testing.assert_array_equal(annotation, expected)
    assert metadata_voxel_size_nm(str(data / "annotation.tif")) == pytest.approx((50, 10, 10))

    sheet = (
        "name\tvolume\tannotation\taligned\n"
        f"T45\t{results / 'T45/aligned.h5'}:/volume\tdata/annotation.tif\ttrue\n"
    )
    # 1 epoch on 5 % of the labelled voxels (six whole slices are labelled now)
    retrain = {**SETTINGS, "sampling": {"fraction": 0.05, "seed": 1}}
    retrain["training"] = {**SETTINGS["training"], "epochs": 1}
    project = write_project(tmp_path, retrain, sheet)
    check = fibseg("check", "config/datasets.tsv", cwd=project)
    assert "1 data set(s) checked" in check.stderr
    run_snakemake(project)
    split = pd.read_csv(project / "results/split.csv")
    assert set(split.dataset) == {"T45"} and len(split) == 6  # one region per whole slice
    assert (project / "results/model/best.keras").is_file()
    retrained = tifffile.imread(project / "results/T45/segmentation.tif")
    assert retrained.shape == (6, 96, 96) and set(np.unique(retrained)) == {0, 1}
    table = pd.read_csv(project / "results/tables/table3.csv")
    assert set(table[table.method == "cnn"].dataset) == {"T45", "Combined"}


def test_a_bundle_fine_tuned_on_new_labels(finished, tmp_path):
    """training.init: the exported bundle's weights start the training of a new run (one
    epoch, a real snakemake run), which records the file and its SHA-256; a name that is no
    model is refused before any job."""
    bundle = tmp_path / "model"
    fibseg("export-model", finished / "results", bundle, cwd=finished)
    training = {**SETTINGS["training"], "epochs": 1, "init": str(bundle)}
    settings = {**SETTINGS, "demo": {"T22": TINY_DEMO["T22"]}, "training": training}
    project = write_project(tmp_path / "tuned", settings, HEADER + ANNOTATED)
    assert "train" in planned_jobs(project)
    run_snakemake(project)
    [params] = project.glob("results/train/nxy17_nz1/seed*/params.json")
    digest = hashlib.sha256((bundle / "best.keras").read_bytes()).hexdigest()
    assert json.loads(params.read_text())["init"] == {
        "model": str(bundle / "best.keras"),
        "sha256": digest,
    }
    described = json.loads((project / "results/model/fibseg-model.json").read_text())
    assert described["training_init"] == json.loads(params.read_text())["init"]
    [log] = project.glob("logs/train/*.log")
    assert "starting from the weights of" in log.read_text()
    assert (project / "results/T22/segmentation.tif").is_file()

    training["init"] = str(tmp_path / "nowhere")
    write_project(project, {**settings, "training": training})
    process = run_snakemake(project, "-n", check=False)
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert "training.init names neither a bundle folder nor a model file" in output
    assert "nowhere" in output and "Fix:" in output
