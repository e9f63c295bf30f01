"""Volume readers (slice folders, globs, Zarr, OME-Zarr, MRC, HDF5, TIFF), their voxel sizes,
and the bad inputs that check_dataset must stop with a message naming data set, file and fix."""

from functools import partial

import h5py
import mrcfile
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from fibseg.io.errors import InputError
from fibseg.io.formats import split_spec
from fibseg.io.volume import Volume, metadata_voxel_size_nm, volume_files, voxel_size_nm
from fibseg.pipeline.checks import check_dataset
from fibseg.pipeline.sheet import check_external_inputs, read_sheet

imwrite = partial(tifffile.imwrite, photometric="minisblack")
DATA = np.random.default_rng(3).integers(0, 60000, (12, 9, 11)).astype(np.uint16)
CONFIG_VOXEL = (40.0, 7.0, 7.0)


def write_slices(folder, data=DATA, calibrated=True, name="slice_{z}.tif"):
    """One 2-D TIFF per slice, named slice_0 ... slice_11 (so text order puts 10 before 2);
    ImageJ calibration 50 nm x 10 nm x 10 nm written as µm, as Fiji saves an image sequence."""
    folder.mkdir(parents=True, exist_ok=True)
    for z, image in enumerate(data):
        kwargs = {}
        if calibrated:
            kwargs = {
                "imagej": True,
                "resolution": (1 / 0.01, 1 / 0.01),
                "metadata": {"unit": "micron", "spacing": 0.05},
            }
        imwrite(folder / name.format(z=z), image, **kwargs)
    return folder


def assert_reads(spec, data=DATA):
    """Shape, dtype, whole reads, ranges and mirrored slice reads agree with `data`."""
    with Volume(str(spec), "X") as volume:
        assert volume.shape == data.shape and volume.dtype == data.dtype
        np.testing.assert_array_equal(volume.read(), data)
        np.testing.assert_array_equal(volume.read(2, 5), data[2:5])
        np.testing.assert_array_equal(
            volume.read_slices(np.array([1, 0, 1, 11])), data[[1, 0, 1, 11]]
        )


def test_folder_of_slices_in_natural_order(tmp_path):
    folder = write_slices(tmp_path / "run1")
    (folder / "notes.txt").write_text("not a slice")
    files = volume_files(str(folder))
    assert [f.rsplit("/", 1)[1] for f in files[:3]] == ["slice_0.tif", "slice_1.tif", "slice_2.tif"]
    assert files[-1].endswith("slice_11.tif") and len(files) == 12
    assert_reads(folder)
    with Volume(str(folder), "X") as volume:
        assert volume.format == "folder"
    assert metadata_voxel_size_nm(str(folder)) == pytest.approx((50.0, 10.0, 10.0))


def test_slices_are_read_lazily(tmp_path, monkeypatch):
    folder = write_slices(tmp_path / "run1", calibrated=False)
    read = []
    original = tifffile.imread
    monkeypatch.setattr(tifffile, "imread", lambda path, **kw: read.append(path) or original(path))
    with Volume(str(folder)) as volume:
        read.clear()
        volume.read(7, 8)
    assert len(read) == 1 and read[0].endswith("slice_7.tif")


def test_glob_of_slices(tmp_path):
    write_slices(tmp_path / "run1")
    imwrite(tmp_path / "run1" / "overview.tif", np.zeros((30, 30), np.uint16))  # not matched
    spec = str(tmp_path / "run1" / "slice_*.tif")
    assert split_spec(spec) == (spec, None)
    assert_reads(spec)
    assert metadata_voxel_size_nm(spec) == pytest.approx((50.0, 10.0, 10.0))


def test_zarr_array_and_path_inside_a_group(tmp_path):
    array = zarr.open_array(tmp_path / "plain.zarr", mode="w", shape=DATA.shape, dtype=DATA.dtype)
    array[:] = DATA
    assert_reads(tmp_path / "plain.zarr")
    group = zarr.open_group(tmp_path / "grouped.zarr", mode="w")
    inner = group.zeros(name="raw/em", shape=DATA.shape, dtype=DATA.dtype, chunks=(1, 9, 11))
    inner[:] = DATA
    spec = f"{tmp_path / 'grouped.zarr'}:/raw/em"
    assert split_spec(spec) == (str(tmp_path / "grouped.zarr"), "raw/em")
    assert_reads(spec)
    assert metadata_voxel_size_nm(spec) == (None, None, None)
    with pytest.raises(InputError, match=r"'X'.*grouped.zarr.*without OME-Zarr multiscales"):
        Volume(str(tmp_path / "grouped.zarr"), "X")


