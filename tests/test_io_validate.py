from functools import partial

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from fibseg.io.atomic import atomic_output
from fibseg.io.errors import InputError
from fibseg.io.formats import split_spec
from fibseg.io.volume import Volume
from fibseg.pipeline.checks import check_dataset
from fibseg.pipeline.sheet import read_sheet

imwrite = partial(tifffile.imwrite, photometric="minisblack")


def test_split_spec():
    assert split_spec("a/b.h5:/raw/data") == ("a/b.h5", "/raw/data")
    assert split_spec("a/b.h5") == ("a/b.h5", "/volume")
    assert split_spec("a/b.tif") == ("a/b.tif", None)


def test_volume_reads_tiff_and_hdf5_slices(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    imwrite(tmp_path / "v.tif", data)
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle["grp/raw"] = data
    for spec in (tmp_path / "v.tif", f"{tmp_path / 'v.h5'}:/grp/raw"):
        with Volume(str(spec)) as volume:
            assert volume.shape == (4, 5, 6)
            np.testing.assert_array_equal(volume.read(1, 3), data[1:3])


@pytest.mark.parametrize("shape, found", [((5, 6), "2-D"), ((2, 3, 5, 6), "4-D")])
def test_wrong_rank_names_file_and_rank(tmp_path, shape, found):
    path = tmp_path / "bad.tif"
    imwrite(path, np.zeros(shape, np.uint16))
    with pytest.raises(InputError, match=rf"data set 'X'.*bad.tif.*{found}"):
        Volume(str(path), "X")


def test_missing_hdf5_dataset_is_named(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle["other"] = np.zeros((2, 2, 2))
    with pytest.raises(InputError, match=r"no HDF5 dataset '/volume'.*other"):
        Volume(f"{tmp_path / 'v.h5'}:/volume", "X")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"'X'.*nothere.tif.*does not exist"):
        Volume(str(tmp_path / "nothere.tif"), "X")


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done" and list(tmp_path.iterdir()) == [target]


@pytest.fixture
def good_dataset(tmp_path):
    volume = np.random.default_rng(0).integers(0, 60000, (4, 32, 32)).astype(np.uint16)
    imwrite(tmp_path / "v.tif", volume)
    regions = pd.DataFrame({"z": [0, 3], "y": [0, 16], "x": [4, 16], "height": 8, "width": 8})
    regions.to_csv(tmp_path / "r.csv", index=False)
    imwrite(tmp_path / "l.tif", np.ones((2, 8, 8), np.uint8))
    return tmp_path


def run_check(directory):
    return check_dataset(
        "D", str(directory / "v.tif"), str(directory / "r.csv"), str(directory / "l.tif")
    )


def test_good_dataset_passes(good_dataset):
    assert run_check(good_dataset)["regions"] == 2


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: pd.DataFrame(
                {"z": [0, 9], "y": [0, 0], "x": [0, 0], "height": 8, "width": 8}
            ).to_csv(d / "r.csv", index=False),
            r"row 3 .*z=9.*outside the volume",
        ),
        (
            lambda d: pd.DataFrame(
                {"z": [0, 0], "y": [0, 28], "x": [0, 0], "height": 8, "width": 8}
            ).to_csv(d / "r.csv", index=False),
            r"outside the volume of shape \(4, 32, 32\)",
        ),
        (
            lambda d: imwrite(d / "l.tif", np.full((2, 8, 8), 255, np.uint8)),
            r"l.tif.*0 \(pore\) or 1 \(solid\); found values \[255\]",
        ),
        (
            lambda d: imwrite(d / "l.tif", np.ones((3, 8, 8), np.uint8)),
            r"holds 3 masks but the regions CSV lists 2",
        ),
        (
            lambda d: imwrite(d / "l.tif", np.ones((2, 9, 8), np.uint8)),
            r"masks are 9 x 8 but the regions CSV gives sizes \[\(8, 8\)\]",
        ),
        (
            lambda d: (d / "r.csv").write_text("z,y,x,height\n0,0,0,8\n"),
            r"r.csv.*lacks the column\(s\) width",
        ),
        (
            lambda d: (d / "r.csv").write_text("z,y,x,height,width\n0,a,0,8,8\n"),
            r"column 'y' row 2 holds 'a'",
        ),
        (
            lambda d: (d / "r.csv").write_text(
                "z,y,x,height,width,split\n0,0,0,8,8,training\n1,0,0,8,8,val\n"
            ),
            r"split.*training",
        ),
        (
            lambda d: imwrite(d / "v.tif", np.full((4, 32, 32), np.nan, np.float32)),
            r"v.tif.*slice 0 holds NaN or Inf",
        ),
        (lambda d: (d / "v.tif").write_bytes(b"II*\x00garbage"), r"v.tif.*cannot be read"),
    ],
)
def test_bad_dataset_is_named(good_dataset, edit, message):
    edit(good_dataset)
    with pytest.raises(InputError, match=message) as error:
        run_check(good_dataset)
    assert "data set 'D'" in str(error.value) and "Fix:" in str(error.value)


def test_sheet_rejects_duplicates_and_bad_aligned(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_text("name\tvolume\tregions\tlabels\nA\tv\tr\tl\nA\tv\tr\tl\n")
    with pytest.raises(InputError, match=r"s.tsv.*more than once: A"):
        read_sheet(str(sheet))
    sheet.write_text("name\tvolume\tregions\tlabels\taligned\nA\tv\tr\tl\tmaybe\n")
    with pytest.raises(InputError, match=r"'aligned' holds maybe"):
        read_sheet(str(sheet))
    sheet.write_text("name\tvolume\tregions\tlabels\taligned\nA\tv\tr\tl\tTrue\nB\tv\tr\tl\t\n")
    assert read_sheet(str(sheet))["aligned"].tolist() == [True, False]


def test_atomic_outputs_get_the_mode_of_a_plain_file(tmp_path):
    """A finished output is readable as the umask allows (not mkstemp's 0600), so that the
    members of a group can read the results on a shared filesystem."""
    import os
    import stat

    from fibseg.io.atomic import atomic_directory, atomic_output

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "out.csv") as tmp:
            tmp.write_text("a\n")
        with atomic_directory(tmp_path / "store.zarr") as folder:
            (folder / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "store.zarr").stat().st_mode) == 0o755
