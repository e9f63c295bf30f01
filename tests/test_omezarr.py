"""The OME-Zarr store (`outputs.ome_zarr`, fibseg.io.omezarr): valid OME-NGFF 0.4 by
ome-zarr-models, read back by ome-zarr-py as napari-ome-zarr reads it (three image channels
and a label image with pore visible as 1), at the voxel size, in 3-D chunks."""

import numpy as np
import pytest
import zarr
from helpers import read_napari_store

from fibseg.io.errors import InputError
from fibseg.io.omezarr import CHUNKS, PORE, SOLID, pyramid_factors, write_ome_zarr
from fibseg.io.volume import metadata_voxel_size_nm, read_volume
from fibseg.pipeline.dag import export_memory_mb

VOXEL_NM = (50.0, 10.0, 8.0)


def volumes(shape=(20, 530, 600), seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.random(shape, dtype=np.float32)
    return {
        "em": rng.random(shape, dtype=np.float32),
        "scores": scores,
        "uncertainty": (0.5 * rng.random(shape)).astype(np.float32),
        "segmentation": (scores >= 0.5).astype(np.uint8),
    }


def write(path, data, name="A", voxel_nm=VOXEL_NM):
    return write_ome_zarr(path, **data, voxel_nm=voxel_nm, name=name)


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


def test_napari_reads_em_scores_uncertainty_and_labels_at_the_voxel_size(tmp_path):
    data = volumes()
    store = tmp_path / "A.ome.zarr"
    assert write(store, data) == (2,)
    found = read_napari_store(store)

    assert list(found["channels"]) == ["EM", "scores", "uncertainty"]
    for name, key in (("EM", "em"), ("scores", "scores"), ("uncertainty", "uncertainty")):
        np.testing.assert_array_equal(found["channels"][name], data[key])
    assert found["visible"] == [True, False, False]  # the EM shows at first
    # the label image: 1 = pore, 2 = solid, so napari draws the pores too (0 is transparent)
    np.testing.assert_array_equal(found["labels"], data["segmentation"] + 1)
    assert set(np.unique(found["labels"])) == {PORE, SOLID} == {1, 2}
    assert found["properties"] == {1: {"class": "pore"}, 2: {"class": "solid"}}
    for key in ("image", "labels"):
        assert found[f"{key}_scale"] == pytest.approx([0.05, 0.01, 0.008])
        assert found[f"{key}_units"] == ["micrometer"] * 3
    assert [level.shape for level in found["levels"]["image"]] == [
        (3, 20, 530, 600),
        (3, 20, 265, 300),
    ]
    # the half-resolution label level keeps only 1 and 2 (nearest neighbour, no blending)
    assert set(np.unique(np.asarray(found["levels"]["labels"][1]))) == {1, 2}


def test_chunks_are_3d_so_x_z_views_read_few_of_them(tmp_path):
    store = tmp_path / "A.ome.zarr"
    write(store, volumes())
    group = zarr.open_group(str(store), mode="r")
    assert CHUNKS == (16, 256, 256)
    assert group["s0"].chunks == (1, *CHUNKS) and group["s1"].chunks == (1, *CHUNKS)
    assert group["labels/segmentation/s0"].chunks == CHUNKS


def test_the_label_image_is_a_fibseg_volume_with_its_voxel_size(tmp_path):
    """`store:/labels/segmentation` reads as a sheet volume (1 pore, 2 solid); the image of
    three channels is refused as a volume, with the reason."""
    data = volumes((4, 96, 80), seed=1)
    store = tmp_path / "B.ome.zarr"
    write(store, data, "B")
    labels = f"{store}:/labels/segmentation"
    np.testing.assert_array_equal(read_volume(labels), data["segmentation"] + 1)
    assert metadata_voxel_size_nm(labels) == pytest.approx(VOXEL_NM)
    with pytest.raises(InputError, match=r"4-D with shape \(3, 4, 96, 80\)"):
        read_volume(str(store))


def test_a_failed_write_leaves_nothing_and_an_old_store_stays(tmp_path, monkeypatch):
    data = volumes((2, 64, 64))
    store = tmp_path / "C.ome.zarr"
    write(store, data, "C")

    import ome_zarr.writer

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ome_zarr.writer, "write_labels", broken)
    with pytest.raises(OSError, match="disk full"):
        write(store, volumes((2, 64, 64), seed=5), "C")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["C.ome.zarr"]
    np.testing.assert_array_equal(read_napari_store(store)["channels"]["EM"], data["em"])


def test_volumes_of_different_shapes_are_refused(tmp_path):
    data = volumes((2, 64, 64))
    data["uncertainty"] = data["uncertainty"][..., :32]
    with pytest.raises(ValueError, match=r"one shape.*'uncertainty': \(2, 64, 32\)"):
        write(tmp_path / "D.ome.zarr", data, "D")
    assert not list(tmp_path.iterdir())


def test_a_segmentation_that_is_not_0_1_is_refused(tmp_path):
    data = volumes((2, 64, 64))
    data["segmentation"] = data["segmentation"] + 1  # already labels
    with pytest.raises(ValueError, match="holds 2; expected 0 \\(pore\\) or 1 \\(solid\\)"):
        write(tmp_path / "E.ome.zarr", data, "E")
    assert not list(tmp_path.iterdir())


def test_export_memory_grows_with_the_slices_and_workers_not_the_depth():
    paper = export_memory_mb((200, 2247, 3372), 16, 2)
    assert export_memory_mb((1000, 2247, 3372), 16, 2) == paper
    assert export_memory_mb((200, 2247, 3372), 16, 1) < paper
    assert 2000 < paper < 8000  # 16 slices x 13 bytes x 7.6 Mpx = 1.5 GiB per slab
