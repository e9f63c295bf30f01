"""Real snakemake runs of the foundation: demo synthesis, checks, alignment, gradient."""

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
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
