"""The fully convolutional twin of a grid model: one definition, used by dense training
(fibseg.training.dense) and by the dense engine (fibseg.inference.dense_engine).

The twin calls the patch model's own variables, not copies. Each 2x2 pooling runs at stride 1
and its output is split into the four stride-2 fragments on the batch axis (SpaceToBatch), so
every later layer is a plain convolution over a batch of fragments: the work of dilated
convolutions without their per-layer reshuffling. The convolutions run 'valid' (a 'same'
model's through `ValidConv`, over its own kernels), dense1 becomes an s x s convolution over
its own kernel (`DenseAsConv`), and dense2 and the score act on the last axis. The output
interleaves 4**LEVELS fragments: `fragment_layout` puts maps in that order,
`from_fragment_layout` and `interleave_fragments` put fragments back in place.

For `valid` models twin output p is exactly the patch model on the patch at p (+ the offset
of `twin_geometry`); for `same` models it is an approximation (the zero padding inside a patch
is not reproduced). Keras 3 ops only: TensorFlow, JAX or PyTorch; Keras is imported lazily.
"""

from __future__ import annotations

import functools

import numpy as np

from .model import FILTERS, feature_size, model_geometry

LEVELS = len(FILTERS)  # 2x2 poolings, so the twin's output interleaves 4**LEVELS fragments
STEP = 2**LEVELS  # tile sides are multiples of this


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


# --- the layers -----------------------------------------------------------------------------


@functools.cache
def space_to_batch_class():
    """The keras layer class SpaceToBatch (made on first use, so that importing is cheap)."""
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


@functools.cache
def _shared_layer_classes():
    import keras
    from keras import ops

    class ValidConv(keras.layers.Layer):
        """A 3x3 convolution layer of the model applied with 'valid' padding, over its own
        kernel and bias (the same variables)."""

        def __init__(self, conv, **kwargs) -> None:
            super().__init__(**kwargs)
            self.conv = conv  # tracked as a sublayer: its variables are this layer's

        def call(self, x):
            conv = self.conv
            out = ops.conv(x, conv.kernel, strides=1, padding="valid")
            return conv.activation(ops.add(out, ops.reshape(conv.bias, (1, 1, 1, -1))))

        def compute_output_shape(self, shape):
            batch, height, width, _ = shape
            side = self.conv.kernel_size[0]
            out = [None if n is None else n - side + 1 for n in (height, width)]
            return (batch, *out, self.conv.filters)

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

    return ValidConv, DenseAsConv


def valid_conv(conv):
    """The model's convolution `conv` as the twin runs it: itself if it is 'valid', else the
    same kernel and bias applied 'valid' (`ValidConv`)."""
    if conv.padding == "valid":
        return conv
    return _shared_layer_classes()[0](conv, name=f"{conv.name}_valid")


def dense_as_conv(dense, side: int, channels: int):
    """The model's Dense layer `dense` over a (side, side, channels) map as a convolution over
    its own kernel and bias (`DenseAsConv`)."""
    return _shared_layer_classes()[1](dense, side, channels, name=f"{dense.name}_conv")


def pointwise(dense, how: str):
    """dense2 or the score layer on the last axis of the fragment features: the model's own
    Dense layer (`how` 'dense': a matrix product, the patch path's own arithmetic, which dense
    training needs), or a 1 x 1 convolution over its kernel ('conv': the dense engine's
    arithmetic, which its scores have always had). The two differ by float rounding only."""
    if how == "dense":
        return dense
    if how == "conv":
        return dense_as_conv(dense, 1, dense.kernel.shape[0])
    raise ValueError(f"pointwise must be 'dense' or 'conv', not '{how}'")


# --- the twin -------------------------------------------------------------------------------


def twin_trunk(model, inputs, how: str = "dense"):
    """The twin up to the score layer: `inputs` through the model's own variables to
    dropout2's (.., 64) fragment features. The dropout layers are the model's own, so they
    follow the `training` flag (identity when predicting). `how`: see `pointwise`."""
    from keras import layers

    n_xy, _, padding = model_geometry(model)
    split = space_to_batch_class()
    x = inputs
    for block in range(1, LEVELS + 1):
        for conv in (1, 2):
            x = valid_conv(model.get_layer(f"block{block}_conv{conv}"))(x)
        x = layers.MaxPooling2D(2, strides=1, name=f"block{block}_pool_stride1")(x)
        x = split(name=f"block{block}_fragments")(x)
    x = dropout(model, "spatial_dropout")(x)
    x = dense_as_conv(model.get_layer("dense1"), feature_size(n_xy, padding), FILTERS[-1])(x)
    x = dropout(model, "dropout1")(x)
    x = pointwise(model.get_layer("dense2"), how)(x)
    return dropout(model, "dropout2")(x)


def dropout(model, name: str):
    """The model's dropout layer `name`, or nothing (identity) for a model without it, such as
    a pretrained one that the dense engine scores with."""
    names = {layer.name for layer in model.layers}
    return model.get_layer(name) if name in names else (lambda x: x)


def build_twin(model, how: str = "dense", name: str = "twin"):
    """The twin of `model` as a keras Model named `{model.name}_{name}`: input
    (B, side + field - 1, same, n_z) tiles, side a multiple of STEP; output the
    (4**LEVELS B, side / STEP, same, 1) fragment scores. `how`: see `pointwise`."""
    import keras

    _, n_z, _ = model_geometry(model)
    inputs = keras.Input((None, None, n_z), name="tiles")
    scores = pointwise(model.get_layer("score"), how)(twin_trunk(model, inputs, how))
    return keras.Model(inputs, scores, name=f"{model.name}_{name}")


def dense_twin(model):
    """The twin the dense engine scores with (1 x 1 convolutions for dense2 and the score)."""
    return build_twin(model, "conv", "dense")


# --- fragment order -------------------------------------------------------------------------


def fragment_layout(maps: np.ndarray) -> np.ndarray:
    """(B, H, W) maps (labels, weights) in the twin's fragment order (4**L B, H/16, W/16).

    Level k splits rows by the phase a_k (and columns by b_k) and stacks the phases on the
    batch axis, phase (a, b) at (2a + b) * batch + n; so the fragment index is
    sum_k (2 a_k + b_k) 4**(k-1) B + n and holds rows a_1 + 2 a_2 + ... + 16 i. The inverse
    of `from_fragment_layout`."""
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
    """(4**L B, h, w) fragments as (B, 16 h, 16 w) maps, the inverse of `fragment_layout`:
    the fragment of phases (a1, b1) ... (aL, bL) holds rows a1 + 2 a2 + ... + STEP i."""
    fragments = np.asarray(fragments)
    _, h, w = fragments.shape
    phases = fragments.reshape((2,) * 2 * LEVELS + (batch, h, w))
    rows = [2 * LEVELS, 2 * LEVELS + 1] + [2 * k for k in range(LEVELS)]
    cols = [2 * LEVELS + 2] + [2 * k + 1 for k in range(LEVELS)]
    return phases.transpose(rows + cols).reshape(batch, STEP * h, STEP * w)


def interleave_fragments(fragments: np.ndarray) -> np.ndarray:
    """The (4**LEVELS, h, w) fragment scores of one tile as a (STEP h, STEP w) map."""
    return from_fragment_layout(fragments, 1)[0]