def write_ome_zarr(path, data):
    """OME-Zarr (NGFF 0.4 attributes): c, z, y, x with a channel axis of 1, two levels."""
    group = zarr.open_group(path, mode="w")
    for level, step in (("s0", 1), ("s1", 2)):
        part = data[:, ::step, ::step][None]
        group.zeros(name=level, shape=part.shape, dtype=part.dtype)[:] = part
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space", "unit": "nanometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {"path": s, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                for s, scale in (("s0", [1, 50, 0.01, 0.008]), ("s1", [1, 50, 0.02, 0.016]))
            ],
        }
    ]


def test_ome_zarr_reads_the_full_resolution_level(tmp_path):
    write_ome_zarr(tmp_path / "image.ome.zarr", DATA)
    assert_reads(tmp_path / "image.ome.zarr")
    assert metadata_voxel_size_nm(str(tmp_path / "image.ome.zarr")) == pytest.approx(
        (50.0, 10.0, 8.0)
    )


def test_mrc_is_memory_mapped_with_its_voxel_size(tmp_path):
    data = DATA.astype(np.int16)
    with mrcfile.new(tmp_path / "tomo.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (80.0, 100.0, 500.0)  # x, y, z in Å
    assert_reads(tmp_path / "tomo.mrc", data)
    with Volume(str(tmp_path / "tomo.mrc")) as volume:
        assert isinstance(volume._data, np.memmap)
    assert metadata_voxel_size_nm(str(tmp_path / "tomo.mrc")) == pytest.approx((50.0, 10.0, 8.0))


def test_hdf5_with_and_without_element_size(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle["raw"] = DATA
        handle["raw"].attrs["element_size_um"] = [0.05, 0.01, 0.008]
        handle["bare"] = DATA
    assert_reads(f"{tmp_path / 'v.h5'}:/raw")
    assert metadata_voxel_size_nm(f"{tmp_path / 'v.h5'}:/raw") == pytest.approx((50, 10, 8))
    assert metadata_voxel_size_nm(f"{tmp_path / 'v.h5'}:/bare") == (None, None, None)


def test_contiguous_tiff_is_memory_mapped_compressed_is_decoded_per_page(tmp_path):
    imwrite(tmp_path / "plain.tif", DATA)
    imwrite(tmp_path / "zlib.tif", DATA, compression="zlib")
    for name, memory_mapped in (("plain.tif", True), ("zlib.tif", False)):
        assert_reads(tmp_path / name)
        with Volume(str(tmp_path / name)) as volume:
            assert isinstance(volume._data, np.memmap) == memory_mapped


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, (None, None, None)),  # tifffile's default: resolution 1/1, no unit
        (
            {
                "imagej": True,
                "resolution": (1 / 0.01, 1 / 0.008),
                "metadata": {"axes": "ZYX", "unit": "\\u00B5m", "spacing": 0.05},
            },
            (50.0, 8.0, 10.0),
        ),
        (
            {"imagej": True, "resolution": (0.1, 0.1), "metadata": {"axes": "ZYX", "unit": "nm"}},
            (1.0, 10.0, 10.0),  # a calibrated ImageJ stack without spacing: one unit deep
        ),
        ({"resolution": (1e6, 1e6), "resolutionunit": "CENTIMETER"}, (None, 10.0, 10.0)),
        (
            {
                "ome": True,
                "metadata": {
                    "axes": "ZYX",
                    "PhysicalSizeX": 10.0,
                    "PhysicalSizeXUnit": "nm",
                    "PhysicalSizeY": 0.012,
                    "PhysicalSizeZ": 0.05,
                },
            },
            (50.0, 12.0, 10.0),  # OME's default unit is µm
        ),
    ],
)
def test_tiff_voxel_size_from_its_metadata(tmp_path, kwargs, expected):
    imwrite(tmp_path / "v.tif", DATA, **kwargs)
    assert_reads(tmp_path / "v.tif")
    found = metadata_voxel_size_nm(str(tmp_path / "v.tif"))
    assert [f if f is None else pytest.approx(f) for f in found] == list(expected)


def test_voxel_size_sheet_then_metadata_then_config(tmp_path):
    imwrite(tmp_path / "bare.tif", DATA)
    imwrite(
        tmp_path / "xy.tif", DATA, resolution=(1e6, 1e6), resolutionunit="CENTIMETER"
    )  # 10 nm pixels, no z
    assert voxel_size_nm(str(tmp_path / "bare.tif"), CONFIG_VOXEL) == CONFIG_VOXEL
    assert voxel_size_nm(str(tmp_path / "xy.tif"), CONFIG_VOXEL) == pytest.approx((40, 10, 10))
    assert voxel_size_nm(str(tmp_path / "xy.tif"), CONFIG_VOXEL, "30,5,6") == (30, 5, 6)
    assert voxel_size_nm(None, CONFIG_VOXEL, "8") == (8, 8, 8)
    with pytest.raises(InputError, match=r"'X'.*sheet.tsv.*'30,5'.*Fix: write the voxel size"):
        voxel_size_nm(None, CONFIG_VOXEL, "30,5", "X", "sheet.tsv")


