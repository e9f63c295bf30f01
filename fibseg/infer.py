"""Inference engines: every voxel's score is P(solid) from its own n_xy x n_xy x n_z
neighbourhood, mirror-padded at the x-y and z edges (§3.8).

- `sliding`: the paper's method. Neighbourhoods are cut in batches (`extract_batch`) and
  scored in batches (`predict_batch`); exact for any model of the grid.
- `dense`: the same classifier evaluated fully convolutionally. Pooling runs at stride 1 and
  its output is split into stride-2 fragments on the batch axis, and the dense layers
  become convolutions. Slices are processed in tiles with a halo, so memory stays bounded
  and the seams are exact. For `valid` models it equals `sliding` up to float rounding; for
  `same` models it is an approximation (the zero padding inside a patch is not reproduced).

The code uses the Keras 3 API only (keras.layers, keras.ops), so it runs on TensorFlow, JAX
or PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .model import FILTERS, feature_size
from .regions import RegionSet, mirror_index

Roi = tuple[int, int, int, int]
Scorer = Callable[..., np.ndarray]


def model_geometry(model) -> tuple[int, int, str]:  # noqa: ANN001
    """(n_xy, n_z, padding) of a trained model of the grid."""
    _, n_xy, _, n_z = model.input_shape
    padding = model.get_layer("block1_conv1").padding
    return int(n_xy), int(n_z), padding


def neighbour_slices(z: int, n_z: int, depth: int) -> np.ndarray:
    """Indices of the n_z slices centred on z, mirrored at the volume's ends."""
    return mirror_index(np.arange(z - n_z // 2, z + n_z // 2 + 1), depth)


# --- sliding window ---------------------------------------------------------------------------


def region_of_interest(stack: np.ndarray, roi: Roi | None) -> Roi:
    """(y0, y1, x0, x1) of the outputs wanted; the whole slice by default."""
    return roi if roi is not None else (0, stack.shape[1], 0, stack.shape[2])


def mirrored_source(stack: np.ndarray, rows: range, cols: range) -> np.ndarray:
    """stack[:, rows][:, :, cols], with indices outside the stack mirrored back in."""
    ys = mirror_index(np.asarray(rows), stack.shape[1])
    xs = mirror_index(np.asarray(cols), stack.shape[2])
    return stack.astype(np.float32)[:, ys][:, :, xs]


def sliding_scores(
    model,
    stack: np.ndarray,
    extract_batch: int = 65536,  # noqa: ANN001
    predict_batch: int = 2048,
    roi: Roi | None = None,
) -> np.ndarray:
    """Scores of the centre slice of an (n_z, y, x) stack, one patch per voxel, over `roi`."""
    n_xy, n_z, _ = model_geometry(model)
    if stack.shape[0] != n_z:
        raise ValueError(f"the stack has {stack.shape[0]} slices, the model takes {n_z}")
    half = n_xy // 2
    y0, y1, x0, x1 = region_of_interest(stack, roi)
    height, width = y1 - y0, x1 - x0
    padded = mirrored_source(
        stack, range(y0 - half, y1 + n_xy - 1 - half), range(x0 - half, x1 + n_xy - 1 - half)
    )
    windows = np.lib.stride_tricks.sliding_window_view(padded, (n_xy, n_xy), axis=(1, 2))
    scores = np.empty(height * width, np.float32)
    for start in range(0, height * width, extract_batch):
        index = np.arange(start, min(start + extract_batch, height * width))
        patches = np.ascontiguousarray(
            np.moveaxis(windows[:, index // width, index % width], 0, -1)
        )
        for first in range(0, len(index), predict_batch):
            batch = patches[first : first + predict_batch]
            scores[start + first : start + first + len(batch)] = np.asarray(
                model.predict_on_batch(batch)
            ).reshape(-1)
    return scores.reshape(height, width)


# --- dense (fully convolutional) ----------------------------------------------------------------


LEVELS = len(FILTERS)  # 2x2 poolings, so the twin's output interleaves 4**LEVELS fragments
STEP = 2**LEVELS  # tile sides are multiples of this


def _space_to_batch_layer():
    import keras
    from keras import ops

    class SpaceToBatch(keras.layers.Layer):
        """Splits even-sided maps into their four 2x2 phases, stacked on the batch axis:
        phase (a, b) holds rows a::2 and columns b::2, at batch (2a + b) * batch + n."""

        def call(self, x):  # noqa: ANN001, ANN201
            batch, height, width, channels = ops.shape(x)
            x = ops.reshape(x, (batch, height // 2, 2, width // 2, 2, channels))
            x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
            return ops.reshape(x, (4 * batch, height // 2, width // 2, channels))

        def compute_output_shape(self, shape):  # noqa: ANN001, ANN201
            batch, height, width, channels = shape
            half = [None if side is None else side // 2 for side in (height, width)]
            return (None if batch is None else 4 * batch, *half, channels)

    return SpaceToBatch


def dense_twin(model):  # noqa: ANN001, ANN201
    """The fully convolutional twin of a trained grid model, sharing its weights.

    Each 2x2 pooling runs at stride 1 and its output is split into the four stride-2
    fragments (space to batch), so every later layer is a plain convolution over a batch of
    fragments: the work of dilated convolutions without their per-layer reshuffling. The
    dense layers become an s x s and two 1x1 convolutions. `interleave_fragments` puts the
    4**LEVELS output fragments back in place."""
    import keras
    from keras import layers

    n_xy, n_z, padding = model_geometry(model)
    split = _space_to_batch_layer()
    inputs = keras.Input((None, None, n_z))
    x = inputs
    for block in range(1, LEVELS + 1):
        for conv in (1, 2):
            source = model.get_layer(f"block{block}_conv{conv}")
            twin = layers.Conv2D(source.filters, 3, activation="elu", name=source.name)
            x = twin(x)
            twin.set_weights(source.get_weights())
        x = layers.MaxPooling2D(2, strides=1, name=f"block{block}_pool")(x)
        x = split(name=f"block{block}_fragments")(x)
    side = feature_size(n_xy, padding)
    kernel, bias = model.get_layer("dense1").get_weights()
    first = layers.Conv2D(kernel.shape[1], side, activation="elu", name="dense1")
    x = first(x)
    first.set_weights([kernel.reshape(side, side, FILTERS[-1], -1), bias])
    for name, activation in (("dense2", "elu"), ("score", "sigmoid")):
        kernel, bias = model.get_layer(name).get_weights()
        conv = layers.Conv2D(kernel.shape[1], 1, activation=activation, name=name)
        x = conv(x)
        conv.set_weights([kernel.reshape(1, 1, *kernel.shape), bias])
    return keras.Model(inputs, x, name=f"{model.name}_dense")


def interleave_fragments(fragments: np.ndarray) -> np.ndarray:
    """The (4**LEVELS, h, w) fragment scores of one tile as a (STEP h, STEP w) map: the
    fragment of phases (a1, b1) ... (aL, bL) holds rows a1 + 2 a2 + ... + STEP i."""
    _, height, width = fragments.shape
    phases = fragments.reshape((2,) * 2 * LEVELS + (height, width))
    # phase axes run (aL, bL, ..., a1, b1): a_k is axis 2 (L - k), b_k the one after it
    rows = [2 * LEVELS] + [2 * (LEVELS - k) for k in range(LEVELS, 0, -1)]
    cols = [2 * LEVELS + 1] + [2 * (LEVELS - k) + 1 for k in range(LEVELS, 0, -1)]
    return phases.transpose(rows + cols).reshape(STEP * height, STEP * width)


def twin_geometry(n_xy: int, padding: str) -> tuple[int, int]:
    """(receptive field, offset): twin output p sees input [p, p + field) and stands for
    the patch whose top-left corner is input p + offset."""
    field, dilation = 1, 1
    for _ in FILTERS:
        field += 2 * 2 * dilation + dilation  # two 3x3 convolutions and a 2x2 pool
        dilation *= 2
    field += (feature_size(n_xy, padding) - 1) * dilation
    # A 'same' convolution is centred where a 'valid' one starts one dilation earlier.
    offset = 0 if padding == "valid" else 2 * sum(2**k for k in range(len(FILTERS)))
    return field, offset


def tile_sides(extent: int, tile: int) -> tuple[int, int]:
    """(number, side) of equal tiles covering `extent`: sides a multiple of STEP, at most
    `tile` rounded up to one, and as even as possible so little is computed beyond the edge."""
    count = -(-extent // (-(-tile // STEP) * STEP))
    side = -(-extent // count)
    return count, -(-side // STEP) * STEP


class DenseEngine:
    """Dense scores of whole slices, tile by tile with an exact halo."""

    def __init__(self, model, tile: int = 1024) -> None:  # noqa: ANN001
        self.n_xy, self.n_z, self.padding = model_geometry(model)
        self.twin = dense_twin(model)
        self.tile = tile
        self.field, self.offset = twin_geometry(self.n_xy, self.padding)
        self.before = self.n_xy // 2 + self.offset

    def scores(self, stack: np.ndarray, roi: Roi | None = None) -> np.ndarray:
        """Scores of the centre slice of an (n_z, y, x) stack over `roi`."""
        if stack.shape[0] != self.n_z:
            raise ValueError(f"the stack has {stack.shape[0]} slices, the model takes {self.n_z}")
        y0, y1, x0, x1 = region_of_interest(stack, roi)
        rows, tile_h = tile_sides(y1 - y0, self.tile)
        cols, tile_w = tile_sides(x1 - x0, self.tile)
        halo = self.field - 1
        # Mirror-pad to whole tiles plus the halo, so every call has the same shape.
        source = np.moveaxis(
            mirrored_source(
                stack,
                range(y0 - self.before, y0 + rows * tile_h + halo - self.before),
                range(x0 - self.before, x0 + cols * tile_w + halo - self.before),
            ),
            0,
            -1,
        )
        out = np.empty((rows * tile_h, cols * tile_w), np.float32)
        for row in range(rows):
            for col in range(cols):
                ty, tx = row * tile_h, col * tile_w
                window = source[None, ty : ty + tile_h + halo, tx : tx + tile_w + halo]
                fragments = np.asarray(self.twin.predict_on_batch(window))[..., 0]
                out[ty : ty + tile_h, tx : tx + tile_w] = interleave_fragments(fragments)
        return out[: y1 - y0, : x1 - x0]


# --- volumes ------------------------------------------------------------------------------------


def make_scorer(model, engine: str, inference: dict, tile: int | None = None) -> Scorer:  # noqa: ANN001
    """A function (stack, roi) -> scores for the configured engine."""
    _, _, padding = model_geometry(model)
    if engine == "sliding":
        return lambda stack, roi=None: sliding_scores(
            model, stack, inference["extract_batch"], inference["predict_batch"], roi
        )
    if engine == "dense":
        if padding == "same" and not inference["allow_approximate_dense"]:
            raise ValueError(
                "the dense engine is exact only for models trained with padding 'valid'; this "
                "model uses 'same'. Set model.padding: valid (n_xy >= 76) and retrain, use "
                "inference.engine: sliding, or accept the approximation with "
                "inference.allow_approximate_dense: true."
            )
        return DenseEngine(model, tile or inference["tile"]).scores
    raise ValueError(f"unknown inference engine '{engine}' (sliding or dense)")


def score_slices(
    read_slices: Callable[[np.ndarray], np.ndarray],
    depth: int,
    z_range: range,
    n_z: int,
    scorer: Scorer,
) -> np.ndarray:
    """Scores (len(z_range), y, x) of slices of a volume of `depth` slices."""
    return np.stack([scorer(read_slices(neighbour_slices(z, n_z, depth))) for z in z_range])


def score_regions(
    regions: RegionSet, scorer: Scorer, n_z: int, margin: int, only: list[int] | None = None
) -> np.ndarray:
    """Scores of every annotated region (or those numbered in `only`) plus `margin` pixels
    around it, from its crop (context beyond the crop is mirrored)."""
    z0 = regions.margin_z - n_z // 2
    windows = []
    for index, row in enumerate(regions.table.itertuples()):
        if only is not None and index not in only:
            continue
        top = regions.margin_xy - margin
        roi = (top, top + row.height + 2 * margin, top, top + row.width + 2 * margin)
        windows.append(scorer(regions.crops[index, z0 : z0 + n_z], roi))
    return np.stack(windows)


def label_agreement(first: np.ndarray, second: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of voxels that two score maps put in the same class."""
    return float(np.mean((first > threshold) == (second > threshold)))


def load_model(path: str):  # noqa: ANN201
    import keras

    return keras.saving.load_model(path, compile=False)


def stitch_chunks(chunk_paths: list[str], output: str, dtype: str = "float32") -> tuple:
    """Write the chunks' `/scores` into one `/scores` volume; every slice exactly once."""
    import h5py

    from .io import atomic_output

    pieces = []
    for path in chunk_paths:
        with h5py.File(path, "r") as handle:
            pieces.append(
                (
                    int(handle.attrs["first_slice"]),
                    int(handle.attrs["stop_slice"]),
                    path,
                    handle["scores"].shape[1:],
                )
            )
    pieces.sort()
    depth = pieces[-1][1]
    covered = np.zeros(depth, np.int64)
    for first, stop, _, _ in pieces:
        covered[first:stop] += 1
    if not (covered == 1).all() or len({p[3] for p in pieces}) != 1:
        raise ValueError(
            f"score chunks do not cover slices 0-{depth - 1} exactly once: "
            f"{[(p[0], p[1]) for p in pieces]}"
        )
    shape = (depth, *pieces[0][3])
    with atomic_output(output) as tmp, h5py.File(tmp, "w") as out:
        scores = out.create_dataset("scores", shape=shape, dtype=dtype, chunks=(1, *shape[1:]))
        for first, stop, path, _ in pieces:
            with h5py.File(path, "r") as handle:
                scores[first:stop] = np.clip(handle["scores"][:], 0, 1).astype(dtype)
    return shape
