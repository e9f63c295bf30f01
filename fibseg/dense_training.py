"""Dense training of `valid` models: the patch CNN trained through a fully convolutional twin
that shares its variables, with the loss on every labelled voxel of a tile.

The twin calls the patch model's own layers (the same variables, not copies): each 2x2 pooling
runs at stride 1 and is split into its four stride-2 fragments (SpaceToBatch of fibseg.dense),
dense1 becomes an s x s convolution over dense1's own kernel, dense2 and score act on the last
axis. For `valid` models its output voxel p is exactly the patch model on the patch centred at
that voxel, so one dense step over a tile gives the loss and the gradients of the patch path
over the tile's labelled voxels (tests/test_dense_training.py: to ~1e-16 in float64).

Two things differ from the patch path by construction, not by accident:
- spatial dropout draws one channel mask per fragment, shared by all the output voxels of that
  fragment (a feature voxel feeds many outputs), instead of one per patch; ordinary dropout
  after dense1 and dense2 stays independent per voxel;
- the intensity augmentation (eq. 3-4) rescales a tile with the mean and spread of its whole
  input window, not of each patch.

Keras 3 ops only, so the twin also runs under JAX or PyTorch. Keras is imported lazily, as in
the rest of the package; `DenseTiles` is built on first access.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from .augment import rescale_intensity
from .dense import LEVELS, STEP, _space_to_batch_layer, tile_sides, twin_geometry
from .io import LimitError
from .metrics import known
from .model import FILTERS, VALID_MIN_NXY, feature_size, model_geometry
from .regions import RegionSet
from .windows import mirror_index

DEFAULT_TILE = 128  # output side of a training tile; larger regions are cut into tiles


def check_dense_training(padding: str) -> None:
    """Dense training needs a 'valid' model: the zero padding inside a patch of a 'same'
    model cannot be reproduced by a convolution over a tile."""
    if padding != "valid":
        raise LimitError(
            f"dense training needs a 'valid' model, not '{padding}': the zero padding inside "
            "a patch of a 'same' model cannot be reproduced by a convolution over a tile.",
            f"set model.padding: valid (n_xy >= {VALID_MIN_NXY}) or training.mode: patches.",
            "training.mode",
        )


# --- the twin -------------------------------------------------------------------------------


@functools.cache
def _dense_as_conv_class():
    import keras
    from keras import ops

    class DenseAsConv(keras.layers.Layer):
        """A Dense layer over a flattened (side, side, channels) map, applied as a side x side
        convolution with the Dense layer's own kernel and bias (the same variables)."""

        def __init__(self, dense, side: int, channels: int, **kwargs) -> None:
            super().__init__(**kwargs)
            self.dense = dense  # tracked as a sublayer: its variables are this layer's
            self.side = side
            self.channels = channels

        def call(self, x):
            dense = self.dense
            kernel = ops.reshape(dense.kernel, (self.side, self.side, self.channels, dense.units))
            return dense.activation(ops.conv(x, kernel, strides=1, padding="valid") + dense.bias)

        def compute_output_shape(self, shape):
            batch, height, width, _ = shape
            out = [None if n is None else n - self.side + 1 for n in (height, width)]
            return (batch, *out, self.dense.units)

    return DenseAsConv


def training_twin(model):
    """The fully convolutional twin of a `valid` patch model that SHARES its variables.

    Input (B, side + field - 1, side + field - 1, n_z) tiles, side a multiple of 16; output
    the (4**4 B, side / 16, side / 16, 1) fragment scores (see `fragment_layout`). The dropout
    layers are the model's own, so they follow the `training` flag."""
    import keras

    _, n_z, padding = model_geometry(model)
    check_dense_training(padding)
    inputs = keras.Input((None, None, n_z), name="tiles")
    x = model.get_layer("score")(twin_trunk(model, inputs))
    return keras.Model(inputs, x, name=f"{model.name}_training_twin")


