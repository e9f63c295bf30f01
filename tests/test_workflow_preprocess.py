"""Real snakemake runs of the foundation: demo synthesis, checks, alignment, gradient."""

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
import zarr
from helpers import REPO, TINY_DEMO, run_snakemake, write_project

pytestmark = pytest.mark.workflow


def test_demo_to_preprocessed(tiny_demo):
    targets = [f"results/{name}/preprocessed.h5" for name in TINY_DEMO]
    run_snakemake(tiny_demo, *targets)
    for name, spec in TINY_DEMO.items():
        with h5py.File(tiny_demo / f"results/{name}/preprocessed.h5") as handle:
            volume = handle["volume"]
            assert volume.shape == (spec["slices"], spec["height"], spec["width"])
            assert volume.dtype == np.float32 and volume.chunks == (1, *volume.shape[1:])
            data = volume[:]
            assert 0 <= data.min() and data.max() <= 1
            assert list(handle.attrs["voxel_size_nm_zyx"]) == [50, 10, 10]
            assert {"slope_per_px", "intercept"} <= set(handle.attrs)
        transforms = pd.read_csv(tiny_demo / f"results/{name}/alignment.csv")
        assert len(transforms) == spec["slices"] and transforms.loc[0, "tx"] == 0
        assert (tiny_demo / f"logs/align/{name}.log").stat().st_size > 0
        assert (tiny_demo / f"results/benchmarks/align/{name}.tsv").exists()
    # Nothing left to do: every output is complete and up to date.
    again = run_snakemake(tiny_demo, *targets, "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_external_dataset_from_a_second_sheet(tmp_path):
    """A user's own HDF5 data set: a sheet plus a config overlay, nothing else edited."""
    rng = np.random.default_rng(0)
    raw = (rng.random((4, 40, 50)) * 4000 + 1000).astype(np.uint16)
    with h5py.File(tmp_path / "mine.h5", "w") as handle:
        handle["raw/stack"] = raw
    pd.DataFrame({"z": [1], "y": [2], "x": [3], "height": 8, "width": 8}).to_csv(
        tmp_path / "mine_regions.csv", index=False
    )
    tifffile.imwrite(
        tmp_path / "mine_labels.tif", np.ones((1, 8, 8), np.uint8), photometric="minisblack"
    )
    (tmp_path / "mine.tsv").write_text(
        "name\tvolume\tregions\tlabels\taligned\n"
        "MINE\tmine.h5:/raw/stack\tmine_regions.csv\tmine_labels.tif\ttrue\n"
    )
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"datasets": "mine.tsv"}))
    write_project(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))
    run_snakemake(tmp_path, "results/MINE/preprocessed.h5", "--configfile", "mine.yaml")
    assert not (tmp_path / "results/MINE/aligned.h5").exists()  # aligned: true skips align
    with h5py.File(tmp_path / "results/MINE/preprocessed.h5") as handle:
        expected = raw / 65535.0
        line = np.polyval(np.polyfit(np.arange(50), expected.mean(axis=(0, 1)), 1), np.arange(50))
        np.testing.assert_allclose(handle["volume"][:], expected - line + line.mean(), atol=1e-6)


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"sampling": {"fractoin": 0.1}}, "'fractoin' was unexpected"),
        ({"grid": {"n_z": [0]}}, "0 is less than the minimum of 1"),
        ({"demo": {"T22": {"porosity": 1.5}}}, "1.5 is greater than or equal to the maximum of 1"),
    ],
)
def test_bad_config_is_rejected_at_load(tiny_demo, overlay, message):
    (tiny_demo / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    process = run_snakemake(tiny_demo, "-n", "--configfile", "overlay.yaml", check=False)
    assert process.returncode != 0 and message in process.stderr + process.stdout


def test_missing_input_file_is_named_at_load(tiny_demo):
    (tiny_demo / "config/datasets.tsv").write_text(
        "name\tvolume\tregions\tlabels\nLOST\tdata/lost.tif\tdata/r.csv\tdata/l.tif\n"
    )
    process = run_snakemake(tiny_demo, "-n", check=False)
    output = process.stderr + process.stdout
    assert process.returncode != 0
    assert "data set 'LOST', file 'data/lost.tif'" in output and "does not exist" in output


def test_bad_annotations_fail_before_alignment(tiny_demo):
    run_snakemake(tiny_demo, "results/demo/T22/labels.tif")
    labels = tiny_demo / "results/demo/T22/labels.tif"
    tifffile.imwrite(labels, np.full((10, 24, 24), 2, np.uint8), photometric="minisblack")
    process = run_snakemake(tiny_demo, "results/T22/preprocessed.h5", check=False)
    output = process.stderr + process.stdout
    assert process.returncode != 0
    assert "data set 'T22'" in output and "found values [2]" in output
    assert not (tiny_demo / "results/T22/aligned.h5").exists()


def test_slice_folder_glob_and_ome_zarr_datasets(tmp_path):
    """A folder of per-slice TIFFs with ImageJ calibration runs to preprocessed.h5, which then
    carries the input's voxel size; a glob of slices and an OME-Zarr (sheet voxel size) plan
    the whole workflow."""
    rng = np.random.default_rng(0)
    raw = (rng.random((5, 40, 48)) * 4000 + 1000).astype(np.uint16)
    (tmp_path / "run1").mkdir()
    for z, image in enumerate(raw):
        tifffile.imwrite(
            tmp_path / f"run1/slice_{z + 1}.tif",
            image,
            imagej=True,
            resolution=(1 / 0.012, 1 / 0.012),
            metadata={"unit": "micron", "spacing": 0.03},
        )
    group = zarr.open_group(tmp_path / "v.ome.zarr", mode="w")
    group.zeros(name="0", shape=raw.shape, dtype=raw.dtype)[:] = raw
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    pd.DataFrame({"z": [1], "y": [2], "x": [3], "height": 8, "width": 8}).to_csv(
        tmp_path / "regions.csv", index=False
    )
    tifffile.imwrite(
        tmp_path / "labels.tif", np.ones((1, 8, 8), np.uint8), photometric="minisblack"
    )
    (tmp_path / "mine.tsv").write_text(
        "name\tvolume\tregions\tlabels\tvoxel_size_nm\n"
        "FOLDER\trun1\tregions.csv\tlabels.tif\t\n"
        "GLOB\trun1/slice_*.tif\tregions.csv\tlabels.tif\t\n"
        "ZARR\tv.ome.zarr\tregions.csv\tlabels.tif\t40,8,8\n"
    )
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"datasets": "mine.tsv"}))
    write_project(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))
    plan = run_snakemake(tmp_path, "-n", "--configfile", "mine.yaml")
    assert "segmentation" in plan.stdout + plan.stderr
    run_snakemake(tmp_path, "results/FOLDER/preprocessed.h5", "--configfile", "mine.yaml")
    for name in ("aligned.h5", "preprocessed.h5"):
        with h5py.File(tmp_path / f"results/FOLDER/{name}") as handle:
            assert handle["volume"].shape == raw.shape
            assert handle["volume"].compression == "gzip"
            np.testing.assert_allclose(
                handle["volume"].attrs["element_size_um"], [0.03, 0.012, 0.012]
            )
            assert '"key": "z"' in handle["volume"].attrs["axistags"]  # ilastik's axes
    again = run_snakemake(
        tmp_path, "results/FOLDER/preprocessed.h5", "--configfile", "mine.yaml", "-n"
    )
    assert "Nothing to be done" in again.stdout + again.stderr
