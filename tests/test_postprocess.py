"""Post-processing against a direct implementation, sigma/T chosen on val only, and the
streamed post-processing equal to the whole-volume one across slab faces."""

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.filters import threshold_otsu

from fibseg.annotation.regions import RegionSet
from fibseg.evaluation.evaluate import otsu_volume, region_results, split_windows
from fibseg.evaluation.metrics import porosity
from fibseg.evaluation.postprocess import (
    chosen_trial,
    optimize,
    segment,
    segment_as_chosen,
    segment_streamed,
    write_segmentation,
)
from fibseg.io.volume import voxel_size_nm
from fibseg.io.writers import write_h5, write_tiff
from fibseg.pipeline.dag import postprocess_memory_mb

REPO = Path(__file__).resolve().parents[1]


def gaussian_direct(image, sigma):
    """Separable Gaussian with mirrored edges ('symmetric'), radius round(4 sigma)."""
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image.astype(np.float64), radius, mode="symmetric")
    rows = np.array([np.convolve(r, kernel, mode="valid") for r in padded])
    return np.array([np.convolve(c, kernel, mode="valid") for c in rows.T]).T


def components(mask):
    """4-connected components by breadth-first search: a list of pixel lists."""
    seen = np.zeros_like(mask, bool)
    found = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        queue, pixels = deque([start]), []
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if (
                    0 <= ny < mask.shape[0]
                    and 0 <= nx < mask.shape[1]
                    and mask[ny, nx]
                    and not seen[ny, nx]
                ):
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(pixels)
    return found


def segment_direct(scores, sigma, threshold, min_size):
    solid = gaussian_direct(scores, sigma) > threshold
    solid = gaussian_direct(solid, sigma) > threshold
    for phase in (True, False):
        mask = solid == phase
        for pixels in components(mask):
            if len(pixels) < min_size:
                for pixel in pixels:
                    solid[pixel] = not phase
    return solid


@pytest.mark.parametrize(
    "seed, sigma, threshold", [(0, 1.0, 0.4), (1, 2.63, 0.402), (2, 1.5, 0.55)]
)
def test_segment_matches_the_direct_implementation(seed, sigma, threshold):
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    scores = np.clip(ndi.gaussian_filter(rng.random((60, 70)), 2) * 4 - 1.5, 0, 1)
    scores = np.clip(scores + rng.normal(0, 0.2, scores.shape), 0, 1)
    ours = segment(scores, sigma, threshold, min_size=30)
    direct = segment_direct(scores, sigma, threshold, min_size=30)
    np.testing.assert_array_equal(ours, direct)


def test_sigma_and_threshold_are_chosen_on_val_only():
    rng = np.random.default_rng(0)
    labels = [(rng.random((12, 12)) < 0.5).astype(np.uint8) for _ in range(6)]
    windows = np.stack([np.pad(label * 0.5 + 0.2, 2, mode="edge") for label in labels])
    split = pd.DataFrame(
        {
            "dataset": "D",
            "region": range(6),
            "split": ["train", "train", "val", "val", "test", "test"],
        }
    )

    def chosen(current):
        val = [
            r
            for r in region_results(current, 2, np.stack(labels), "D", split, lambda w: w)
            if r.split == "val"
        ]
        best, _ = optimize(
            [current[r.region] for r in val],
            [r.labels for r in val],
            2,
            [0.0],
            [0.3, 0.5, 0.6],
            min_size=0,
        )
        return best

    before = chosen(windows)
    changed = windows.copy()
    changed[[0, 1, 4, 5]] = 1 - changed[[0, 1, 4, 5]]  # train and test turned upside down
    assert chosen(changed) == before
    changed = windows.copy()
    changed[[2, 3]] = changed[[2, 3]] + 0.35  # val alone shifted: the threshold follows
    assert chosen(changed)["threshold"] != before["threshold"]


def test_each_choice_of_sigma_and_t_reports_its_porosity_and_the_criterion_picks():
    """One region of 100 voxels, 30 pore: at T 0.5 four solid voxels fall to pore (mIoU
    (30/34 + 66/70) / 2, porosity 0.34); at T 0.475 four solid and five pore voxels swap
    (porosity 0.29); at T 0.46 five pore voxels turn solid (porosity 0.25)."""
    labels = np.array([0] * 30 + [1] * 70, np.uint8).reshape(10, 10)
    scores = np.array([0.2] * 25 + [0.48] * 5 + [0.8] * 62 + [0.47] * 4 + [0.52] * 4)
    window = scores.reshape(10, 10).astype(np.float32)
    thresholds = [0.46, 0.475, 0.5]
    best, trials = optimize([window], [labels], 0, [0.0], thresholds, min_size=0)
    by_t = {t["threshold"]: t for t in trials}
    assert by_t[0.5]["val_mIoU"] == pytest.approx((30 / 34 + 66 / 70) / 2)
    assert by_t[0.475]["val_mIoU"] == pytest.approx((25 / 34 + 66 / 75) / 2)
    assert [by_t[t]["val_porosity"] for t in thresholds] == pytest.approx([0.25, 0.29, 0.34])
    errors = [by_t[t]["val_porosity_error"] for t in thresholds]
    assert errors == pytest.approx([-0.05, -0.01, 0.04])
    assert best["threshold"] == 0.5
    by_porosity, _ = optimize([window], [labels], 0, [0.0], thresholds, 0, "porosity")
    assert by_porosity["threshold"] == 0.475
    both, _ = optimize([window], [labels], 0, [0.0], thresholds, 0, "both")
    assert both["threshold"] == 0.5  # nothing else within 0.005 of the best mIoU


