"""Painted annotations: regions derived from a 0/1/2 label volume, moved by the alignment,
and their unlabelled voxels (IGNORE) never sampled, trained on or scored."""

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from helpers import region_tiles

from fibseg.annotation.regions import IGNORE, RegionSet, extract_regions, regions_from_annotation
from fibseg.annotation.sampling import labelled_voxels
from fibseg.evaluation.evaluate import RegionResult, metrics_table, otsu_results
from fibseg.evaluation.metrics import confusion, porosity
from fibseg.evaluation.postprocess import optimize
from fibseg.io.errors import InputError
from fibseg.io.volume import Volume
from fibseg.pipeline.checks import check_annotation, check_dataset, check_labels
from fibseg.pipeline.sheet import read_sheet
from fibseg.preprocess.alignment import align_labels, transforms_from_table, transforms_table
from fibseg.training.tiles import class_weights, voxel_weights

I = IGNORE  # noqa: E741


def painted() -> np.ndarray:
    """Slice 0: a solid blob (2) and, apart, a diagonal stroke of pore (1); slice 1: nothing;
    slice 2: a stroke that crosses from pore into solid."""
    annotation = np.zeros((3, 12, 14), np.uint8)
    annotation[0, 1:4, 2:4] = 2  # blob, 3 x 2
    annotation[0, 2, 4] = 2  # a bump on it
    for step in range(4):  # diagonal stroke, 8-connected
        annotation[0, 6 + step, 8 + step] = 1
    annotation[2, 5, 1:4] = 1  # horizontal stroke: pore then solid
    annotation[2, 5, 4:7] = 2
    return annotation


def test_regions_from_a_painted_volume_are_the_groups_bounding_boxes():
    table, labels = regions_from_annotation(painted())
    expected = pd.DataFrame(
        {
            "z": [0, 0, 2],
            "y": [1, 6, 5],
            "x": [2, 8, 1],
            "height": [3, 4, 1],
            "width": [3, 4, 6],
        }
    )
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert labels.shape == (3, 4, 6) and labels.dtype == np.uint8  # the largest box
    np.testing.assert_array_equal(
        labels[0],
        [[1, 1, I, I, I, I], [1, 1, 1, I, I, I], [1, 1, I, I, I, I], [I, I, I, I, I, I]],
    )
    np.testing.assert_array_equal(
        labels[1],
        [[0, I, I, I, I, I], [I, 0, I, I, I, I], [I, I, 0, I, I, I], [I, I, I, 0, I, I]],
    )
    np.testing.assert_array_equal(labels[2, 0], [0, 0, 0, 1, 1, 1])
    assert (labels[2, 1:] == I).all()


def test_another_group_inside_a_box_is_not_labelled_twice():
    annotation = np.zeros((1, 10, 10), np.uint8)
    annotation[0, 0, 0:8] = 2  # a long stroke: a wide box
    annotation[0, 3:5, 2:4] = 1  # a blob below it, inside the stroke's common box
    table, labels = regions_from_annotation(annotation)
    assert len(table) == 2 and labels.shape == (2, 2, 8)
    assert np.count_nonzero(labels != I) == annotation.astype(bool).sum()


def test_labels_are_moved_by_the_alignment_transform_nearest_neighbour():
    annotation = painted()
    transforms = np.repeat(np.eye(3)[None], 3, axis=0)
    transforms[2, 0, 2], transforms[2, 1, 2] = 1.0, -2.0  # output (y, x) = input (y + 2, x - 1)
    angle = np.pi / 2  # slice 0 turned by 90 degrees about the origin, then shifted
    transforms[0] = [
        [np.cos(angle), -np.sin(angle), 0],
        [np.sin(angle), np.cos(angle), -13],
        [0, 0, 1],
    ]
    # the matrices survive alignment.csv
    table = transforms_table(transforms)
    np.testing.assert_allclose(transforms_from_table(table), transforms)
    moved = align_labels(annotation, transforms_from_table(table))
    assert moved.dtype == np.uint8 and set(np.unique(moved)) <= {0, 1, 2}
    expected = np.zeros_like(annotation[2])
    expected[7, 0:3] = 1  # x 1..3 -> 0..2
    expected[7, 3:6] = 2
    np.testing.assert_array_equal(moved[2], expected)
    np.testing.assert_array_equal(moved[1], 0)
    # slice 0: output (y, x) reads input (x_in, y_in) = (cos x - sin y, sin x + cos y - 13)
    # = (-y, x - 13) rounded: input (y, x) = (x_out - 13, -y_out), i.e. a quarter turn
    ys, xs = np.nonzero(annotation[0])
    out = np.zeros_like(annotation[0], shape=(12, 14))
    for y, x in zip(ys, xs, strict=True):
        y_out, x_out = -x, y + 13
        if 0 <= y_out < 12 and 0 <= x_out < 14:
            out[y_out, x_out] = annotation[0, y, x]
    np.testing.assert_array_equal(moved[0], out)


