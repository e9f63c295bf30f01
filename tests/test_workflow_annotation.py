"""A data set as a folder of per-slice TIFFs with ImageJ spacing, annotated by a sparse 0/1/2
label volume painted (blobs and strokes) in its unaligned frame, beside a predict-only data
set: both are segmented with their voxel size (TIFF and OME-Zarr), the painted regions are
trained on and scored, and a second project reuses the model on the painted data set.

Issue 13 also asks that the annotated data set beat its own Otsu row. It does, on the whole
volume against the simulator's truth and on the mean of its Table 3 rows, with the demo's
optimiser (Adam at 10^-3, as config/config.yaml) and a 17 x 3 patch network: full volume
0.800 against Otsu's 0.718, Table 3 train/val/test 0.82/0.77/0.82 against 0.69/0.62/0.89
(2026-11-28, this test's data and settings). Its 5 test regions are too few to compare on
alone. In five other runs (17 x 1 on this data; other draws of data and paint, 3 or 5 blobs
per slice) the CNN won the whole volume every time, by 0.05-0.09 (0.783/0.718, 0.834/0.746,
0.760/0.712, 0.785/0.718, 0.805/0.746), and the mean of its Table 3 rows by 0.03-0.15; the
test split alone it won in three of the six runs. With the schema's SGD (momentum 0.99) the
CNN fell short of Otsu: 0.701 (17 x 1), 0.674 (17 x 3). So did the 81-voxel dense networks,
whose field is most of these 96-px slices: 0.63-0.68, even when taught by the random forest
(which reached 0.774)."""

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import planned_jobs, read_napari_store, run_snakemake, write_project
from skimage.draw import disk, line

from fibseg.demo.synth import SynthSpec, synthesize
from fibseg.io.volume import metadata_voxel_size_nm, read_volume

pytestmark = pytest.mark.workflow

SETTINGS = {
    "datasets": "config/datasets.tsv",
    "grid": {"n_xy": [17], "n_z": [3], "seeds": 1},
    "sampling": {"fraction": 0.45, "seed": 1},
    "training": {
        "epochs": 15,
        "batch_size": 32,
        "optimizer": "adam",
        "search": {"log10_lr0": [-3.0], "k": [20]},
    },
    "forest": {"enabled": False},
    "structure": {"enabled": False},
    "inference": {"slices_per_job": 6, "extract_batch": 4096, "predict_batch": 1024},
    "postprocess": {"sigma_grid": [0.0, 1.0], "threshold_grid": [0.4, 0.5]},
    # The paper's rigid chain: on 6 slices of 96 px the joint solve's drift test cannot tell these
    # 1-px steps from the noise (z = 2.2 against still_sigmas 4) and keeps the slices still.
    "align": {"method": "previous", "model": "rigid"},
}
SHIFTS = [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2)]  # drift (y, x) per slice, px
CALIBRATION = {  # 50 nm slices of 10 x 10 nm pixels, as Fiji saves an image sequence
    "imagej": True,
    "resolution": (100.0, 100.0),
    "metadata": {"unit": "micron", "spacing": 0.05},
}


