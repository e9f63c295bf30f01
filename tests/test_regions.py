import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.io import savemat

from fibseg.annotation.published import import_published, read_mat_split
from fibseg.annotation.regions import extract_regions
from fibseg.annotation.sampling import labelled_voxels, sample_split, split_regions
from fibseg.io.errors import InputError
from fibseg.io.volume import Volume
from fibseg.networks.windows import mirror_index

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def test_mirror_index_matches_numpy_reflect():
    for size in (1, 2, 5, 9):
        padded = np.pad(np.arange(size), 13, mode="reflect") if size > 1 else np.zeros(27, int)
        np.testing.assert_array_equal(mirror_index(np.arange(-13, size + 13), size), padded)


def test_context_crops_are_mirrored_at_the_edges(tmp_path):
    volume = np.random.default_rng(0).random((5, 30, 40)).astype(np.float32)
    with h5py.File(tmp_path / "p.h5", "w") as handle:
        handle["volume"] = volume
    table = pd.DataFrame(
        {"z": [0, 4, 2], "y": [0, 22, 10], "x": [32, 0, 15], "height": 8, "width": 8}
    )
    labels = np.ones((3, 8, 8), np.uint8)
    with Volume(str(tmp_path / "p.h5")) as source:
        regions = extract_regions(source, table, labels, "D", margin_xy=6, margin_z=2)
    padded = np.pad(volume, ((2, 2), (6, 6), (6, 6)), mode="reflect")
    for crop, row in zip(regions.crops, table.itertuples(), strict=True):
        expected = padded[row.z : row.z + 5, row.y : row.y + 20, row.x : row.x + 20]
        np.testing.assert_array_equal(crop, expected)
    regions.write(tmp_path / "r.h5")


def tables(counts):
    return {
        f"D{i}": pd.DataFrame({"z": 0, "y": 0, "x": 0, "height": 4, "width": 4}, index=range(n))
        for i, n in enumerate(counts)
    }


def test_split_is_reproducible_and_exact_per_dataset():
    first = split_regions(tables([100, 20, 10]), FRACTIONS, seed=1)
    again = split_regions(tables([100, 20, 10]), FRACTIONS, seed=1)
    pd.testing.assert_frame_equal(first, again)
    counts = first.groupby(["dataset", "split"]).size().unstack()
    assert counts.loc["D0"].to_dict() == {"test": 20, "train": 60, "val": 20}
    assert counts.loc["D1"].to_dict() == {"test": 4, "train": 12, "val": 4}
    assert counts.loc["D2"].to_dict() == {"test": 2, "train": 6, "val": 2}
    other = split_regions(tables([100, 20, 10]), FRACTIONS, seed=2)
    assert not first["split"].equals(other["split"])
    # Adding a data set leaves the others' splits as they were.
    more = split_regions(tables([100, 20, 10, 30]), FRACTIONS, seed=1)
    pd.testing.assert_frame_equal(more[more.dataset != "D3"].reset_index(drop=True), first)


def test_split_column_overrides_and_gaps_are_errors():
    table = tables([5])["D0"].assign(split=["train", "train", "val", "test", "test"])
    split = split_regions({"D0": table}, FRACTIONS, seed=1)
    assert split["split"].tolist() == ["train", "train", "val", "test", "test"]
    with pytest.raises(InputError, match=r"'D0'.*no region for val, test"):
        split_regions({"D0": table.assign(split="train")}, FRACTIONS, seed=1)
    with pytest.raises(InputError, match=r"train \+ val \+ test = 1.1, not 1"):
        split_regions(tables([10]), {"train": 0.7, "val": 0.2, "test": 0.2}, seed=1)