def test_both_takes_the_closest_porosity_among_the_near_best():
    trials = [
        {"threshold": 0.4, "val_mIoU": 0.800, "val_porosity_error": 0.030},
        {"threshold": 0.5, "val_mIoU": 0.797, "val_porosity_error": -0.004},
        {"threshold": 0.6, "val_mIoU": 0.700, "val_porosity_error": 0.000},
    ]
    assert chosen_trial(trials, "mIoU")["threshold"] == 0.4
    assert chosen_trial(trials, "both")["threshold"] == 0.5
    assert chosen_trial(trials, "porosity")["threshold"] == 0.6
    with pytest.raises(ValueError, match="postprocess.criterion"):
        chosen_trial(trials, "accuracy")


def test_validation_windows_of_different_margins_are_refused():
    table = pd.DataFrame({"z": [0, 1], "y": 0, "x": 0, "height": 4, "width": 4})
    labels = np.zeros((2, 4, 4), np.uint8)
    region_sets = [
        RegionSet(name, np.zeros((2, 1, 8, 8), np.float32), labels, table, 2, 0)
        for name in ("A", "B")
    ]
    splits = pd.DataFrame(
        {"dataset": ["A", "A", "B", "B"], "region": [0, 1, 0, 1], "split": ["val", "test"] * 2}
    )
    same = [(np.zeros((2, 8, 8)), 2), (np.ones((2, 8, 8)), 2)]
    windows, chosen_labels, margin = split_windows(same, region_sets, splits, "val")
    assert margin == 2 and len(windows) == len(chosen_labels) == 2
    assert windows[0].max() == 0 and windows[1].min() == 1  # region 0 of A, then of B
    with pytest.raises(ValueError, match=r"different margins \[2, 3\]"):
        split_windows(
            [(np.zeros((2, 8, 8)), 2), (np.zeros((2, 10, 10)), 3)], region_sets, splits, "val"
        )


def test_otsu_of_a_whole_volume_splits_two_populations(tmp_path):
    rng = np.random.default_rng(3)
    truth = (rng.random((4, 20, 20)) < 0.6).astype(np.uint8)
    volume = np.where(truth, 0.7, 0.3) + rng.normal(0, 0.02, truth.shape)
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as handle:
        handle["volume"] = volume.astype(np.float32)
    solid = otsu_volume(f"{path}:/volume")
    assert solid.dtype == np.uint8 and solid.shape == truth.shape
    # Otsu's criterion is flat across the gap between the populations and skimage takes its
    # first bin, so a voxel at the very top of the pore population may go either way.
    assert np.mean(solid == truth) > 0.995
    # skimage on the raw values (256 bins over their range, not 1024 over [0, 1]) agrees
    assert np.mean(solid == (volume > threshold_otsu(volume))) > 0.995


# --- streamed post-processing ----------------------------------------------------------------


def streamed(scores, sigma, threshold, min_size, slab_depth):
    """`segment_streamed` stacked back into one volume (scratch in memory)."""
    scratch = np.zeros(scores.shape, bool)
    slabs = list(segment_streamed(scores, sigma, threshold, min_size, slab_depth, scratch))
    assert [start for start, _ in slabs] == list(range(0, len(scores), slab_depth))
    return np.concatenate([slab for _, slab in slabs])