def paint(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sparse labels drawn from the truth: per slice three round blobs and two strokes
    (2 px wide), 1 = pore, 2 = solid, 0 elsewhere."""
    painted = np.zeros_like(truth, dtype=np.uint8)
    depth, height, width = truth.shape
    for z in range(depth):
        chosen = np.zeros((height, width), bool)
        for _ in range(3):
            centre = rng.integers(10, (height - 10, width - 10))
            chosen[disk(tuple(centre), 6, shape=(height, width))] = True
        for _ in range(2):
            y0, x0, y1, x1 = rng.integers(4, min(height, width) - 6, 4)
            rows, cols = line(y0, x0, y1, x1)
            chosen[rows, cols] = chosen[rows + 1, cols] = True
        painted[z][chosen] = truth[z][chosen] + 1
    return painted


def drifted(volume: np.ndarray) -> np.ndarray:
    """Each slice shifted by SHIFTS (a stage that drifts): the unaligned frame."""
    return np.stack(
        [np.roll(plane, shift, axis=(0, 1)) for plane, shift in zip(volume, SHIFTS, strict=True)]
    )


def test_painted_annotation_on_a_slice_folder_beside_a_predict_only_volume(tmp_path):
    spec = SynthSpec(
        porosity=0.3, slices=6, height=96, width=96, n_regions=4, region_size=16, drift_px=0.0
    )
    spec = SynthSpec(**{**spec.__dict__, "drift_deg": 0.0})
    data = synthesize(spec)  # without drift of its own: SHIFTS is the only drift
    volume, truth = drifted(data["volume"]), drifted(data["truth"])
    annotation = paint(truth, np.random.default_rng(4))
    assert set(np.unique(annotation)) == {0, 1, 2} and (annotation > 0).mean() < 0.2
    project = tmp_path / "project"
    slices = project / "data/run1"
    slices.mkdir(parents=True)
    for z, plane in enumerate(volume):
        tifffile.imwrite(slices / f"slice_{z:03d}.tif", plane, **CALIBRATION)
    tifffile.imwrite(project / "data/painted.tif", annotation)
    tifffile.imwrite(project / "data/truth.tif", data["truth"])  # the aligned (slice 0) frame
    other = synthesize(SynthSpec(porosity=0.4, slices=5, height=96, width=96, n_regions=2, seed=9))
    tifffile.imwrite(
        project / "data/other.tif",
        other["volume"],
        imagej=True,
        resolution=(1 / 0.008, 1 / 0.008),
        metadata={"unit": "micron", "spacing": 0.03, "axes": "ZYX"},
    )
    sheet = (
        "name\tvolume\tannotation\taligned\ttruth\n"
        "PAINT\tdata/run1\tdata/painted.tif\tfalse\tdata/truth.tif\n"
        "NEW\tdata/other.tif\t\tfalse\t\n"
    )
    write_project(project, SETTINGS, sheet)
    run_snakemake(project)
    results = project / "results"

    # the labels were moved with the volume: back onto the undrifted truth
    with h5py.File(results / "PAINT/annotation.h5", "r") as handle:
        moved = handle["annotation"][:]
    labelled = moved > 0
    agreement = np.mean(moved[labelled] - 1 == data["truth"][labelled])
    assert agreement > 0.93 and labelled.sum() > 0.9 * (annotation > 0).sum()
    regions = pd.read_csv(results / "split.csv")
    assert set(regions.dataset) == {"PAINT"} and len(regions) >= 15

    for name, voxel, depth in (("PAINT", (50.0, 10.0, 10.0), 6), ("NEW", (30.0, 8.0, 8.0), 5)):
        segmentation = tifffile.imread(results / name / "segmentation.tif")
        assert segmentation.shape == (depth, 96, 96)
        assert metadata_voxel_size_nm(str(results / name / "segmentation.tif")) == pytest.approx(
            voxel
        )
        # the OME-Zarr store (on by default): its label image is 1 pore, 2 solid
        store = results / name / f"{name}.ome.zarr"
        labels = read_volume(f"{store}:/labels/segmentation")
        np.testing.assert_array_equal(labels, segmentation + 1)
        assert metadata_voxel_size_nm(f"{store}:/labels/segmentation") == pytest.approx(voxel)
        found = read_napari_store(store)  # valid, and read as napari-ome-zarr reads it
        np.testing.assert_array_equal(found["labels"], labels)
        assert set(np.unique(found["labels"])) == {1, 2}  # pores show in napari
        assert found["image_scale"] == pytest.approx(np.array(voxel) / 1e3)
        assert list(found["channels"]) == ["EM", "scores", "uncertainty"]
    for table in ("table2", "table3"):
        frame = pd.read_csv(results / f"tables/{table}.csv")
        assert set(frame.method) == {"cnn", "otsu"} and "NEW" not in set(frame.dataset)
        miou = frame[(frame.dataset == "PAINT") & (frame.metric == "mIoU")].set_index("method")
        assert (miou.loc["cnn", ["train", "val", "test"]] > 0.5).all()
        # the painted data set beats its own Otsu row (module docstring: by 0.07 and 0.08)
        splits = miou[["train", "val", "test"]].mean(axis=1)
        assert splits["cnn"] > splits["otsu"] + 0.02, miou
    assert (results / "figures/fig8_regions.png").stat().st_size > 10_000
    # the whole volume against its truth: the CNN beats Otsu there too
    full = pd.read_csv(results / "tables/full_volume.csv").set_index("method")
    assert set(full.dataset) == {"PAINT"} and set(full.index) == {"cnn", "otsu"}
    assert (full["voxels"] == 6 * 96 * 96).all()
    assert full.loc["cnn", "mIoU"] > full.loc["otsu", "mIoU"] + 0.04, full

    # A second project segments the painted data set with the first one's model and
    # post-processing: nothing is trained, and the segmentation is the same voxel for voxel.
    second = tmp_path / "second"
    (second / "data").mkdir(parents=True)
    (second / "data/run1").symlink_to(slices)
    for name in ("painted.tif", "truth.tif"):
        (second / "data" / name).symlink_to(project / "data" / name)
    pretrained = {
        "model": str(results / "model/best.keras"),
        "postprocess": str(results / "postprocess.json"),
    }
    write_project(second, {**SETTINGS, "pretrained": pretrained}, sheet.split("NEW")[0])
    jobs = planned_jobs(second)
    assert {"check_model", "predict_slices", "postprocess", "export_ome_zarr"} <= jobs
    assert not jobs & {"train", "sample", "split", "select_model", "optimize_postprocess"}
    run_snakemake(second)
    np.testing.assert_array_equal(
        tifffile.imread(second / "results/PAINT/segmentation.tif"),
        tifffile.imread(results / "PAINT/segmentation.tif"),
    )
