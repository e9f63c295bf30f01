"""The forest's full-volume row on a block of slices (forest.volume_slices): a real run scores,
stitches, post-processes and evaluates only the predict jobs around the centre, and
full_volume.csv says which slices each row covers."""

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import TINY_DEMO, demo_sheet_rows, run_snakemake, write_project

from fibseg.evaluation.evaluate import volume_row

pytestmark = pytest.mark.workflow

SETTINGS = {
    "datasets": "config/datasets.tsv",
    "demo": {"T22": TINY_DEMO["T22"]},
    "grid": {"n_xy": [17], "n_z": [1], "seeds": 1},
    "sampling": {"fraction": 0.1, "seed": 1},
    "training": {"epochs": 1, "batch_size": 64},
    "forest": {"enabled": True, "trees": 10, "volume_slices": 2},
    "structure": {"enabled": False},
    "outputs": {"ome_zarr": False},
    "inference": {"slices_per_job": 2, "extract_batch": 4096, "predict_batch": 1024},
    "postprocess": {"sigma_grid": [0.0, 1.0], "threshold_grid": [0.4, 0.5]},
}


def test_the_forest_segments_the_centre_block_and_is_scored_there(tmp_path):
    project = write_project(tmp_path, SETTINGS, demo_sheet_rows(["T22"]))
    run_snakemake(project)
    results = project / "results"
    # 6 slices in jobs of 2: the forest scores job 0001 (slices 2-3) only, the CNN all three
    assert sorted(
        p.name for p in (project / "results/benchmarks/predict_forest_slices").iterdir()
    ) == ["T22_0001.tsv"]
    with h5py.File(results / "forest/T22/scores.h5") as handle:
        assert handle["scores"].shape == (2, 96, 96) and handle.attrs["first_slice"] == 2
    with h5py.File(results / "forest/T22/segmentation.h5") as handle:
        forest = handle["segmentation"][:]
        assert handle.attrs["first_slice"] == 2
    np.testing.assert_array_equal(tifffile.imread(results / "forest/T22/segmentation.tif"), forest)
    with h5py.File(results / "T22/segmentation.h5") as handle:
        assert handle["segmentation"].shape == (6, 96, 96)

    table = pd.read_csv(results / "tables/full_volume.csv").set_index("method")
    assert table.loc["rf", "slices"] == "2-3" and table.loc["rf", "voxels"] == 2 * 96 * 96
    assert table.loc["cnn", "slices"] == "0-5" and table.loc["otsu", "slices"] == "0-5"
    truth = tifffile.imread(results / "demo/T22/truth.tif")
    expected = volume_row("T22", truth[2:4], forest)
    assert table.loc["rf", "mIoU"] == pytest.approx(expected["mIoU"])
    assert table.loc["rf", "porosity_truth"] == pytest.approx(expected["porosity_truth"])
