"""The inference engines against direct computations."""

from dataclasses import replace

import h5py
import keras
import numpy as np
import pytest
from scipy import ndimage as ndi

from fibseg.inference.dense_engine import DenseEngine
from fibseg.inference.infer import make_scorer
from fibseg.inference.sliding import sliding_scores
from fibseg.io.writers import stitch_chunks
from fibseg.networks.model import build_model
from fibseg.networks.twin import tile_sides
from fibseg.runtime.settings import InferenceSettings


def image_like(rng, shape):
    """Smooth random intensities around 0.5, like a preprocessed slice."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), (0, 3, 3))
    return ((field - field.mean()) / field.std() * 0.2 + 0.5).astype(np.float32)


def spread_model(n_xy, n_z, padding, seed=0):
    """Random (Glorot) weights. Their logits barely vary (std ~0.02), so the output layer is
    rescaled to logit std 0.5 and median 0 on image-like patches: the scores then spread
    enough to expose any misplaced neighbourhood, while float32 rounding stays ~1e-6."""
    keras.utils.set_random_seed(seed)
    model = build_model(n_xy, n_z, padding, seed=seed)
    big = image_like(np.random.default_rng(seed), (n_z, n_xy + 40, n_xy + 40))
    patches = np.stack(
        [
            np.moveaxis(big[:, y : y + n_xy, x : x + n_xy], 0, -1)
            for y in range(0, 40, 5)
            for x in range(0, 40, 5)
        ]
    )
    hidden = keras.Model(model.input, model.get_layer("dense2").output).predict_on_batch(patches)
    kernel, _ = model.get_layer("score").get_weights()
    logits = np.asarray(hidden) @ kernel
    scale = 0.5 / logits.std()
    model.get_layer("score").set_weights([kernel * scale, -np.median(logits, 0) * scale])
    return model


def reflect(index, size):
    """Mirror an index into [0, size) without repeating the edge, by hand."""
    while index < 0 or index >= size:
        index = -index if index < 0 else 2 * (size - 1) - index
    return index


def test_sliding_equals_a_direct_per_voxel_loop_including_edges():
    model = spread_model(17, 3, "same")
    rng = np.random.default_rng(0)
    stack = image_like(rng, (3, 9, 11))
    half = 8
    direct = np.empty((9, 11), np.float32)
    for y in range(9):
        for x in range(11):
            patch = np.empty((17, 17, 3), np.float32)
            for dy in range(-half, half + 1):
                for dx in range(-half, half + 1):
                    patch[dy + half, dx + half] = stack[:, reflect(y + dy, 9), reflect(x + dx, 11)]
            direct[y, x] = model.predict_on_batch(patch[None])[0, 0]
    engine = sliding_scores(model, stack, extract_batch=13, predict_batch=5)
    np.testing.assert_allclose(engine, direct, atol=1e-6)
    assert direct.std() > 0.03


@pytest.mark.parametrize("n_xy", [76, 81, 113])
@pytest.mark.parametrize("n_z", [1, 3])
def test_dense_equals_sliding_for_valid_models(n_xy, n_z):
    model = spread_model(n_xy, n_z, "valid", seed=n_xy + n_z)
    stack = image_like(np.random.default_rng(n_xy), (n_z, 23, 29))
    sliding = sliding_scores(model, stack, extract_batch=256, predict_batch=128)
    dense = DenseEngine(model, tile=16).scores(stack)  # 2 x 2 tiles: seams in both axes
    assert sliding.std() > 0.03
    assert np.abs(dense - sliding).max() <= 1e-5
    roi = (-4, 10, 20, 33)  # beyond the edges: mirrored context
    np.testing.assert_allclose(
        DenseEngine(model, tile=16).scores(stack, roi),
        sliding_scores(model, stack, 256, 128, roi),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("extent", "tile", "expected"),
    [(2247, 1024, (3, 752)), (3372, 1024, (4, 848)), (2247, 512, (5, 464)), (23, 8, (2, 16))],
)
def test_tiles_are_equal_multiples_of_16_that_cover_the_slice(extent, tile, expected):
    count, side = tile_sides(extent, tile)
    assert (count, side) == expected
    assert side % 16 == 0 and extent <= count * side < extent + 16 * count


def test_dense_on_same_models_needs_opt_in():
    model = spread_model(33, 1, "same")
    settings = InferenceSettings(extract_batch=64, predict_batch=64, tile=16)
    with pytest.raises(ValueError, match="allow_approximate_dense"):
        make_scorer(model, "dense", settings)
    scorer = make_scorer(model, "dense", replace(settings, allow_approximate_dense=True))
    stack = np.random.default_rng(1).random((1, 20, 20)).astype(np.float32)
    approximate = scorer(stack)
    exact = sliding_scores(model, stack)
    assert approximate.shape == exact.shape
    assert np.isfinite(approximate).all() and 0 <= approximate.min() <= approximate.max() <= 1


def test_stitching_puts_every_slice_in_its_place(tmp_path):
    paths = []
    for first, stop in ((3, 6), (0, 3), (6, 7)):  # out of order, last one short
        path = tmp_path / f"{first}.h5"
        with h5py.File(path, "w") as handle:
            handle["scores"] = np.stack(
                [np.full((4, 5), z / 10, np.float32) for z in range(first, stop)]
            )
            handle.attrs.update(first_slice=first, stop_slice=stop)
        paths.append(str(path))
    assert stitch_chunks(paths, tmp_path / "all.h5", "float16") == (7, 4, 5)
    with h5py.File(tmp_path / "all.h5") as handle:
        scores = handle["scores"][:]
    assert scores.dtype == np.float16
    np.testing.assert_allclose(scores[:, 2, 3], np.arange(7) / 10, atol=1e-3)
    with pytest.raises(ValueError, match="exactly once"):
        stitch_chunks(paths[:2] + [paths[0]], tmp_path / "bad.h5")


def test_stitching_a_block_of_slices_keeps_its_first_slice(tmp_path):
    """Chunks of slices 4-7 (the forest's centre block): a volume of 4 slices whose attribute
    `first_slice` is 4; a span they do not cover is refused."""
    paths = []
    for first, stop in ((6, 8), (4, 6)):
        path = tmp_path / f"{first}.h5"
        with h5py.File(path, "w") as handle:
            handle["scores"] = np.stack(
                [np.full((3, 2), z / 10, np.float32) for z in range(first, stop)]
            )
            handle.attrs.update(first_slice=first, stop_slice=stop, uncertainty="kind")
        paths.append(str(path))
    assert stitch_chunks(paths, tmp_path / "block.h5", span=(4, 8)) == (4, 3, 2)
    with h5py.File(tmp_path / "block.h5") as handle:
        assert dict(handle.attrs) == {"first_slice": 4, "uncertainty": "kind"}
        np.testing.assert_allclose(handle["scores"][:, 0, 0], [0.4, 0.5, 0.6, 0.7], atol=1e-7)
    with pytest.raises(ValueError, match="should cover 0-7"):
        stitch_chunks(paths, tmp_path / "bad.h5", span=(0, 8))