@pytest.fixture
def voxels():
    rng = np.random.default_rng(0)
    from fibseg.annotation.regions import RegionSet

    labels = (rng.random((10, 16, 16)) < 0.7).astype(np.uint8)  # 70 % solid
    table = pd.DataFrame({"z": np.arange(10), "y": 3, "x": 5, "height": 16, "width": 16})
    regions = {"D": RegionSet("D", np.empty(0), labels, table, 0, 0)}
    split = pd.DataFrame(
        {"dataset": "D", "region": range(10), "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 2}
    )
    return regions, split


def test_labelled_voxels_are_in_the_volume_frame(voxels):
    regions, split = voxels
    train = labelled_voxels(regions, split, "train")
    assert len(train) == 6 * 256
    first = train.iloc[17]
    assert (first.z, first.y, first.x) == (0, 3 + 1, 5 + 1)
    assert first.label == regions["D"].labels[0, 1, 1]


def test_train_samples_are_exactly_balanced_and_val_uniform(voxels):
    regions, split = voxels
    rng = np.random.default_rng(3)
    train = sample_split(labelled_voxels(regions, split, "train"), 0.1, True, rng, "train")
    assert len(train) == 154 and (train.label == 0).sum() == (train.label == 1).sum() == 77
    assert not train.duplicated().any()
    val_voxels = labelled_voxels(regions, split, "val")
    val = sample_split(val_voxels, 0.5, False, rng, "val")
    assert len(val) == 256
    assert abs(val.label.mean() - val_voxels.label.mean()) < 0.08


def test_sampling_that_yields_no_sample_of_a_class_is_an_error(voxels):
    regions, split = voxels
    with pytest.raises(InputError, match=r"train split needs 0 pore samples"):
        sample_split(
            labelled_voxels(regions, split, "train"),
            0.0005,
            True,
            np.random.default_rng(0),
            "train",
        )


def write_mat_v73_cell(path, masks):
    """A MATLAB v7.3 file: HDF5 with a cell array of references, each mask stored transposed."""
    with h5py.File(path, "w") as handle:
        refs = []
        for index, mask in enumerate(masks):
            handle[f"#refs#/{index}"] = mask.T.astype(np.uint8)
            refs.append(handle[f"#refs#/{index}"].ref)
        handle.create_dataset("M", data=np.array(refs, dtype=h5py.ref_dtype)[None, :])


def test_import_published_miniature_replica(tmp_path):
    rng = np.random.default_rng(0)
    n = 5
    crops = rng.integers(0, 65535, (n, 7, 384, 384), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "regions_HPC22.tif", crops.reshape(n * 7, 384, 384), photometric="minisblack"
    )
    masks = [(rng.random((256, 256)) < 0.3).astype(np.uint8) for _ in range(n)]
    masks[0][:10, :200] = 1  # not symmetric: a missing transpose would show
    write_mat_v73_cell(tmp_path / "manual.mat", masks)
    savemat(tmp_path / "split.mat", {"train_idx": [[1, 2, 3]], "val_idx": [[4]], "test_idx": [[5]]})
    regions = import_published(
        "HPC22",
        str(tmp_path / "regions_HPC22.tif"),
        str(tmp_path / "manual.mat"),
        str(tmp_path / "split.mat"),
        margin_xy=56,
        margin_z=1,
    )
    np.testing.assert_array_equal(regions.labels[0], masks[0])
    assert regions.crops.shape == (n, 3, 368, 368)
    np.testing.assert_allclose(
        regions.crops[2, 1, 56 : 56 + 256, 56 : 56 + 256],
        crops[2, 3, 64:320, 64:320] / 65535,
        rtol=1e-6,
    )
    assert regions.table["split"].tolist() == ["train", "train", "train", "val", "test"]
    wider = import_published(
        "HPC22",
        str(tmp_path / "regions_HPC22.tif"),
        str(tmp_path / "manual.mat"),
        None,
        margin_xy=56,
        margin_z=1,
        smooth_margin=16,
    )
    assert wider.margin_xy == 64 and wider.crops.shape == (n, 3, 384, 384)
    with pytest.raises(InputError, match="n_xy <= 129 and n_z <= 7"):
        import_published(
            "HPC22",
            str(tmp_path / "regions_HPC22.tif"),
            str(tmp_path / "manual.mat"),
            None,
            margin_xy=70,
            margin_z=1,
        )


def write_release_split(path, datasets=("HPC22", "HPC30", "HPC45")):
    """data_split.mat as released: MATLAB v5, one 1-based index variable per split and data
    set behind a common prefix (9 variables for the three data sets)."""
    variables = {}
    for offset, name in enumerate(datasets):
        order = np.roll(np.arange(1, 11), offset)
        for split, indices in (("train", order[:6]), ("val", order[6:8]), ("test", order[8:])):
            variables[f"idx_{split}_{name}"] = indices[None, :].astype(np.float64)
    savemat(path, variables, format="5")
    return variables


def test_release_split_layout_is_read_per_dataset(tmp_path):
    variables = write_release_split(tmp_path / "data_split.mat")
    assert len(variables) == 9
    for offset, name in enumerate(("HPC22", "HPC30", "HPC45")):
        split = read_mat_split(str(tmp_path / "data_split.mat"), name)
        order = np.roll(np.arange(10), offset)
        np.testing.assert_array_equal(split["train"], order[:6])
        np.testing.assert_array_equal(split["val"], order[6:8])
        np.testing.assert_array_equal(split["test"], order[8:])


def test_release_split_without_the_dataset_names_it(tmp_path):
    write_release_split(tmp_path / "data_split.mat", ("HPC22", "HPC45"))
    with pytest.raises(InputError) as error:
        read_mat_split(str(tmp_path / "data_split.mat"), "HPC30")
    text = str(error.value)
    assert "data set 'HPC30'" in text and "data_split.mat" in text
    assert "['HPC22', 'HPC45']" in text and "Fix: name the data set" in text
    variables = write_release_split(tmp_path / "partial.mat")
    del variables["idx_val_HPC30"]
    savemat(tmp_path / "partial.mat", variables, format="5")
    with pytest.raises(InputError, match=r"'HPC30'.*partial.mat.*val split of data set 'HPC30'"):
        read_mat_split(str(tmp_path / "partial.mat"), "HPC30")


def test_import_published_with_the_release_split(tmp_path):
    """The miniature replica of the import, with the v5 split of three data sets (10 regions
    each): HPC30's own split is applied, and indices beyond the regions are refused."""
    rng = np.random.default_rng(1)
    n = 10
    crops = rng.integers(0, 65535, (n * 7, 384, 384), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "regions_HPC30.tif", crops, photometric="minisblack")
    write_mat_v73_cell(tmp_path / "manual.mat", [np.zeros((256, 256), np.uint8)] * n)
    write_release_split(tmp_path / "data_split.mat")
    args = (str(tmp_path / "regions_HPC30.tif"), str(tmp_path / "manual.mat"))
    regions = import_published("HPC30", *args, str(tmp_path / "data_split.mat"), 8, 1)
    order = np.roll(np.arange(10), 1)
    assert set(regions.table["split"][order[:6]]) == {"train"}
    assert set(regions.table["split"][order[6:8]]) == {"val"}
    assert set(regions.table["split"][order[8:]]) == {"test"}
    write_mat_v73_cell(tmp_path / "manual.mat", [np.zeros((256, 256), np.uint8)] * 5)
    tifffile.imwrite(tmp_path / "regions_HPC30.tif", crops[:35], photometric="minisblack")
    with pytest.raises(InputError, match=r"'HPC30'.*data_split.mat.*TIFF holds 5 regions"):
        import_published("HPC30", *args, str(tmp_path / "data_split.mat"), 8, 1)
