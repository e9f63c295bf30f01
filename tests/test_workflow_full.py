"""The whole pipeline on tiny synthetic data, with both engines, up to the report."""

import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import TINY_DEMO, demo_sheet_rows, run_snakemake, write_project

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize(
    "padding, n_xy, engine, forest, top_k",
    [("valid", 77, "dense", True, 2), ("same", 17, "sliding", False, 1)],
)
def test_everything_from_synthesis_to_report(tmp_path, padding, n_xy, engine, forest, top_k):
    """The 'valid' case also runs the random forest, trains densely on the labels and on
    volume tiles the forest labels (training.unlabelled.method: pseudo), and ensembles the
    two seeds."""
    config = {
        "datasets": "config/datasets.tsv",
        "demo": TINY_DEMO,
        "grid": {"n_xy": [n_xy], "n_z": [3], "seeds": top_k},
        "forest": {"enabled": forest, "trees": 20},
        "ensemble": {"top_k": top_k},
        "model": {"padding": padding},
        "sampling": {"fraction": 0.1, "seed": 1},
        "training": {"epochs": 1, "batch_size": 64},
        "inference": {
            "engine": engine,
            "slices_per_job": 4,
            "tile": 64,
            "extract_batch": 4096,
            "predict_batch": 1024,
        },
        "postprocess": {
            "sigma_grid": [0.0, 1.0],
            "threshold_grid": [0.4, 0.5],
            "min_object_voxels": 10,
        },
    }
    if forest:  # this case keeps the per-chunk scores; the other lets them go (temp)
        config["outputs"] = {"keep_score_chunks": True}
        config["training"].update(
            mode="dense",
            steps_per_epoch=2,
            unlabelled={"method": "pseudo", "start_epoch": 0},
        )
    project = write_project(tmp_path, config, demo_sheet_rows(list(TINY_DEMO)))
    run_snakemake(project)
    results = project / "results"
    for name, spec in TINY_DEMO.items():
        shape = (spec["slices"], spec["height"], spec["width"])
        chunk_folder = results / name / "scores"
        chunks = sorted(p.name for p in chunk_folder.iterdir()) if chunk_folder.exists() else []
        assert chunks == (["0000.h5", "0001.h5"] if forest else [])
        with h5py.File(results / name / "scores.h5") as handle:
            scores = handle["scores"][:]
            uncertainty = handle["uncertainty"][:]
            kind = handle.attrs["uncertainty"]
        assert scores.shape == shape and 0 <= scores.min() and scores.max() <= 1
        assert uncertainty.shape == shape and 0 <= uncertainty.min() and uncertainty.max() <= 0.5
        if top_k == 1:  # no spread: the closeness to the decision boundary
            assert kind.startswith("0.5 - |p - 0.5|")
            np.testing.assert_allclose(uncertainty, 0.5 - np.abs(scores - 0.5), atol=1e-6)
        else:
            assert kind == "std across members" and uncertainty.max() > 0
        with h5py.File(results / name / "segmentation.h5") as handle:
            segmentation = handle["segmentation"][:]
        assert segmentation.dtype == np.uint8 and set(np.unique(segmentation)) <= {0, 1}
        np.testing.assert_array_equal(
            tifffile.imread(results / name / "segmentation.tif"), segmentation
        )
        with h5py.File(results / name / "region_scores.h5") as handle:
            windows = handle["scores"][:]
            margin = int(handle.attrs["margin"])
        assert windows.shape == (10, 24 + 8, 24 + 8) and margin == 4  # 4 x sigma 1
        # Scores from the region crops equal the full-volume scores at the same voxels.
        regions = pd.read_csv(results / "demo" / name / "regions.csv")
        compared = 0
        for window, row in zip(windows, regions.itertuples(), strict=True):
            y0, x0 = row.y - margin, row.x - margin
            if y0 >= 0 and x0 >= 0 and y0 + 32 <= shape[1] and x0 + 32 <= shape[2]:
                np.testing.assert_allclose(
                    window, scores[row.z, y0 : y0 + 32, x0 : x0 + 32], atol=2e-5
                )
                compared += 1
        assert compared >= 3
    chosen = json.loads((results / "postprocess.json").read_text())
    assert chosen["sigma"] in (0.0, 1.0) and chosen["threshold"] in (0.4, 0.5)
    assert chosen["val_regions"] == 4  # 2 per data set
    methods = {"cnn", "otsu", "rf"} if forest else {"cnn", "otsu"}
    for table in ("table2", "table3"):
        frame = pd.read_csv(results / f"tables/{table}.csv")
        assert set(frame.dataset) == {"T22", "T45", "Combined"}
        assert set(frame.method) == methods
        assert frame[["train", "val", "test"]].notna().all().all()
    ttest = pd.read_csv(results / "tables/porosity_ttest.csv")
    assert list(ttest.dataset) == ["T22", "T45"] and (ttest.regions == 10).all()
    volume = pd.read_csv(results / "tables/full_volume.csv")
    assert set(volume.method) == methods and volume.mIoU.between(0, 1).all()
    assert sorted(volume.dataset) == sorted(["T22", "T45"] * len(methods))
    # The structure of each CNN segmentation and of its truth; porosity as full_volume.csv
    structure = pd.read_csv(results / "tables/structure.csv")
    porosity = structure[structure.metric == "porosity"].set_index("dataset")
    cnn = volume[volume.method == "cnn"].set_index("dataset")
    assert sorted(porosity.index) == ["T22", "T45"]
    np.testing.assert_allclose(porosity.truth, cnn.porosity_truth[porosity.index])
    np.testing.assert_allclose(porosity.segmentation, cnn.porosity_automatic[porosity.index])
    np.testing.assert_allclose(structure.difference, structure.segmentation - structure.truth)
    assert structure.metric.str.startswith("tortuosity_diffusive").sum() == 6
    assert (results / "figures/structure.png").stat().st_size > 10_000
    assert (results / "model/member1.keras").exists() == (top_k == 2)
    if forest:
        forest_scores = results / "forest/T22/scores.h5"
        with h5py.File(forest_scores) as handle:
            assert handle["scores"].shape == (6, 96, 96)
        assert (results / "forest/T22/segmentation.tif").exists()
        for seed in range(top_k):
            params = json.loads((results / f"train/nxy77_nz3/seed{seed}/params.json").read_text())
            assert params["mode"] == "dense" and params["unlabelled"]["method"] == "pseudo"
        best = json.loads((results / "selection/best.json").read_text())
        assert len(best["ensemble"]) == 2 and best["ensemble"][0] == best["run_dir"]
    for figure in ("fig8_regions", "fig9_slices"):
        assert (results / f"figures/{figure}.png").stat().st_size > 10_000
    run_snakemake(project, "--report", "report.html")
    assert (project / "report.html").stat().st_size > 10_000
    if padding == "same":
        # The approximate dense engine on this 'same' model: opt in, and the log states the
        # label agreement with sliding on the validation regions (2 per data set).
        config["inference"].update(engine="dense", allow_approximate_dense=True)
        write_project(tmp_path, config)
        run_snakemake(project, "results/T22/region_scores.h5", "--forcerun", "predict_regions")
        log = (project / "logs/predict_regions/T22.log").read_text()
        agreement = re.search(r"label agreement with sliding: (\S+) on 2 val regions", log)
        assert agreement and 0.5 <= float(agreement.group(1)) <= 1, log
