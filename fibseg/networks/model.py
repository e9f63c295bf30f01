"""The CNN of §3.4 (Keras 3 API only, so it runs on TensorFlow, JAX or PyTorch) and the
random search of §3.7."""

from __future__ import annotations

import math

import numpy as np

from ..io.errors import LimitError
from ..runtime.settings import SearchRanges
from .architecture import ModelConfigError, check_slices

FILTERS = (16, 32, 64, 80)
DENSE = (128, 64)
MIN_NXY = 2 ** len(FILTERS)  # four 2x2 poolings
VALID_MIN_NXY = 76  # four blocks of two valid 3x3 convolutions and a 2x2 pool need this
GRID_NXY_EXAMPLES = "33, 49, 65, 81, 97, 113"
VALID_NXY_EXAMPLES = "81, 97 or 113"


def feature_size(n_xy: int, padding: str) -> int:
    """Side of the last block's output for an n_xy input."""
    size = n_xy
    for _ in FILTERS:
        if padding == "valid":
            size -= 4
        size //= 2
    return size


def model_geometry(model) -> tuple[int, int, str]:
    """(n_xy, n_z, padding) of a patch model, one (n_xy, n_xy, n_z) neighbourhood in; padding
    'unknown' for a model of another make (which only the sliding engine scores). A model of
    any architecture: fibseg.networks.registry.architecture_of(model).geometry(model)."""
    _, n_xy, _, n_z = model.input_shape
    names = {layer.name for layer in model.layers}
    padding = model.get_layer("block1_conv1").padding if "block1_conv1" in names else "unknown"
    return int(n_xy), int(n_z), padding


def check_architecture(n_xy: int, n_z: int, padding: str) -> None:
    """Reject sizes that give no network, with a message that says what to use."""
    if n_xy < 1 or n_z < 1:
        raise ModelConfigError(
            f"n_xy={n_xy}, n_z={n_z}: both must be at least 1.", "use positive sizes.", "grid"
        )
    check_slices(n_z)
    if padding == "valid" and n_xy < VALID_MIN_NXY:
        raise ModelConfigError(
            f"n_xy={n_xy} is too small for padding 'valid': four blocks need "
            f"n_xy >= {VALID_MIN_NXY}.",
            f"use {VALID_NXY_EXAMPLES}, or set model.padding: same.",
            "grid.n_xy",
        )
    if n_xy < MIN_NXY:
        raise ModelConfigError(
            f"n_xy={n_xy} is too small: four 2x2 poolings need n_xy >= {MIN_NXY}.",
            f"use {MIN_NXY + 1} or more.",
            "grid.n_xy",
        )


def check_dense_padding(padding: str, allow_approximate: bool) -> None:
    """The dense engine (the twin) is exact only for 'valid' models; 'same' ones need an
    opt-in."""
    if padding == "same" and not allow_approximate:
        raise LimitError(
            "the dense engine is exact only for models with padding 'valid'; 'same' models "
            "would get an approximation.",
            f"set model.padding: valid (n_xy >= {VALID_MIN_NXY}) and retrain, or "
            "inference.engine: sliding, or accept the approximation with "
            "inference.allow_approximate_dense: true.",
            "inference.engine",
        )


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


def check_grid_sizes(n_xys: list[int], n_zs: list[int], padding: str) -> None:
    """Every cell of the grid gives a network, and its voxel is the centre of its patch
    (odd n_xy, so flips and rotations keep the label in place)."""
    even = [n for n in n_xys if n % 2 == 0]
    if even:
        raise ModelConfigError(
            f"holds even sizes {even}; the voxel to classify must be the centre of its "
            "neighbourhood.",
            f"use odd sizes such as {GRID_NXY_EXAMPLES}.",
            "grid.n_xy",
        )
    for n_z in n_zs:
        for n_xy in n_xys:
            check_architecture(n_xy, n_z, padding)


def build_model(
    n_xy: int,
    n_z: int,
    padding: str = "same",
    p_d: float = 0.0,
    p_sd: float = 0.0,
    weight_decay: float = 0.0,
    seed: int | None = None,
):
    """4 x [Conv 3x3 ELU, Conv 3x3 ELU, MaxPool 2x2] (16/32/64/80), spatial dropout, Flatten,
    Dense 128 ELU, dropout, Dense 64 ELU, dropout, Dense 1 sigmoid; input (n_xy, n_xy, n_z)."""
    import keras
    from keras import layers

    check_architecture(n_xy, n_z, padding)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None

    def init(offset: int):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    inputs = keras.Input((n_xy, n_xy, n_z), name="neighbourhood")
    x = inputs
    layer_index = 0
    for block, filters in enumerate(FILTERS, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(
                filters,
                3,
                padding=padding,
                activation="elu",
                kernel_initializer=init(layer_index),
                kernel_regularizer=regularizer,
                name=f"block{block}_conv{conv}",
            )(x)
            layer_index += 1
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.SpatialDropout2D(p_sd, seed=seed, name="spatial_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate(DENSE, start=1):
        x = layers.Dense(
            units,
            activation="elu",
            kernel_initializer=init(layer_index),
            kernel_regularizer=regularizer,
            name=f"dense{index}",
        )(x)
        layer_index += 1
        x = layers.Dropout(p_d, seed=seed, name=f"dropout{index}")(x)
    outputs = layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer=init(layer_index),
        kernel_regularizer=regularizer,
        name="score",
    )(x)
    return keras.Model(inputs, outputs, name=f"fibseg_nxy{n_xy}_nz{n_z}_{padding}")


def draw_hyperparameters(seed: int, n_xy: int, n_z: int, search: SearchRanges) -> dict[str, float]:
    """One draw of the random search (§3.7); the same seed and cell give the same draw."""
    rng = np.random.default_rng([seed, n_xy, n_z])
    return {
        "a": float(rng.uniform(*search.a)),
        "b": float(rng.uniform(*search.b)),
        "log10_lr0": float(rng.choice(search.log10_lr0)),
        "k": int(rng.choice(search.k)),
        "c": float(10 ** rng.uniform(*search.log10_c)),
        "p_d": float(rng.uniform(*search.p_d)),
        "p_sd": float(rng.uniform(*search.p_sd)),
    }


def learning_rate(epoch: int, log10_lr0: float, k: int, step: float = 0.25) -> float:
    """Step schedule: log10(LR) starts at log10_lr0 and drops by `step` every k epochs."""
    return 10 ** (log10_lr0 - step * math.floor(epoch / k))
