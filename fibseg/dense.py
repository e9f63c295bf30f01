"""The dense engine: the grid's classifier evaluated fully convolutionally.

Pooling runs at stride 1 and its output is split into stride-2 fragments on the batch axis,
and the dense layers become convolutions. Slices are processed in tiles with a halo, so
memory stays bounded and the seams are exact. For `valid` models it equals the sliding
window up to float rounding; for `same` models it is an approximation (the zero padding
inside a patch is not reproduced). Keras 3 API only: TensorFlow, JAX or PyTorch.
"""

from __future__ import annotations

import numpy as np

from .io import LimitError
from .model import FILTERS, VALID_MIN_NXY, feature_size, model_geometry
from .progress import report_tile
from .windows import Roi, mirrored_source, region_of_interest


def check_dense_padding(padding: str, allow_approximate: bool) -> None:
    """The dense engine is exact only for 'valid' models; 'same' ones need an opt-in."""
    if padding == "same" and not allow_approximate:
        raise LimitError(
            "the dense engine is exact only for models with padding 'valid'; 'same' models "
            "would get an approximation.",
            f"set model.padding: valid (n_xy >= {VALID_MIN_NXY}) and retrain, or "
            "inference.engine: sliding, or accept the approximation with "
            "inference.allow_approximate_dense: true.",
            "inference.engine",
        )


LEVELS = len(FILTERS)  # 2x2 poolings, so the twin's output interleaves 4**LEVELS fragments
STEP = 2**LEVELS  # tile sides are multiples of this


def _space_to_batch_layer():
    import keras
    from keras import ops

    class SpaceToBatch(keras.layers.Layer):
        """Splits even-sided maps into their four 2x2 phases, stacked on the batch axis:
        phase (a, b) holds rows a::2 and columns b::2, at batch (2a + b) * batch + n."""

        def call(self, x):
            batch, height, width, channels = ops.shape(x)
            x = ops.reshape(x, (batch, height // 2, 2, width // 2, 2, channels))
            x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
            return ops.reshape(x, (4 * batch, height // 2, width // 2, channels))

        def compute_output_shape(self, shape):
            batch, height, width, channels = shape
            half = [None if side is None else side // 2 for side in (height, width)]
            return (None if batch is None else 4 * batch, *half, channels)

    return SpaceToBatch


def dense_twin(model):
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

    def __init__(self, model, tile: int = 1024) -> None:
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
                report_tile(row * cols + col + 1, rows * cols)
        return out[: y1 - y0, : x1 - x0]