def test_sheet_checks_the_voxel_size_column(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_text(
        "name\tvolume\tregions\tlabels\tvoxel_size_nm\nA\tv\tr\tl\t50,10,10\nB\tv\tr\tl\t\n"
    )
    table = read_sheet(str(sheet))
    assert table["voxel_size_nm"].tolist() == ["50,10,10", None]
    sheet.write_text("name\tvolume\tregions\tlabels\tvoxel_size_nm\nA\tv\tr\tl\t50;10;10\n")
    with pytest.raises(InputError, match=r"data set 'A'.*s.tsv.*'50;10;10'"):
        read_sheet(str(sheet))


def test_external_inputs_accept_folders_globs_and_zarr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_slices(tmp_path / "run1")
    write_ome_zarr(tmp_path / "v.ome.zarr", DATA)
    (tmp_path / "r.csv").write_text("z,y,x,height,width\n")
    imwrite(tmp_path / "l.tif", np.zeros((1, 2, 2), np.uint8))
    rows = [
        ("A", "run1", "r.csv", "l.tif"),
        ("B", "run1/slice_*.tif", "r.csv", "l.tif"),
        ("C", "v.ome.zarr", "r.csv", "l.tif"),
    ]
    sheet = pd.DataFrame(rows, columns=["name", "volume", "regions", "labels"])
    check_external_inputs(sheet, "s.tsv", generated_prefix="results/")
    for volume, message in (
        ("run2/slice_*.tif", "pattern matches no file"),
        ("r.csv.zarr", "Zarr store does not exist"),
    ):
        bad = sheet.assign(volume=volume)
        with pytest.raises(InputError, match=rf"data set 'A'.*{message}.*Fix: correct the path"):
            check_external_inputs(bad, "s.tsv", generated_prefix="results/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"'empty'.*folder holds no TIFF slices"):
        check_external_inputs(sheet.assign(volume="empty"), "s.tsv", generated_prefix="results/")


@pytest.fixture
def folder_dataset(tmp_path):
    """A data set whose volume is a folder of 12 slices, with regions and labels."""
    write_slices(tmp_path / "run1", calibrated=False)
    pd.DataFrame({"z": [0, 11], "y": [0, 1], "x": [0, 2], "height": 8, "width": 8}).to_csv(
        tmp_path / "r.csv", index=False
    )
    imwrite(tmp_path / "l.tif", np.ones((2, 8, 8), np.uint8))
    return tmp_path


def check(directory, volume="run1"):
    return check_dataset(
        "D", str(directory / volume), str(directory / "r.csv"), str(directory / "l.tif")
    )


def assert_named(error, *parts):
    text = str(error.value)
    assert "data set 'D'" in text and "Fix:" in text
    for part in parts:
        assert part in text, text


def test_good_folder_dataset_passes(folder_dataset):
    assert check(folder_dataset)["shape"] == [12, 9, 11]
    assert check(folder_dataset, "run1/slice_*.tif")["shape"] == [12, 9, 11]


def test_slice_of_another_size_is_named(folder_dataset):
    imwrite(folder_dataset / "run1" / "slice_7.tif", np.zeros((9, 12), np.uint16))
    with pytest.raises(InputError, match=r"slice 7 has shape \(9, 12\).*9 x 11") as error:
        check(folder_dataset)
    assert_named(error, "slice_7.tif", "same size")


def test_truncated_slice_in_a_folder_is_named(folder_dataset):
    path = folder_dataset / "run1" / "slice_10.tif"
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(InputError, match=r"slice 10 cannot be read") as error:
        check(folder_dataset)
    assert_named(error, "slice_10.tif", "replace the truncated or corrupt slice")


def test_missing_slice_in_a_folder_is_named(folder_dataset):
    (folder_dataset / "run1" / "slice_5.tif").unlink()
    pd.DataFrame({"z": [0], "y": [0], "x": [0], "height": 8, "width": 8}).to_csv(
        folder_dataset / "r.csv", index=False
    )
    imwrite(folder_dataset / "l.tif", np.ones((1, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"go from 4 .*slice_4.tif.* to 6 .*slice_6.tif") as error:
        check(folder_dataset)
    assert_named(error, "run1", "restore the missing slice")


@pytest.mark.parametrize(
    "kwargs", [{}, {"compression": "zlib"}, {"imagej": True, "metadata": {"axes": "ZYX"}}]
)
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_3d_tiff_fails_in_check_dataset(folder_dataset, kwargs, keep):
    """Cut short in the pixel data or in the page chain behind it: never a raw traceback."""
    path = folder_dataset / "v.tif"
    imwrite(path, DATA, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=r"cannot be read") as error:
        check(folder_dataset, "v.tif")
    assert_named(error, "v.tif")
