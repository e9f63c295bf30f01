"""OME-Zarr output (`outputs.ome_zarr`, fibseg.io.omezarr): read back by ome-zarr-py, the reader
napari-ome-zarr uses, and by fibseg's own reader, with the voxel size."""

import numpy as np
import pytest
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Reader

from fibseg.io.omezarr import pyramid_factors, write_ome_zarr
from fibseg.io.volume import metadata_voxel_size_nm, read_volume

VOXEL_NM = (50.0, 10.0, 8.0)


def volumes(shape=(3, 530, 600), seed=0):
    scores = np.random.default_rng(seed).random(shape, dtype=np.float32)
    return scores, (scores >= 0.5).astype(np.uint8)


def nodes(path):
    """The nodes napari-ome-zarr makes layers of: (image, label image)."""
    found = list(Reader(parse_url(str(path)))())
    images = [n for n in found if n.load(Multiscales) and not n.load(Label)]
    labels = [n for n in found if n.load(Label)]
    assert len(images) == 1 and len(labels) == 1
    return images[0], labels[0]


@pytest.mark.parametrize(
    ("shape", "factors"),
    [
        ((5, 255, 4000), ()),
        ((5, 512, 520), (2,)),
        ((5, 511, 520), ()),
        ((1, 2048, 3000), (2, 4, 8)),
        ((2, 256, 256), ()),
    ],
)
def test_pyramid_levels_stop_at_256_pixels(shape, factors):
    assert pyramid_factors(shape) == factors


def test_scores_and_labels_read_back_with_their_voxel_size(tmp_path):
    scores, segmentation = volumes()
    store = tmp_path / "A.ome.zarr"
    assert write_ome_zarr(store, scores, segmentation, VOXEL_NM, "A") == (2,)
    image, label = nodes(store)

    assert image.metadata["name"] == "A" and label.metadata["name"] == "segmentation"
    np.testing.assert_array_equal(np.asarray(image.data[0]), scores)
    np.testing.assert_array_equal(np.asarray(label.data[0]), segmentation)
    assert [level.shape for level in image.data] == [(3, 530, 600), (3, 265, 300)]
    assert [level.shape for level in label.data] == [(3, 530, 600), (3, 265, 300)]
    # the half-resolution label level keeps only 0 and 1 (nearest neighbour, no blending)
    assert set(np.unique(np.asarray(label.data[1]))) == {0, 1}
    for node in (image, label):
        assert [axis["unit"] for axis in node.metadata["axes"]] == ["micrometer"] * 3
        full, half = (t[0]["scale"] for t in node.metadata["coordinateTransformations"])
        assert full == pytest.approx([0.05, 0.01, 0.008])
        assert half == pytest.approx([0.05, 0.02, 0.016])  # y and x halved, z kept
    assert label.metadata["properties"] == {0: {"class": "pore"}, 1: {"class": "solid"}}


def test_fibseg_reads_its_own_store_as_the_next_input(tmp_path):
    """A store fibseg wrote is a valid sheet `volume` (its full-resolution scores) and
    `store:/labels/segmentation` the segmentation, both with the voxel size."""
    scores, segmentation = volumes((4, 96, 80), seed=1)
    store = tmp_path / "B.ome.zarr"
    write_ome_zarr(store, scores, segmentation, VOXEL_NM, "B")
    np.testing.assert_array_equal(read_volume(str(store)), scores)
    labels = f"{store}:/labels/segmentation"
    np.testing.assert_array_equal(read_volume(labels), segmentation)
    assert metadata_voxel_size_nm(str(store)) == pytest.approx(VOXEL_NM)
    assert metadata_voxel_size_nm(labels) == pytest.approx(VOXEL_NM)


def test_a_failed_write_leaves_nothing_and_an_old_store_stays(tmp_path, monkeypatch):
    scores, segmentation = volumes((2, 64, 64))
    store = tmp_path / "C.ome.zarr"
    write_ome_zarr(store, scores, segmentation, VOXEL_NM, "C")

    import ome_zarr.writer

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ome_zarr.writer, "write_labels", broken)
    with pytest.raises(OSError, match="disk full"):
        write_ome_zarr(store, 1 - scores, 1 - segmentation, VOXEL_NM, "C")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["C.ome.zarr"]
    np.testing.assert_array_equal(read_volume(str(store)), scores)


def test_volumes_of_different_shapes_are_refused(tmp_path):
    scores, segmentation = volumes((2, 64, 64))
    with pytest.raises(ValueError, match=r"\(2, 64, 64\).*\(2, 64, 32\).*one shape"):
        write_ome_zarr(tmp_path / "D.ome.zarr", scores, segmentation[..., :32], VOXEL_NM, "D")
    assert not list(tmp_path.iterdir())
