"""Dense training: the twin shares the patch model's variables, and one dense step equals the
patch path over the same labelled voxels (loss and every gradient)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import region_tiles

from fibseg.annotation.regions import RegionSet
from fibseg.inference.dense_engine import DenseEngine
from fibseg.networks.model import build_model
from fibseg.networks.twin import (
    fragment_layout,
    from_fragment_layout,
    interleave_fragments,
    space_to_batch_class,
)
from fibseg.training.augment import dihedral
from fibseg.training.dense import (
    compile_training_twin,
    dense_loss,
    evaluate_dense,
    fit_dense_epoch,
    training_twin,
)
from fibseg.training.patches import PatchSource
from fibseg.training.tiles import (
    class_weights,
    dihedral_2d,
    joint_dihedral,
    region_selection,
    voxel_weights,
)

MARGIN_XY, MARGIN_Z, SIDE = 40, 1, 20  # a 20 x 20 labelled area: not a multiple of 16


def make_regions(count: int = 2, side: int = SIDE, seed: int = 0) -> RegionSet:
    """Random crops with both classes in every region."""
    rng = np.random.default_rng(seed)
    width = side + 2 * MARGIN_XY
    crops = rng.random((count, 2 * MARGIN_Z + 1, width, width)).astype(np.float32)
    labels = (rng.random((count, side, side)) < 0.4).astype(np.uint8)
    labels[:, 0, 0], labels[:, 0, 1] = 0, 1
    table = pd.DataFrame(
        {"z": 5, "y": 100 * np.arange(1, count + 1), "x": 50, "height": side, "width": side}
    )
    return RegionSet("D", crops, labels, table, MARGIN_XY, MARGIN_Z)


def patch_source(regions: RegionSet, indices: list[int]) -> PatchSource:
    """Every labelled voxel of the regions at `indices`, in (region, y, x) order."""
    height, width = regions.labels.shape[1:]
    ys, xs = (a.ravel() for a in np.indices((height, width)))
    frames = [
        pd.DataFrame(
            {
                "dataset": regions.dataset,
                "region": r,
                "z": int(regions.table.z[r]),
                "y": int(regions.table.y[r]) + ys,
                "x": int(regions.table.x[r]) + xs,
                "label": regions.labels[r].ravel(),
            }
        )
        for r in indices
    ]
    return PatchSource({regions.dataset: regions}, pd.concat(frames, ignore_index=True))


def tile_voxels(regions: RegionSet, indices: list[int], side: int) -> np.ndarray:
    """(B, side, side) index of each tile output into patch_source order, -1 if unlabelled;
    tiles in region_tiles' order."""
    height, width = regions.labels.shape[1:]
    out = []
    for k, _ in enumerate(indices):
        ids = np.full((-(-height // side) * side, -(-width // side) * side), -1)
        ids[:height, :width] = k * height * width + np.arange(height * width).reshape(height, width)
        out += [
            ids[y : y + side, x : x + side]
            for y in range(0, height, side)
            for x in range(0, width, side)
        ]
    return np.stack(out)


def dense_and_patch_steps(n_xy: int, n_z: int, tile: int, dtype: str, gradients: bool = True):
    """Loss and gradients of one dense step and of the patch path over the same voxels, the
    patch scores, the twin's scores back in place and the tiles."""
    import keras
    import tensorflow as tf

    # Keras keeps a global dtype policy beside floatx: set both, and restore both, so that
    # no later test builds float64 models.
    previous = keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        regions = make_regions(count=1)
        model = build_model(n_xy, n_z, "valid", seed=11)  # dropout rates 0
        twin = training_twin(model)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(previous)
    assert all(
        v is w for v, w in zip(twin.trainable_variables, model.trainable_variables, strict=True)
    )
    weights = class_weights(regions.labels)
    inputs, labels, mask = region_tiles(regions, [0], n_xy, n_z, tile=tile)
    assert inputs.shape[1:] == (tile + 75, tile + 75, n_z) and labels.shape[1:] == (tile, tile)
    assert mask.sum() == SIDE * SIDE and 0 < labels[mask > 0].mean() < 1
    voxel_w = voxel_weights(labels, mask, weights, dtype)
    y_frag, w_frag = fragment_layout(labels)[..., None], fragment_layout(voxel_w)
    with tf.GradientTape() as tape:
        fragments = twin(inputs, training=True)
        dense = dense_loss()(y_frag, fragments, w_frag)
    dense_grads = tape.gradient(dense, model.trainable_variables) if gradients else []

    source = patch_source(regions, [0])
    patches = source.cut(np.arange(len(source)), n_xy, n_z)
    patch_w = np.where(source.labels == 1, weights[1], weights[0]).astype(dtype)
    with tf.GradientTape() as tape:
        scores = model(patches, training=True)
        bce = keras.losses.binary_crossentropy(source.labels[:, None], scores)
        patch = tf.reduce_mean(patch_w * bce)
    patch_grads = tape.gradient(patch, model.trainable_variables) if gradients else []
    ids = tile_voxels(regions, [0], tile)
    dense_scores = from_fragment_layout(np.asarray(fragments)[..., 0], len(inputs))
    return {
        "model": model,
        "dense": (float(dense), [np.asarray(g) for g in dense_grads]),
        "patch": (float(patch), [np.asarray(g) for g in patch_grads]),
        "scores": (dense_scores[ids >= 0], np.asarray(scores)[ids[ids >= 0], 0]),
        "batch": (inputs, y_frag, w_frag),
    }


@pytest.mark.parametrize("n_xy, n_z, tile", [(76, 1, 16), (76, 3, 32), (81, 1, 32), (81, 3, 16)])
def test_dense_step_equals_patch_path(n_xy, n_z, tile):
    """Exactness: ONE dense step over the tiles of a region (20 x 20 labelled, padded to 32 or
    cut into 2 x 2 tiles of 16, mask 0 outside) gives the loss and the gradient of every
    variable of the patch path over the same 400 voxels with the same class weights.

    The identity is checked in float64, where the two paths agree to ~1e-16 relative:
    assert_allclose(rtol=1e-9, atol=1e-12), atol absolute, gradients of order 1e-4..1e-2.
    In float32 the gradients of random weights at loss ~ln 2 are sums of ~1e5-1e6 terms that
    largely cancel, and the two summation orders differ by up to ~1e-5 absolute (~0.5 % of a
    gradient of 3e-3) on the first convolution: rounding of either path, not a difference of
    the maths, so float32 is held to the forward pass: scores atol 1e-5, loss rtol 1e-5."""
    import keras

    exact = dense_and_patch_steps(n_xy, n_z, tile, "float64")
    (dense, dense_grads), (patch, patch_grads) = exact["dense"], exact["patch"]
    np.testing.assert_allclose(dense, patch, rtol=1e-12)
    for variable, d, p in zip(
        exact["model"].trainable_variables, dense_grads, patch_grads, strict=True
    ):
        assert d.dtype == np.float64
        np.testing.assert_allclose(d, p, rtol=1e-9, atol=1e-12, err_msg=variable.path)

    single = dense_and_patch_steps(n_xy, n_z, tile, "float32", gradients=False)
    np.testing.assert_allclose(single["dense"][0], single["patch"][0], rtol=1e-5)
    np.testing.assert_allclose(*single["scores"], atol=1e-5)
    # The loss Keras reports for the compiled twin is the same number (item 5).
    compiled = compile_training_twin(single["model"], keras.optimizers.SGD(0.0))
    reported = compiled.test_on_batch(*single["batch"][:2], sample_weight=single["batch"][2])
    np.testing.assert_allclose(np.ravel(reported)[0], single["patch"][0], rtol=1e-5)


def test_augmented_tile_equals_patch_path_after_dihedral():
    """For each of the 8 transforms, the twin on a jointly transformed tile scores every
    labelled voxel exactly as the patch model scores fibseg.training.augment.dihedral of its patch,
    though 81 > field 76 puts the voxel off the field's centre."""
    regions = make_regions(count=1, side=8)
    model = build_model(81, 1, "valid", seed=5)
    twin = training_twin(model)
    source = patch_source(regions, [0])
    patches = source.cut(np.arange(len(source)), 81, 1)
    ids = tile_voxels(regions, [0], 16)[0]
    for code in range(8):
        inputs, _, mask = region_tiles(regions, [0], 81, 1, tile=16, codes=[code])
        moved = dihedral_2d(ids, code)
        assert np.array_equal(moved >= 0, mask[0] > 0)
        dense = from_fragment_layout(np.asarray(twin.predict_on_batch(inputs))[..., 0], 1)[0]
        expected = np.asarray(
            model.predict_on_batch(dihedral(patches, np.full(len(patches), code)))
        )[:, 0]
        np.testing.assert_allclose(dense[moved >= 0], expected[moved[moved >= 0]], atol=1e-5)


def test_twin_shares_weights_and_training_moves_the_patch_model(tmp_path):
    """After one optimiser step on the twin the patch model has moved (the same variables), it
    still equals the twin, and its saved optimiser state resumes dense training."""
    import keras

    regions = make_regions(count=2)
    model = build_model(76, 1, "valid", seed=2)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="binary_crossentropy")
    twin = compile_training_twin(model)
    assert twin.optimizer is model.optimizer
    before = [np.asarray(v).copy() for v in model.trainable_variables]
    inputs, labels, mask = region_tiles(regions, [0, 1], 76, 1)
    w = voxel_weights(labels, mask, class_weights(regions.labels))
    y_frag, w_frag = fragment_layout(labels)[..., None], fragment_layout(w)
    twin.train_on_batch(inputs, y_frag, sample_weight=w_frag)
    for old, variable in zip(before, model.trainable_variables, strict=True):
        assert not np.allclose(old, np.asarray(variable)), variable.path

    # model.predict on the patches equals the twin, and the inference engine on the crop.
    source = patch_source(regions, [0, 1])
    expected = np.asarray(model.predict(source.cut(np.arange(len(source)), 76, 1), verbose=0))
    dense = from_fragment_layout(np.asarray(twin.predict_on_batch(inputs))[..., 0], 2)
    ids = tile_voxels(regions, [0, 1], 32)
    np.testing.assert_allclose(dense[ids >= 0], expected[ids[ids >= 0], 0], atol=1e-5)
    stack = regions.crops[1, MARGIN_Z : MARGIN_Z + 1]
    roi = (MARGIN_XY, MARGIN_XY + SIDE, MARGIN_XY, MARGIN_XY + SIDE)
    engine = DenseEngine(model, tile=16).scores(stack, roi)
    np.testing.assert_allclose(engine, dense[1, :SIDE, :SIDE], atol=1e-5)

    # Saved and loaded like train.py's checkpoints: the momentum comes back and training goes on.
    model.save(tmp_path / "last.keras")
    loaded = keras.saving.load_model(tmp_path / "last.keras")
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    resumed = compile_training_twin(loaded)
    first = twin.train_on_batch(inputs, y_frag, sample_weight=w_frag)
    second = resumed.train_on_batch(inputs, y_frag, sample_weight=w_frag)
    assert second == pytest.approx(first, rel=1e-5)
    for a, b in zip(model.trainable_variables, loaded.trainable_variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_fit_dense_epoch_covers_every_voxel_and_validates_exactly():
    """One epoch visits every labelled voxel once; val_loss is the patch model's weighted mean
    BCE over every val voxel (class weights of the val labels); lr 0 so train = evaluation."""
    import keras

    from fibseg.training.tiles import DenseTiles

    regions = make_regions(count=3, side=24)
    model = build_model(76, 1, "valid", seed=4)
    model.compile(optimizer=keras.optimizers.SGD(0.0, momentum=0.99))
    twin = compile_training_twin(model)
    common = {"n_xy": 76, "n_z": 1, "tile": 16}
    train = DenseTiles({"D": regions}, {"D": [0, 1, 2]}, tiles_per_batch=12, seed=1, **common)
    val = DenseTiles({"D": regions}, {"D": [1, 2]}, tiles_per_batch=3, seed=1, **common)
    assert len(train) == 1 and len(val) == 3 and train.side == 16  # 24 -> 2 x 2 tiles of 16
    assert sum(float((val.tiles(i)[2] > 0).sum()) for i in range(len(val))) == 2 * 24 * 24
    x, y, w = train[0]
    assert x.shape == (12, 91, 91, 1) and y.shape == (12 * 256, 1, 1, 1) and w.shape == (3072, 1, 1)

    history = fit_dense_epoch(twin, train, val, epoch=0)
    assert sorted(history) == sorted(
        ["loss", "accuracy", "mIoU", "val_loss", "val_accuracy", "val_mIoU"]
    )
    evaluated = evaluate_dense(twin, train)
    assert history["loss"][0] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert history["accuracy"][0] == pytest.approx(evaluated["accuracy"], rel=1e-5)
    assert history["mIoU"][0] == pytest.approx(evaluated["mIoU"], rel=1e-5)

    source = patch_source(regions, [1, 2])
    scores = model.predict(source.cut(np.arange(len(source)), 76, 1), verbose=0)
    pw = np.where(source.labels == 1, *val.weights[::-1])
    bce = np.asarray(keras.losses.binary_crossentropy(source.labels[:, None], scores))
    assert history["val_loss"][0] == pytest.approx(float(np.mean(pw * bce)), rel=1e-5)
    correct = (scores[:, 0] >= 0.5) == source.labels
    assert history["val_accuracy"][0] == pytest.approx(np.sum(pw * correct) / pw.sum(), rel=1e-5)
    predicted = scores[:, 0] >= 0.5
    ious = [
        np.sum(pw * ((source.labels == c) & (predicted == c)))
        / np.sum(pw * ((source.labels == c) | (predicted == c)))
        for c in (0, 1)
    ]  # IoU of each class over the class-weighted confusion matrix
    assert history["val_mIoU"][0] == pytest.approx(np.mean(ious), rel=1e-5)


def test_dense_tiles_shuffle_and_augment_per_epoch():
    from fibseg.training.tiles import DenseTiles

    regions = make_regions(count=2, side=24)
    augment = {"a": 0.05, "b": 0.05, "probability": 0.5}
    tiles = DenseTiles(
        {"D": regions}, {"D": [0, 1]}, 76, 1, 3, seed=7, augment=augment, shuffle=True, tile=16
    )
    orders = []
    for epoch in (0, 1, 0):
        tiles.set_epoch(epoch)
        orders.append(tiles.order.copy())
        masks = [tiles.tiles(i)[2] > 0 for i in range(len(tiles))]
        assert sum(int(m.sum()) for m in masks) == 2 * 24 * 24  # every labelled voxel once
    assert np.array_equal(orders[0], orders[2]) and not np.array_equal(orders[0], orders[1])
    first = tiles[1]
    tiles.set_epoch(0)
    for a, b in zip(first, tiles[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_fragment_layout_inverts_interleave_and_matches_space_to_batch():
    import keras

    rng = np.random.default_rng(3)
    maps = rng.random((1, 32, 48)).astype(np.float32)
    fragments = fragment_layout(maps)
    assert fragments.shape == (256, 2, 3)
    np.testing.assert_array_equal(interleave_fragments(fragments), maps[0])
    batch = rng.random((3, 32, 16)).astype(np.float32)
    np.testing.assert_array_equal(from_fragment_layout(fragment_layout(batch), 3), batch)
    # The order of the twin: four SpaceToBatch splits of a batch of maps.
    split = space_to_batch_class()()
    x = keras.ops.convert_to_tensor(batch[..., None])
    for _ in range(4):
        x = split(x)
    np.testing.assert_array_equal(np.asarray(x)[..., 0], fragment_layout(batch))
    with pytest.raises(ValueError, match="multiples of 16"):
        fragment_layout(np.zeros((1, 20, 16)))


def test_joint_dihedral_keeps_labels_aligned():
    """A marked pixel moves with its label, in a plain joint transform and in a cut tile (the
    twin reads voxel p' from window p' + n_xy // 2 after the transform)."""
    image = np.zeros((16, 16, 2), np.float32)
    image[3, 11] = 7
    label = np.zeros((16, 16), np.float32)
    label[3, 11] = 1
    for code in range(8):
        moved, (moved_label,) = joint_dihedral(image, (label,), code)
        assert np.array_equal(np.argwhere(moved[..., 0] == 7), np.argwhere(moved_label == 1))
        np.testing.assert_array_equal(moved, dihedral(image[None], np.array([code]))[0])

    regions = make_regions(count=1)
    regions.labels[:] = 0
    regions.labels[0, 2, 15] = 1
    regions.crops[0, MARGIN_Z, MARGIN_XY + 2, MARGIN_XY + 15] = 9.0
    for n_xy in (76, 81):
        half = n_xy // 2
        for code in range(8):
            inputs, labels, mask = region_tiles(regions, [0], n_xy, 1, tile=32, codes=[code])
            ((py, px),) = np.argwhere(labels[0] == 1)
            assert inputs[0, py + half, px + half, 0] == 9.0
            assert mask[0, py, px] == 1 and mask.sum() == SIDE * SIDE


def test_class_weights_by_hand():
    pore, solid = class_weights(np.array([[0, 0, 0], [1, 0, 0]]))  # N = 6, N_pore 5, N_solid 1
    assert pore == pytest.approx(0.5 * 6 / 5) and solid == pytest.approx(3.0)
    assert 5 * pore == pytest.approx(1 * solid)  # each class weighs half
    with pytest.raises(ValueError, match="both classes"):
        class_weights(np.ones(4))
    w = voxel_weights(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]), (pore, solid))
    np.testing.assert_allclose(w, [[pore, 0.0]])


def test_rejects_small_margins_and_same_models():
    regions = make_regions(count=1)
    with pytest.raises(ValueError, match="too small for n_xy=97"):
        region_tiles(regions, [0], 97, 1)
    with pytest.raises(ValueError, match="too small for n_xy=81, n_z=5"):
        region_tiles(regions, [0], 81, 5)
    with pytest.raises(ValueError, match="needs a 'valid' model"):
        training_twin(build_model(33, 1, "same"))


def test_twin_counts_weight_decay_once_and_selects_regions():
    model = build_model(76, 1, "valid", weight_decay=1e-3, seed=1)
    twin = training_twin(model)
    assert len(twin.losses) == len(model.losses) == 11  # 8 convolutions and 3 dense kernels
    assert float(sum(twin.losses)) == pytest.approx(float(sum(model.losses)), rel=1e-6)
    split = pd.DataFrame(
        {"dataset": ["A", "A", "B", "A"], "region": [2, 0, 1, 1], "split": ["train"] * 3 + ["val"]}
    )
    assert region_selection(split, "train") == {"A": [0, 2], "B": [1]}
    samples = pd.DataFrame({"dataset": ["B", "A", "B"], "region": [3, 0, 3]})
    assert region_selection(samples) == {"A": [0], "B": [3]}