def region_set() -> RegionSet:
    """Painted regions on a random volume, with 4 voxels of context."""
    annotation = painted()
    table, labels = regions_from_annotation(annotation)
    crops = np.random.default_rng(0).random((3, 3, 4 + 8, 6 + 8)).astype(np.float32)
    return RegionSet("D", crops, labels, table, 4, 1)


def test_ignored_voxels_are_never_sampled():
    regions = region_set()
    split = pd.DataFrame({"dataset": "D", "region": [0, 1, 2], "split": "train"})
    voxels = labelled_voxels({"D": regions}, split, "train")
    painted_voxels = np.argwhere(painted() > 0)
    assert len(voxels) == len(painted_voxels) == 7 + 4 + 6
    assert set(map(tuple, voxels[["z", "y", "x"]].to_numpy())) == set(map(tuple, painted_voxels))
    truth = painted()[voxels.z, voxels.y, voxels.x] == 2
    np.testing.assert_array_equal(voxels.label.to_numpy(), truth.astype(np.uint8))


def test_ignored_voxels_weigh_nothing_in_dense_training():
    rng = np.random.default_rng(1)
    annotation = np.zeros((2, 40, 40), np.uint8)
    annotation[0, 5:15, 5:9] = 2
    annotation[0, 20:22, 3:30] = 1
    annotation[1, 10:30, 10:12] = 1
    annotation[1, 10:12, 12:20] = 2
    table, labels = regions_from_annotation(annotation)
    margin = 40
    crops = rng.random(
        (len(table), 3, labels.shape[1] + 2 * margin, labels.shape[2] + 2 * margin)
    ).astype(np.float32)
    regions = RegionSet("D", crops, labels, table, margin, 1)
    _, tile_labels, mask = region_tiles(regions, range(len(table)), 17, 1)
    assert mask.sum() == np.count_nonzero(annotation)
    weights = class_weights(labels)
    np.testing.assert_allclose(
        weights, class_weights(np.r_[np.zeros(27 * 2 + 20 * 2), np.ones(40 + 16)])
    )
    per_voxel = voxel_weights(tile_labels, mask, weights)
    assert per_voxel[mask == 0].max() == 0 and per_voxel[mask == 1].min() > 0
    from fibseg.training.tiles import DenseTiles

    tiles = DenseTiles({"D": regions}, {"D": list(range(len(table)))}, 17, 1, 8, seed=0)
    assert tiles.labelled == np.count_nonzero(annotation)
    batches = [tiles.tiles(i)[2] for i in range(len(tiles))]
    assert sum(np.count_nonzero(w) for w in batches) == np.count_nonzero(annotation)