def twin_trunk(model, inputs):
    """The training twin up to the score layer: `inputs` through the model's own layers
    (the same variables) to dropout2's (.., 64) fragment features."""
    from keras import layers

    n_xy, _, padding = model_geometry(model)
    split = _space_to_batch_layer()
    x = inputs
    for block in range(1, LEVELS + 1):
        for conv in (1, 2):
            x = model.get_layer(f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D(2, strides=1, name=f"block{block}_pool_stride1")(x)
        x = split(name=f"block{block}_fragments")(x)
    x = model.get_layer("spatial_dropout")(x)
    dense1 = _dense_as_conv_class()(
        model.get_layer("dense1"), feature_size(n_xy, padding), FILTERS[-1], name="dense1_conv"
    )
    x = dense1(x)
    for name in ("dropout1", "dense2", "dropout2"):
        x = model.get_layer(name)(x)
    return x


# --- fragment order -------------------------------------------------------------------------


def fragment_layout(maps: np.ndarray) -> np.ndarray:
    """(B, H, W) maps (labels, weights) in the twin's fragment order (4**L B, H/16, W/16).

    Level k splits rows by the phase a_k (and columns by b_k) and stacks the phases on the
    batch axis, phase (a, b) at (2a + b) * batch + n; so the fragment index is
    sum_k (2 a_k + b_k) 4**(k-1) B + n and holds rows a_1 + 2 a_2 + ... + 16 i. The inverse
    of `interleave_fragments` (fibseg.dense), generalised to a batch."""
    maps = np.asarray(maps)
    batch, height, width = maps.shape
    if height % STEP or width % STEP:
        raise ValueError(f"map sides {height} x {width} must be multiples of {STEP}")
    h, w = height // STEP, width // STEP
    # axes: n, i, a_L .. a_1, j, b_L .. b_1
    phases = maps.reshape((batch, h) + (2,) * LEVELS + (w,) + (2,) * LEVELS)
    order = [axis for k in range(LEVELS) for axis in (2 + k, LEVELS + 3 + k)]
    return phases.transpose(order + [0, 1, LEVELS + 2]).reshape(4**LEVELS * batch, h, w)


def from_fragment_layout(fragments: np.ndarray, batch: int) -> np.ndarray:
    """The inverse of `fragment_layout`: (4**L B, h, w) fragments as (B, 16 h, 16 w) maps."""
    fragments = np.asarray(fragments)
    _, h, w = fragments.shape
    phases = fragments.reshape((2,) * 2 * LEVELS + (batch, h, w))
    rows = [2 * LEVELS, 2 * LEVELS + 1] + [2 * k for k in range(LEVELS)]
    cols = [2 * LEVELS + 2] + [2 * k + 1 for k in range(LEVELS)]
    return phases.transpose(rows + cols).reshape(batch, STEP * h, STEP * w)


# --- tiles from regions ---------------------------------------------------------------------


def dihedral_2d(array: np.ndarray, code: int) -> np.ndarray:
    """The transform `code` of fibseg.augment.dihedral on the first two axes: a left-right
    flip when code >= 4, then code % 4 quarter turns."""
    if code >= 4:
        array = array[:, ::-1]
    return np.ascontiguousarray(np.rot90(array, int(code) % 4, axes=(0, 1)))


def joint_dihedral(
    image: np.ndarray, maps: Sequence[np.ndarray], code: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same dihedral transform on an (H, W, n_z) input tile and its (h, w) maps."""
    return dihedral_2d(image, code), [dihedral_2d(m, code) for m in maps]


def reversed_axes(code: int) -> tuple[bool, bool]:
    """Whether the transform reads the source rows / columns backwards."""
    corner = int(dihedral_2d(np.arange(4).reshape(2, 2), code)[0, 0])
    return corner // 2 == 1, corner % 2 == 1


def tile_side(extents: Sequence[int], tile: int = DEFAULT_TILE) -> int:
    """One output side for every tile (a batch needs one shape): that of the largest region
    extent cut into equal tiles of at most `tile` (multiples of 16)."""
    return max(tile_sides(int(extent), tile)[1] for extent in extents)


def tile_origins(regions: RegionSet, indices: Sequence[int], side: int) -> list[tuple]:
    """(region, y0, x0) of the tiles covering each region, in the region's label frame;
    tiles without a labelled voxel (all IGNORE) are left out."""
    height, width = regions.labels.shape[1:]
    return [
        (int(region), y0, x0)
        for region in indices
        for y0 in range(0, height, side)
        for x0 in range(0, width, side)
        if known(regions.labels[region, y0 : y0 + side, x0 : x0 + side]).any()
    ]


def check_margins(regions: RegionSet, n_xy: int, n_z: int) -> None:
    """The crops must hold every labelled voxel's patch (as PatchSource.cut requires)."""
    if n_xy // 2 > regions.margin_xy or n_z // 2 > regions.margin_z:
        raise ValueError(
            f"regions.h5 of '{regions.dataset}' has margins {regions.margin_xy}/"
            f"{regions.margin_z}, too small for n_xy={n_xy}, n_z={n_z}"
        )
    if regions.crops.ndim != 4:
        raise ValueError(f"the regions of '{regions.dataset}' were read without their crops")


def cut_tile(
    regions: RegionSet, region: int, y0: int, x0: int, side: int, n_xy: int, n_z: int, code: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input window (W, W, n_z), labels (side, side) and mask (side, side) of one tile, with
    the dihedral transform `code` applied jointly.

    Output p stands for the labelled voxel (y0, x0) + p, whose patch starts n_xy // 2 before
    it: the window starts there (DenseEngine's `before`, offset 0 for `valid`) and spans
    side + field - 1. The twin sees [p, p + field) of it, which for n_xy > field is not centred
    on the voxel; so along an axis that the transform reverses the window starts
    2 (n_xy // 2) + 1 - field later, and after the transform output p' again sees exactly the
    transformed patch of its voxel (what the patch path sees after fibseg.augment.dihedral).
    Beyond the crop the context is mirrored; it only reaches unlabelled (mask 0) outputs."""
    half, half_z = n_xy // 2, n_z // 2
    field, _ = twin_geometry(n_xy, "valid")
    window = side + field - 1
    shift = 2 * half + 1 - field
    reverse_y, reverse_x = reversed_axes(code)
    margin = regions.margin_xy
    crop = regions.crops[region, regions.margin_z - half_z : regions.margin_z + half_z + 1]
    ys = mirror_index(np.arange(window) + margin + y0 - half + shift * reverse_y, crop.shape[1])
    xs = mirror_index(np.arange(window) + margin + x0 - half + shift * reverse_x, crop.shape[2])
    image = np.moveaxis(crop[:, ys][:, :, xs], 0, -1).astype(np.float32)
    labels = np.zeros((side, side), np.float32)
    mask = np.zeros((side, side), np.float32)
    given = regions.labels[region, y0 : y0 + side, x0 : x0 + side]
    labelled = known(given)
    labels[: given.shape[0], : given.shape[1]] = np.where(labelled, given, 0)
    mask[: given.shape[0], : given.shape[1]] = labelled
    image, (labels, mask) = joint_dihedral(image, (labels, mask), code)
    return image, labels, mask


def region_tiles(
    regions: RegionSet,
    indices: Sequence[int],
    n_xy: int,
    n_z: int,
    padding: str = "valid",
    tile: int = DEFAULT_TILE,
    side: int | None = None,
    codes: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles of the regions at `indices`: inputs (B, side + field - 1, same, n_z), labels and
    a 0/1 mask (B, side, side), mask 0 where there is no label (the padding up to a multiple
    of 16, and IGNORE voxels: unpainted or padding to the common region box). Regions larger
    than `tile` are cut into several tiles (`tile_origins` order);
    `codes` gives each tile's dihedral transform (identity by default)."""
    check_dense_training(padding)
    check_margins(regions, n_xy, n_z)
    side = side or tile_side(regions.labels.shape[1:], tile)
    origins = tile_origins(regions, indices, side)
    codes = np.zeros(len(origins), np.int64) if codes is None else np.asarray(codes)
    cut = [
        cut_tile(regions, r, y0, x0, side, n_xy, n_z, int(c))
        for (r, y0, x0), c in zip(origins, codes, strict=True)
    ]
    return tuple(np.stack(parts) for parts in zip(*cut, strict=True))


# --- weights and loss -----------------------------------------------------------------------


def class_weights(labels: np.ndarray) -> tuple[float, float]:
    """(w_pore, w_solid) = 0.5 N / N_c, so that both classes weigh half of the loss, as the
    paper's 50/50 stratified sampling makes them. IGNORE voxels do not count."""
    labels = np.asarray(labels).ravel()
    labels = labels[known(labels)]
    total = labels.size
    counts = [int(np.count_nonzero(labels == c)) for c in (0, 1)]
    if min(counts) == 0:
        raise ValueError(f"class weights need both classes; counts pore/solid {counts}")
    return 0.5 * total / counts[0], 0.5 * total / counts[1]


def voxel_weights(
    labels: np.ndarray, mask: np.ndarray, weights: tuple[float, float], dtype=np.float32
) -> np.ndarray:
    """Per-voxel sample weights: the class weight where labelled, 0 elsewhere."""
    return (mask * np.where(labels >= 0.5, weights[1], weights[0])).astype(dtype)


def labelled_mean_loss(elementwise, name: str):
    """A keras Loss: sum(w * elementwise(y_true, y_pred)) / (outputs with w > 0), the mean
    over the outputs that carry a weight (the mean over all without weights)."""
    import keras
    from keras import ops

    class LabelledMean(keras.losses.Loss):
        def __init__(self) -> None:
            super().__init__(name=name, reduction=None)

        def call(self, y_true, y_pred):
            return elementwise(y_true, y_pred)

        def __call__(self, y_true, y_pred, sample_weight=None):
            values = self.call(ops.cast(y_true, self.dtype), y_pred)
            if sample_weight is None:
                return ops.mean(values)
            weight = ops.reshape(ops.cast(sample_weight, values.dtype), ops.shape(values))
            labelled = ops.sum(ops.cast(weight > 0, values.dtype))
            return ops.sum(values * weight) / ops.maximum(labelled, 1.0)

    return LabelledMean()


def dense_loss():
    """The loss of dense training, a keras Loss: sum(w * bce) / (voxels with w > 0).

    Reduction: the weighted binary cross-entropy is summed over the batch and divided by the
    number of LABELLED voxels (weight > 0), not by all outputs. With class weights w_c this is
    exactly the patch path's mean of w * bce over the same voxels as a batch of patches.
    Keras's own reductions do not give it: `sum_over_batch_size` divides by every output,
    zero-weight padding included, and `mean_with_sample_weight` by sum(w). Scaling the weights
    per batch by (outputs / labelled) would fix the loss but skew the weighted metrics, which
    accumulate sum(w) across batches; so the loss normalises itself and the weights stay the
    plain class weights."""
    import keras

    return labelled_mean_loss(keras.losses.binary_crossentropy, "labelled_mean_bce")


def dense_metrics() -> list:
    """Accuracy and mIoU, weighted by the voxel weights (so class-balanced, padding out)."""
    import keras

    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        # float: BinaryIoU's default int dtype would truncate the class weights
        keras.metrics.BinaryIoU(
            target_class_ids=[0, 1], threshold=0.5, name="mIoU", dtype="float32"
        ),
    ]


def compile_training_twin(model, optimizer=None):
    """The twin of `model`, compiled with `optimizer` (default: the model's own, so that the
    optimizer state saved with the patch model is the state dense training uses)."""
    twin = training_twin(model)
    optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("compile the patch model first or pass an optimizer")
    # The loss is weighted by sample_weight; metrics passed as `weighted_metrics` see it too.
    twin.compile(optimizer=optimizer, loss=dense_loss(), weighted_metrics=dense_metrics())
    return twin


# --- the data set ---------------------------------------------------------------------------


@functools.cache
def _dense_tiles_class():
    import keras

    class DenseTiles(keras.utils.PyDataset):
        """Batches (inputs, fragment labels (.., 1), fragment weights) of `tiles_per_batch`
        tiles of the selected regions. One epoch visits every tile, so every labelled voxel,
        once (or runs `max_batches` steps, see `__len__`); shuffled per epoch (`set_epoch`)
        and augmented per tile with seeded generators.

        `selection` maps data set names to region numbers. `weights` are the class weights;
        by default `class_weights` of the selection's own labels."""

        def __init__(
            self,
            region_sets: Mapping[str, RegionSet],
            selection: Mapping[str, Sequence[int]],
            n_xy: int,
            n_z: int,
            tiles_per_batch: int,
            seed: int,
            augment: dict | None = None,
            shuffle: bool = False,
            tile: int = DEFAULT_TILE,
            side: int | None = None,
            weights: tuple[float, float] | None = None,
            max_batches: int | None = None,
        ) -> None:
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=4)
            self.region_sets = region_sets
            self.n_xy, self.n_z = n_xy, n_z
            self.tiles_per_batch = tiles_per_batch
            self.seed, self.augment, self.shuffle = seed, augment, shuffle
            self.max_batches = max_batches
            chosen = {name: list(indices) for name, indices in selection.items() if indices}
            if not chosen:
                raise ValueError("no region selected for dense training")
            for name in chosen:
                check_margins(region_sets[name], n_xy, n_z)
            extents = [e for name in chosen for e in region_sets[name].labels.shape[1:]]
            self.side = side or tile_side(extents, tile)
            self.field, _ = twin_geometry(n_xy, "valid")
            self.origins = [
                (name, *origin)
                for name, indices in chosen.items()
                for origin in tile_origins(region_sets[name], indices, self.side)
            ]
            labels = np.concatenate(
                [region_sets[name].labels[indices].ravel() for name, indices in chosen.items()]
            )
            self.labelled = int(np.count_nonzero(known(labels)))
            self.weights = weights if weights is not None else class_weights(labels)
            self.epoch = 0
            self.on_epoch_end()

        def __len__(self) -> int:
            """One pass over the tiles, or exactly `max_batches` steps: fewer, or more by
            going round again (each pass in a new shuffled order)."""
            return self.max_batches or -(-len(self.origins) // self.tiles_per_batch)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch
            self.on_epoch_end()

        def on_epoch_end(self) -> None:
            tiles = len(self.origins)  # one pass (its last batch may be short), or enough
            passes = -(-len(self) * self.tiles_per_batch // tiles) if self.max_batches else 1
            if self.shuffle:
                rng = np.random.default_rng([self.seed, self.epoch])
                self.order = np.concatenate([rng.permutation(tiles) for _ in range(passes)])
            else:
                self.order = np.tile(np.arange(tiles), passes)

        def tiles(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Batch `index` as (inputs, labels, weights) maps (B, side, side), not fragments."""
            chosen = self.order[index * self.tiles_per_batch : (index + 1) * self.tiles_per_batch]
            rng = np.random.default_rng([self.seed, self.epoch, index])
            codes = rng.integers(0, 8, len(chosen)) if self.augment else np.zeros(len(chosen), int)
            cut = [
                cut_tile(self.region_sets[name], r, y0, x0, self.side, self.n_xy, self.n_z, c)
                for (name, r, y0, x0), c in zip(
                    (self.origins[i] for i in chosen), codes.tolist(), strict=True
                )
            ]
            inputs, labels, mask = (np.stack(parts) for parts in zip(*cut, strict=True))
            if self.augment:
                augment = self.augment
                inputs = rescale_intensity(
                    inputs, augment["a"], augment["b"], augment["probability"], rng
                )
            return inputs, labels, voxel_weights(labels, mask, self.weights)

        def __getitem__(self, index: int):
            inputs, labels, weights = self.tiles(index)
            return inputs, fragment_layout(labels)[..., None], fragment_layout(weights)

    return DenseTiles


def __getattr__(name: str):
    if name == "DenseTiles":  # a keras class, made on first use so that importing is cheap
        return _dense_tiles_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def region_selection(table, split: str | None = None) -> dict[str, list[int]]:
    """{data set: region numbers} of a table with `dataset` and `region` columns: split.csv
    (then pass `split`) or a samples CSV such as train.csv (every region with a sample)."""
    if split is not None:
        table = table[table["split"] == split]
    return {
        str(name): sorted(int(r) for r in group["region"].unique())
        for name, group in table.groupby("dataset")
    }


# --- one epoch ------------------------------------------------------------------------------


def evaluate_dense(twin, tiles) -> dict[str, float]:
    """Loss, accuracy and mIoU over every labelled voxel of `tiles`, scored densely.

    The loss is sum(w * bce) / labelled voxels over the WHOLE set (not a mean of batch means)
    plus the weight decay, as Keras's evaluate reports it for the patch path."""
    import keras

    metrics = dense_metrics()
    total, labelled = 0.0, 0
    for index in range(len(tiles)):
        inputs, labels, weights = tiles[index]
        scores = np.asarray(twin.predict_on_batch(inputs))
        bce = keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(labels, scores))
        total += float(np.sum(bce.astype(np.float64) * weights))
        labelled += int(np.count_nonzero(weights > 0))
        for metric in metrics:
            metric.update_state(labels, scores, sample_weight=weights)
    decay = sum(float(keras.ops.convert_to_numpy(loss)) for loss in twin.losses)
    result = {"loss": total / max(labelled, 1) + decay}
    result.update({m.name: float(keras.ops.convert_to_numpy(m.result())) for m in metrics})
    return result


def fit_dense_epoch(twin, train_tiles, val_tiles, epoch: int) -> dict[str, list[float]]:
    """One epoch of dense training and a dense validation; a Keras History-like dict with
    loss, accuracy, mIoU, val_loss, val_accuracy, val_mIoU (one value each).

    The train loss is Keras's: the mean over batches (weighted by tiles per batch) of each
    batch's sum(w * bce) / labelled voxels, plus weight decay."""
    train_tiles.set_epoch(epoch)
    history = dict(twin.fit(train_tiles, epochs=1, verbose=0).history)
    history.update({f"val_{k}": [v] for k, v in evaluate_dense(twin, val_tiles).items()})
    return history
