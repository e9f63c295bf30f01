"""Labels from ilastik and napari as they are exported: ilastik's HDF5 with only
/exported_data of shape (z, y, x, 1) and labels numbered in the order they were added, read
through the config key annotation_labels; napari label layers saved as TIFF or Zarr."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from helpers import run_script

from fibseg.annotation.labels import check_annotation_labels, painted_labels
from fibseg.io.errors import InputError, LimitError
from fibseg.io.volume import Volume, read_volume
from fibseg.pipeline.checks import check_dataset
from fibseg.pipeline.project import load_config

SHAPE = (4, 16, 18)
# ilastik's label order in this project: "solid" was added first, then "pore", then "resin"
ILASTIK = {"pore": [2], "solid": [1], "unlabelled": [3]}
ILASTIK_AXISTAGS = json.dumps(
    {
        "axes": [
            {"key": key, "typeFlags": flags, "resolution": 0, "description": ""}
            for key, flags in (("z", 2), ("y", 2), ("x", 2), ("c", 1))
        ]
    }
)


def fibseg_painting():
    """fibseg's own values: 0 unlabelled, 1 pore (7 voxels), 2 solid (10 voxels)."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 2:3, 2:9] = 1
    labels[2, 5:7, 3:8] = 2
    return labels


def ilastik_export(path, painting=None):
    """Export of ilastik's Labels layer: one dataset /exported_data, (z, y, x, 1) uint8, the
    labels numbered as drawn (solid 1, pore 2, resin 3) and its axistags."""
    painting = fibseg_painting() if painting is None else painting
    drawn = np.select([painting == 1, painting == 2], [2, 1], 0).astype(np.uint8)
    drawn[3, 0:2, 0:2] = 3  # resin, not to be learned
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("exported_data", data=drawn[..., None], compression="gzip")
        dataset.attrs["axistags"] = ILASTIK_AXISTAGS
    return str(path)


@pytest.fixture
def volume(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, SHAPE).astype(np.uint8)
    tifffile.imwrite(tmp_path / "volume.tif", data, photometric="minisblack")
    return str(tmp_path / "volume.tif")