def random_scores(seed, shape=(20, 40, 40)):
    """Smooth random scores with noise: objects of many sizes, some across slab faces."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), (0.8, 1.5, 1.5)) * 4 - 1.5
    return np.clip(field + rng.normal(0, 0.15, shape), 0, 1).astype(np.float16)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("slab_depth", [1, 3, 4, 7, 25])
@pytest.mark.parametrize("min_size", [1, 2, 8, 40])
def test_streamed_equals_the_whole_volume_on_random_scores(seed, slab_depth, min_size):
    scores, sigma = random_scores(seed), (1.0, 0.5, 2.63)[seed]
    whole = segment(scores.astype(np.float32), sigma, 0.45, min_size)
    np.testing.assert_array_equal(streamed(scores, sigma, 0.45, min_size, slab_depth), whole)
    if min_size > 2:  # the removal changed something in both phases
        thresholded = segment(scores.astype(np.float32), sigma, 0.45, 1)
        assert (thresholded & ~whole).any() and (~thresholded & whole).any()


def objects_across_faces():
    """Solid objects in a 12 x 24 x 24 volume of pore, for slabs of 4 slices
    ([0, 4), [4, 8), [8, 12)), each named with its size."""
    solid = np.zeros((12, 24, 24), bool)
    objects = {}
    # a U through three slabs: two rods (z 1-10) joined only by a bar in slab 0, so in
    # slabs 1 and 2 they are two components each; 11 + 2 x 9 = 29 voxels
    u_shape = np.zeros_like(solid)
    u_shape[1, 2, 2:13] = True
    u_shape[1:11, 2, 2] = u_shape[1:11, 2, 12] = True
    objects["u through three slabs"] = u_shape
    # a 2 x 2 x 2 cube cut by the face at z = 4: 4 + 4 voxels
    cube = np.zeros_like(solid)
    cube[3:5, 10:12, 10:12] = True
    objects["small cube cut by a face"] = cube
    # a 3 x 3 column over slices 2-9: at most 18 voxels in one slab, 72 in all
    column = np.zeros_like(solid)
    column[2:10, 16:19, 16:19] = True
    objects["column small in each slab"] = column
    for mask in objects.values():
        solid |= mask
    return solid, objects


@pytest.mark.parametrize("phase", ["solid", "pore"])
@pytest.mark.parametrize(
    "min_size, kept",
    [
        (8, {"u through three slabs", "small cube cut by a face", "column small in each slab"}),
        (9, {"u through three slabs", "column small in each slab"}),
        (29, {"u through three slabs", "column small in each slab"}),
        (30, {"column small in each slab"}),
        (72, {"column small in each slab"}),
        (73, set()),
    ],
)
def test_streamed_measures_objects_by_their_size_across_slab_faces(phase, min_size, kept):
    """Objects of either phase (as solid in pore, or inverted) are kept or removed by their
    whole size, whatever the slab faces cut of them; as `segment` does on the whole volume."""
    solid, objects = objects_across_faces()
    scores = solid.astype(np.float32) if phase == "solid" else 1 - solid.astype(np.float32)
    result = streamed(scores, 0.0, 0.5, min_size, slab_depth=4)
    np.testing.assert_array_equal(result, segment(scores, 0.0, 0.5, min_size))
    objects_phase = phase == "solid"
    for name, mask in objects.items():
        expected = objects_phase if name in kept else not objects_phase
        assert np.all(result[mask] == expected), (name, min_size)
    assert np.all(result[~solid] != objects_phase)  # the background stays


def test_streamed_with_min_size_1_is_the_thresholded_volume_and_needs_no_scratch():
    scores = random_scores(5)
    slabs = segment_streamed(scores, 1.5, 0.5, 1, slab_depth=6, scratch=None)
    result = np.concatenate([slab for _, slab in slabs])
    thresholded = segment(scores.astype(np.float32), 1.5, 0.5, 0)
    np.testing.assert_array_equal(result, thresholded)
    with pytest.raises(ValueError, match="scratch"):
        next(segment_streamed(scores, 1.5, 0.5, 2, slab_depth=6, scratch=None))


CHOSEN = {"sigma": 1.0, "threshold": 0.45, "min_object_voxels": 20}


def whole_volume_outputs(scores, directory):
    """What rule postprocess wrote before streaming: the whole volume in memory."""
    solid = segment_as_chosen(scores.astype(np.float32), CHOSEN).astype(np.uint8)
    write_h5(directory / "segmentation.h5", {"segmentation": solid}, ATTRS, voxel_nm=VOXEL_NM)
    write_tiff(directory / "segmentation.tif", solid, voxel_nm=VOXEL_NM)
    return solid


VOXEL_NM = [50.0, 10.0, 12.5]
ATTRS = {**CHOSEN, "voxel_size_nm_zyx": VOXEL_NM}


def assert_same_outputs(reference, streamed_dir):
    assert sorted(os.listdir(streamed_dir)) == ["segmentation.h5", "segmentation.tif"]
    tif = (streamed_dir / "segmentation.tif").read_bytes()
    assert tif == (reference / "segmentation.tif").read_bytes()
    with (
        h5py.File(reference / "segmentation.h5") as want,
        h5py.File(streamed_dir / "segmentation.h5") as got,
    ):
        assert got["segmentation"].dtype == np.uint8
        assert got["segmentation"].chunks == want["segmentation"].chunks
        np.testing.assert_array_equal(got["segmentation"][:], want["segmentation"][:])
        assert got.attrs.keys() == want.attrs.keys()
        for key in want.attrs:
            np.testing.assert_array_equal(got.attrs[key], want.attrs[key])
        np.testing.assert_allclose(
            got["segmentation"].attrs["element_size_um"], [0.05, 0.01, 0.0125]
        )
        axes = json.loads(got["segmentation"].attrs["axistags"])["axes"]  # as ilastik reads it
        assert [axis["key"] for axis in axes] == ["z", "y", "x"]
        assert {axis["typeFlags"] for axis in axes} == {2}  # vigra's space axes
        assert got["segmentation"].compression == "gzip"


def test_write_segmentation_streams_the_same_files(tmp_path):
    """HDF5 (data, chunks, attributes) and TIFF (byte for byte) as the whole-volume writers
    made them, the porosity as metrics.porosity, and no scratch file left behind."""
    scores = random_scores(7, (13, 40, 50))
    solid = whole_volume_outputs(scores, (tmp_path / "whole"))
    out = tmp_path / "streamed"
    pore = write_segmentation(
        scores,
        CHOSEN,
        out / "segmentation.h5",
        out / "segmentation.tif",
        ATTRS,
        slab_depth=4,
        voxel_nm=VOXEL_NM,
    )
    assert pore == porosity(solid)
    assert_same_outputs(tmp_path / "whole", out)


def test_segmentation_tif_carries_the_voxel_size(tmp_path):
    """Fiji reads ImageJ `spacing`, `unit` and the X/YResolution tags: 50 x 10 x 12.5 nm."""
    write_segmentation(
        random_scores(3, (5, 20, 24)),
        CHOSEN,
        tmp_path / "segmentation.h5",
        tmp_path / "segmentation.tif",
        ATTRS,
        slab_depth=2,
        voxel_nm=VOXEL_NM,
    )
    with tifffile.TiffFile(tmp_path / "segmentation.tif") as tif:
        assert tif.imagej_metadata["spacing"] == 50.0
        assert tif.imagej_metadata["unit"] == "nm"
        assert tif.series[0].shape == (5, 20, 24)
        x_per_nm, y_per_nm = tif.pages.first.resolution
        assert x_per_nm == pytest.approx(1 / 12.5) and y_per_nm == pytest.approx(1 / 10)
    assert voxel_size_nm(str(tmp_path / "segmentation.tif"), (1, 1, 1)) == pytest.approx(
        (50.0, 10.0, 12.5)
    )


def test_the_postprocess_script_writes_the_whole_volume_result(tmp_path):
    """scripts/postprocess.py with a stand-in `snakemake` object, in a child process (the
    script sends stderr to its log)."""
    scores = random_scores(8, (11, 32, 36))
    with h5py.File(tmp_path / "scores.h5", "w") as handle:
        handle.create_dataset("scores", data=scores, chunks=(1, 32, 36))
    (tmp_path / "postprocess.json").write_text(json.dumps(CHOSEN))
    whole_volume_outputs(scores, tmp_path / "whole")
    out = tmp_path / "streamed"
    job = {
        "input": {
            "scores": str(tmp_path / "scores.h5"),
            "postprocess": str(tmp_path / "postprocess.json"),
        },
        "output": {"h5": str(out / "segmentation.h5"), "tif": str(out / "segmentation.tif")},
        "params": {"voxel_size_nm": ATTRS["voxel_size_nm_zyx"], "slab_depth": 3},
        "log": [str(tmp_path / "postprocess.log")],
    }
    runner = (
        "import json, runpy, sys, types\n"
        "job = json.loads(sys.argv[1])\n"
        "snakemake = types.SimpleNamespace(**{k: types.SimpleNamespace(**v) "
        "if k in ('input', 'output', 'params') else v for k, v in job.items()})\n"
        "runpy.run_path(sys.argv[2], init_globals={'snakemake': snakemake})\n"
    )
    subprocess.run(
        [sys.executable, "-c", runner, json.dumps(job), str(REPO / "scripts/postprocess.py")],
        check=True,
        cwd=REPO,
    )
    assert_same_outputs(tmp_path / "whole", out)
    log = (tmp_path / "postprocess.log").read_text()
    assert "wrote slab 4/4" in log and "porosity" in log


def test_postprocess_memory_scales_with_the_slab_not_the_depth():
    paper = postprocess_memory_mb((200, 2247, 3372), slab_depth=16)
    assert postprocess_memory_mb((1000, 2247, 3372), slab_depth=16) == paper
    assert postprocess_memory_mb((64, 2247, 3372), slab_depth=16) == paper
    assert postprocess_memory_mb((200, 2247, 3372), slab_depth=32) > paper + 1000  # +121 M voxels
    assert paper < 4096
