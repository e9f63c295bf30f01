"""A predict-only data set beside an annotated one, then the trained model reused with
`pretrained` in a second project: nothing is trained, and the segmentation is the same."""

import re

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import TINY_DEMO, planned_jobs, read_napari_store, run_snakemake, write_project

pytestmark = pytest.mark.workflow

SETTINGS = {
    "datasets": "config/datasets.tsv",
    "grid": {"n_xy": [17], "n_z": [1], "seeds": 1},
    "sampling": {"fraction": 0.1, "seed": 1},
    "training": {"epochs": 1, "batch_size": 64},
    "forest": {"enabled": False},
    "structure": {"enabled": False},
    "inference": {"slices_per_job": 6, "extract_batch": 4096, "predict_batch": 1024},
    "postprocess": {"sigma_grid": [0.0, 1.0], "threshold_grid": [0.4, 0.5]},
}
HEADER = "name\tvolume\tregions\tlabels\taligned\ttruth\n"
ANNOTATED = (
    "T22\tresults/demo/T22/volume.tif\tresults/demo/T22/regions.csv\t"
    "results/demo/T22/labels.tif\tfalse\tresults/demo/T22/truth.tif\n"
)
PREDICT_ONLY = "T45\tresults/demo/T45/volume.tif\t\t\tfalse\t\n"  # no regions, labels, truth


def test_predict_only_dataset_and_a_reused_model(tmp_path):
    first = write_project(
        tmp_path / "first", {**SETTINGS, "demo": TINY_DEMO}, HEADER + ANNOTATED + PREDICT_ONLY
    )
    run_snakemake(first)
    results = first / "results"
    for name in ("T22", "T45"):
        segmentation = tifffile.imread(results / name / "segmentation.tif")
        assert segmentation.shape == (6, 96, 96) and set(np.unique(segmentation)) <= {0, 1}
    # T45 is segmented only: no regions, no split, no samples, no row in the region tables.
    assert not (results / "T45/regions.h5").exists()
    assert not (results / "T45/region_scores.h5").exists()
    assert set(pd.read_csv(results / "split.csv").dataset) == {"T22"}
    assert set(pd.read_csv(results / "samples/train.csv").dataset) == {"T22"}
    for table in ("table2", "table3", "porosity_ttest"):
        frame = pd.read_csv(results / f"tables/{table}.csv")
        assert "T45" not in set(frame.dataset) and "T22" in set(frame.dataset)
    assert set(pd.read_csv(results / "tables/full_volume.csv").dataset) == {"T22"}
    assert (results / "figures/fig9_slices.png").stat().st_size > 10_000
    # The napari store of each data set, on by default: valid OME-Zarr, read as napari-ome-zarr
    # reads it, with the EM the network saw, the scores, the uncertainty and the segmentation
    # (pore = 1, so napari draws it) at the config's voxel size (50, 10, 10 nm)
    for name in ("T22", "T45"):
        found = read_napari_store(results / name / f"{name}.ome.zarr")
        segmentation = tifffile.imread(results / name / "segmentation.tif")
        np.testing.assert_array_equal(found["labels"], segmentation + 1)
        assert set(np.unique(found["labels"])) <= {1, 2}  # a 1-epoch model may see no pore
        with (
            h5py.File(results / name / "preprocessed.h5", "r") as preprocessed,
            h5py.File(results / name / "scores.h5", "r") as scores,
        ):
            np.testing.assert_array_equal(found["channels"]["EM"], preprocessed["volume"][:])
            np.testing.assert_array_equal(found["channels"]["scores"], scores["scores"][:])
            np.testing.assert_array_equal(
                found["channels"]["uncertainty"], scores["uncertainty"][:]
            )
        for layer in ("image", "labels"):
            assert found[f"{layer}_scale"] == pytest.approx([0.05, 0.01, 0.01])
            assert found[f"{layer}_units"] == ["micrometer"] * 3
    # predict_slices says how fast it goes and how long it has left
    log = (first / "logs/predict_slices/T45_0000.log").read_text()
    assert re.search(r"slice 6/6 \(z=5\) done: [\d,]+ voxels/s, [\d.]+ slices/min, .*ETA", log)

    # A second project reuses the model and post-processing of the first: nothing is trained.
    pretrained = {
        "model": str(results / "model/best.keras"),
        "postprocess": str(results / "postprocess.json"),
    }
    second = write_project(
        tmp_path / "second",
        {**SETTINGS, "demo": {"T45": TINY_DEMO["T45"]}, "pretrained": pretrained},
        HEADER + PREDICT_ONLY,
    )
    jobs = planned_jobs(second)
    assert {"check_model", "predict_slices", "postprocess", "export_ome_zarr"} <= jobs
    assert not jobs & {"train", "sample", "split", "select_model", "optimize_postprocess"}
    run_snakemake(second)
    np.testing.assert_array_equal(
        tifffile.imread(second / "results/T45/segmentation.tif"),
        tifffile.imread(results / "T45/segmentation.tif"),
    )
    assert not (second / "results/train").exists() and not (second / "results/tables").exists()