def test_ilastik_export_is_read_as_it_is(tmp_path):
    spec = ilastik_export(tmp_path / "labels.h5")
    with Volume(spec, "D") as labels:  # no inner path given: /exported_data
        assert labels.shape == SHAPE and labels.inner == "/exported_data"
        assert set(np.unique(labels.read()).tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(read_volume(f"{spec}:/exported_data"), read_volume(spec))


def test_ilastik_export_is_an_annotation_with_the_mapping(tmp_path, volume):
    spec = ilastik_export(tmp_path / "labels.h5")
    summary = check_dataset("D", volume, annotation_spec=spec, annotation_labels=ILASTIK)
    assert summary["annotation"] == {"unlabelled": int(np.prod(SHAPE)) - 17, "pore": 7, "solid": 10}
    np.testing.assert_array_equal(painted_labels(read_volume(spec), ILASTIK), fibseg_painting())


def test_unmapped_label_values_name_the_values_and_the_key(tmp_path, volume):
    spec = ilastik_export(tmp_path / "labels.h5")
    with pytest.raises(InputError) as caught:
        check_dataset("D", volume, annotation_spec=spec)  # 1 pore, 2 solid: 3 is unknown
    message = str(caught.value)
    assert "data set 'D'" in message and "labels.h5" in message
    assert "holds values [3]; only 0 (unlabelled), 1 (pore) and 2 (solid) are allowed" in message
    assert "all values found: [0, 1, 2, 3]" in message and "annotation_labels" in message
    assert "Fix:" in message and "docs/labels.md" in message


def test_hdf5_without_volume_reads_its_only_dataset_and_lists_many(tmp_path):
    with h5py.File(tmp_path / "one.h5", "w") as handle:
        handle["labels/painted"] = fibseg_painting()[None, ..., None]  # (1, z, y, x, 1)
    with Volume(str(tmp_path / "one.h5"), "D") as labels:
        assert labels.shape == SHAPE and labels.inner == "/labels/painted"
        np.testing.assert_array_equal(labels.read(1, 3), fibseg_painting()[1:3])
    with h5py.File(tmp_path / "two.h5", "w") as handle:
        handle["a"], handle["b"] = fibseg_painting(), np.zeros(3)
    with pytest.raises(InputError, match=r"no '/volume', no '/exported_data'.*/a \(4, 16, 18\)"):
        Volume(str(tmp_path / "two.h5"), "D")
    with pytest.raises(InputError, match=r"has no HDF5 dataset '/volume' \(it holds: a, b\)"):
        Volume(f"{tmp_path / 'two.h5'}:/volume", "D")  # a named dataset is not guessed


def test_tiff_with_a_channel_axis_is_read(tmp_path):
    for name, kwargs in (("plain.tif", {}), ("zlib.tif", {"compression": "zlib"})):
        tifffile.imwrite(tmp_path / name, fibseg_painting()[..., None], **kwargs)
        with Volume(str(tmp_path / name), "D") as labels:
            assert labels.shape == SHAPE
            np.testing.assert_array_equal(labels.read(), fibseg_painting())


def test_napari_label_layers_as_tiff_and_zarr(tmp_path, volume):
    """napari's Labels layer: int32, saved as TIFF by its builtin writer (zlib level 1), or
    its data written to Zarr from the console."""
    layer = fibseg_painting().astype(np.int32)
    zlib = {"compression": "zlib", "compressionargs": {"level": 1}}
    tifffile.imwrite(tmp_path / "labels.tif", layer, photometric="minisblack", **zlib)
    zarr.save_array(str(tmp_path / "labels.zarr"), layer)
    for spec in (tmp_path / "labels.tif", tmp_path / "labels.zarr"):
        summary = check_dataset("D", volume, annotation_spec=str(spec))
        assert summary["annotation"]["pore"] == 7 and summary["annotation"]["solid"] == 10


def test_the_mapping_is_checked_in_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config()["annotation_labels"] == {"pore": [1], "solid": [2], "unlabelled": []}
    assert load_config(extra={"annotation_labels": {"pore": [2], "solid": [1]}})[
        "annotation_labels"
    ] == {"pore": [2], "solid": [1], "unlabelled": []}
    with pytest.raises(InputError, match=r"annotation_labels.: label value 1 is given for both"):
        load_config(extra={"annotation_labels": {"pore": [1], "solid": [1, 2]}})
    with pytest.raises(InputError, match="does not match the schema"):
        load_config(extra={"annotation_labels": {"pore": [0]}})
    with pytest.raises(LimitError, match="label value 2 is given for both pore and unlabelled"):
        check_annotation_labels({"pore": [2], "solid": [1], "unlabelled": [2]})


def test_rule_align_annotation_maps_the_ilastik_values(tmp_path):
    spec = ilastik_export(tmp_path / "labels.h5")
    identity = {f"m{r}{c}": [float(r == c)] * SHAPE[0] for r in range(2) for c in range(3)}
    pd.DataFrame(identity).to_csv(tmp_path / "alignment.csv", index=False)
    run_script(
        "align_annotation.py",
        {
            "wildcards": {"ds": "D"},
            "input": {"transforms": str(tmp_path / "alignment.csv")},
            "output": [str(tmp_path / "annotation.h5")],
            "params": {"annotation": spec, "annotation_labels": ILASTIK},
            "log": [str(tmp_path / "align_annotation.log")],
        },
    )
    with h5py.File(tmp_path / "annotation.h5", "r") as handle:
        np.testing.assert_array_equal(handle["annotation"][:], fibseg_painting())


def test_a_single_slice_ilastik_export_keeps_its_slice_axis(tmp_path):
    """(1, y, x, 1): the channel axis is dropped first, so one slice stays (1, y, x)."""
    path = tmp_path / "one.h5"
    labels = np.zeros((1, 8, 9, 1), np.uint8)
    labels[0, 2:4, 3:5, 0] = 1
    with h5py.File(path, "w") as handle:
        handle["exported_data"] = labels
    with Volume(str(path)) as volume:
        assert volume.shape == (1, 8, 9)
        np.testing.assert_array_equal(volume.read(), labels[..., 0])