def test_ignored_voxels_are_not_scored():
    labels = np.array([[0, 1, I], [I, I, 1]], np.uint8)
    prediction = np.array([[0, 1, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(confusion(labels, prediction), [[1, 0], [1, 1]])
    assert porosity(labels) == pytest.approx(1 / 3)
    table = metrics_table([RegionResult("D", 0, "test", labels, prediction)], "m")
    row = table.set_index(["dataset", "metric"]).loc[("D", "porosity_automatic"), "test"]
    assert row == pytest.approx(2 / 3)  # of the 3 labelled voxels, 2 called pore
    assert table.set_index(["dataset", "metric"]).loc[("D", "accuracy"), "test"] == 2 / 3
    # post-processing is chosen on labelled voxels only: wrong scores where IGNORE do not count
    window = np.pad(np.where(labels == 1, 0.9, 0.1), 2, mode="edge")
    window[2:4, 2:5][labels == I] = 0.9 - np.where(labels == 1, 0.9, 0.1)[labels == I]
    best, _ = optimize([window], [labels], 2, [0.0], [0.5], 1)
    assert best["val_mIoU"] == 1.0
    # the Otsu floor on painted regions
    regions = region_set()
    split = pd.DataFrame({"dataset": "D", "region": [0, 1, 2], "split": "test"})
    for result in otsu_results(regions, split):
        assert result.prediction.shape == result.labels.shape


def test_painted_regions_extract_common_boxes(tmp_path):
    volume = np.random.default_rng(0).random((3, 12, 14)).astype(np.float32)
    with h5py.File(tmp_path / "p.h5", "w") as handle:
        handle["volume"] = volume
    table, labels = regions_from_annotation(painted())
    with Volume(str(tmp_path / "p.h5")) as source:
        regions = extract_regions(source, table, labels, "D", margin_xy=3, margin_z=1)
    assert regions.crops.shape == (3, 3, 4 + 6, 6 + 6)
    padded = np.pad(volume, ((1, 1), (3, 7), (3, 9)), mode="reflect")
    row = table.iloc[2]  # its box reaches beyond its own 1 x 6 bounding box
    np.testing.assert_array_equal(
        regions.crops[2], padded[row.z : row.z + 3, row.y : row.y + 10, row.x : row.x + 12]
    )
    np.testing.assert_array_equal(regions.labels, labels)
    regions.write(tmp_path / "r.h5")
    again = RegionSet.read(tmp_path / "r.h5")
    np.testing.assert_array_equal(again.labels, labels)
    pd.testing.assert_frame_equal(again.table[table.columns], table, check_dtype=False)


def test_rectangles_of_different_sizes_are_padded_with_ignore(tmp_path):
    volume = np.random.default_rng(0).random((2, 30, 30)).astype(np.float32)
    with h5py.File(tmp_path / "p.h5", "w") as handle:
        handle["volume"] = volume
    table = pd.DataFrame({"z": [0, 1], "y": [2, 5], "x": [3, 4], "height": [6, 4], "width": [5, 8]})
    labels = np.zeros((2, 6, 8), np.uint8)
    labels[0, :6, :5], labels[1, :4, :8] = 1, 1
    check_labels(labels, table, "D", "labels.tif")
    with Volume(str(tmp_path / "p.h5")) as source:
        regions = extract_regions(source, table, labels, "D", margin_xy=2, margin_z=0)
    assert (regions.labels[0, :, 5:] == I).all() and (regions.labels[0, :, :5] == 1).all()
    assert (regions.labels[1, 4:] == I).all() and (regions.labels[1, :4] == 1).all()
    # one size: the labels are kept exactly as given (no IGNORE)
    same = table.assign(height=6, width=8)
    with Volume(str(tmp_path / "p.h5")) as source:
        kept = extract_regions(source, same, labels, "D", margin_xy=2, margin_z=0)
    np.testing.assert_array_equal(kept.labels, labels)
    with pytest.raises(InputError, match="masks are 6 x 7 but the regions CSV"):
        check_labels(labels[:, :, :7], table, "D", "labels.tif")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a[:2], r"the annotation has shape \(2, 12, 14\) but the volume \(3, 12, 14\)"),
        (lambda a: np.where(a == 2, 3, a), r"holds values \[3\]; only 0 \(unlabelled\), 1"),
        (lambda a: np.zeros_like(a), "the annotation has no labelled voxel"),
        (lambda a: np.where(a == 1, 2, a), r"labels only one class: no voxel is pore \(1\)"),
        (lambda a: np.where(a == 2, 1, a), r"labels only one class: no voxel is solid \(2\)"),
    ],
)
def test_bad_annotations_are_named(tmp_path, edit, message):
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, np.zeros((3, 12, 14), np.uint8), photometric="minisblack")
    path = tmp_path / "painted.tif"
    tifffile.imwrite(path, np.asarray(edit(painted())).astype(np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match=message) as caught:
        check_dataset("D", str(volume), annotation_spec=str(path))
    assert "data set 'D'" in str(caught.value) and str(path) in str(caught.value)
    assert "Fix:" in str(caught.value)


def test_good_annotation_passes(tmp_path):
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, np.zeros((3, 12, 14), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "painted.tif", painted(), photometric="minisblack")
    summary = check_dataset("D", str(volume), annotation_spec=str(tmp_path / "painted.tif"))
    assert summary["annotation"] == {"unlabelled": 3 * 12 * 14 - 17, "pore": 7, "solid": 10}
    assert check_annotation(painted(), (3, 12, 14), "D", "x")["pore"] == 7


def test_sheet_with_rectangles_and_an_annotation_is_an_error(tmp_path):
    sheet = tmp_path / "datasets.tsv"
    sheet.write_text(
        "name\tvolume\tregions\tlabels\tannotation\n"
        "P\tp.tif\t\t\tpainted.tif\n"
        "B\tb.tif\tr.csv\tl.tif\tpainted.tif\n"
    )
    with pytest.raises(InputError, match="gives both 'regions' and 'annotation'") as caught:
        read_sheet(str(sheet))
    assert "data set 'B'" in str(caught.value) and str(sheet) in str(caught.value)
    sheet.write_text("name\tvolume\tannotation\nP\tp.tif\tpainted.tif\nQ\tq.tif\t\n")
    frame = read_sheet(str(sheet))
    assert frame.annotation.tolist() == ["painted.tif", None]
