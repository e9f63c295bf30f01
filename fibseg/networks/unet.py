"""A 2.5-D U-Net at full resolution (`model.architecture: unet`): n_z neighbouring slices as
input channels, one P(solid) per voxel of the centre slice.

Three levels of two 3 x 3 convolutions with batch normalisation and ELU (24, 48, 96 filters,
192 at the bottom), 2 x 2 max-pooling down, nearest upsampling and skip concatenation up, a
1 x 1 sigmoid. Fully convolutional: any slice whose sides are multiples of `ALIGN` goes in
whole. Keras 3 API only (TensorFlow, JAX or PyTorch).

In the grid, n_z is the number of slices and n_xy the side of the training tiles (the context
one training step sees around a labelled region), a multiple of `ALIGN`.
"""

from __future__ import annotations

from ..io.errors import LimitError

FILTERS = (24, 48, 96)
BOTTOM = 192
ALIGN = 2 ** len(FILTERS)  # three 2 x 2 poolings: sides must be multiples of 8
MIN_TILE = 4 * ALIGN
NAME_PREFIX = "fibseg_unet"


def receptive_radius() -> int:
    """How far (px) an output voxel can see on each side: two 3 x 3 convolutions per level at
    its scale (encoder, bottom and decoder), one pixel of the scale before each pooling and
    one of the coarse scale after each upsampling (an upper bound)."""
    scales = [2**level for level in range(len(FILTERS))]
    convolutions = 2 * sum(scales) * 2 + 2 * ALIGN  # encoder and decoder, then the bottom
    pooling = sum(scales)
    upsampling = sum(2 * s for s in scales)
    return convolutions + pooling + upsampling


def halo() -> int:
    """The context a tile needs on each side for exact scores: the receptive radius rounded
    up to the pooling alignment."""
    return -(-receptive_radius() // ALIGN) * ALIGN


def is_unet(model) -> bool:
    """Whether a Keras model is fibseg's U-Net (by its name)."""
    return str(getattr(model, "name", "")).startswith(NAME_PREFIX)


def check_unet_grid(n_xys: list[int], n_zs: list[int]) -> None:
    """For the U-Net, n_xy is the training tile's side (a multiple of 8, at least 32) and n_z
    the odd number of input slices."""
    from .model import check_slices

    bad = [n for n in n_xys if n % ALIGN or n < MIN_TILE]
    if bad:
        raise LimitError(
            f"holds {bad}; for model.architecture: unet, n_xy is the side of the training "
            f"tiles, which must be a multiple of {ALIGN} (three poolings) and at least "
            f"{MIN_TILE}.",
            "use sizes such as 64, 96 or 128.",
            "grid.n_xy",
        )
    for n_z in n_zs:
        check_slices(n_z)


def build_unet(n_z: int, seed: int | None = None):
    """The U-Net for n_z input slices; input (None, None, n_z), output (None, None, 1)."""
    import keras
    from keras import layers

    from .model import check_slices

    check_slices(n_z)
    counter = iter(range(1000))

    def init():
        return keras.initializers.HeNormal(seed=None if seed is None else seed + next(counter))

    def block(x, filters: int, name: str):
        for conv in (1, 2):
            x = layers.Conv2D(
                filters, 3, padding="same", kernel_initializer=init(), name=f"{name}_conv{conv}"
            )(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_norm{conv}")(x)
            x = layers.Activation("elu", name=f"{name}_elu{conv}")(x)
        return x

    inputs = keras.Input((None, None, n_z), name="slices")
    x, skips = inputs, []
    for level, filters in enumerate(FILTERS, start=1):
        x = block(x, filters, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = block(x, BOTTOM, "bottom")
    for level, filters in reversed(list(enumerate(FILTERS, start=1))):
        x = layers.UpSampling2D(2, name=f"up{level}_upsample")(x)
        x = layers.Concatenate(name=f"up{level}_skip")([x, skips[level - 1]])
        x = block(x, filters, f"up{level}")
    outputs = layers.Conv2D(
        1, 1, activation="sigmoid", kernel_initializer=init(), name="score", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=f"{NAME_PREFIX}_nz{n_z}")
