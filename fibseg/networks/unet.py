"""A 2.5-D U-Net at full resolution (`model.architecture: unet`): n_z neighbouring slices as
input channels, one P(solid) per voxel of the centre slice.

Three levels of two 3 x 3 convolutions with batch normalisation and ELU (24, 48, 96 filters,
192 at the bottom), 2 x 2 max-pooling down, nearest upsampling and skip concatenation up, a
1 x 1 sigmoid. Fully convolutional: any slice whose sides are multiples of `ALIGN` goes in
whole. Keras 3 API only (TensorFlow, JAX or PyTorch).

In the grid, n_z is the number of slices and n_xy the side of the training tiles (the context
one training step sees around a labelled region), a multiple of `ALIGN`. The architecture
(`Unet`, registered as `unet`) trains on those tiles (fibseg.training.unet_tiles) and scores
whole slices in exact tiles (fibseg.inference.unet_engine).
"""

from __future__ import annotations

from ..io.errors import InputError, LimitError
from .architecture import Architecture, Geometry, check_slices, register

FILTERS = (24, 48, 96)
BOTTOM = 192
ALIGN = 2 ** len(FILTERS)  # three 2 x 2 poolings: sides must be multiples of 8
MIN_TILE = 4 * ALIGN
NAME_PREFIX = "fibseg_unet"
# What `padding` says of a U-Net in the records (rule check_model, bundles): its convolutions
# pad 'same' and its engine mirror-pads the slice by the halo; model.padding does not apply.
PADDING = "unet"


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


def check_unet_training(unlabelled_method: str) -> None:
    """The U-Net learns from labelled voxels only: pseudo-labels are built for the patch CNN."""
    if unlabelled_method != "none":
        raise LimitError(
            f"is '{unlabelled_method}', which trains the patch CNN on unlabelled voxels; the "
            "U-Net (model.architecture: unet) learns from the labelled voxels only.",
            "set training.unlabelled.method: none, or model.architecture: patch.",
            "training.unlabelled.method",
        )


def build_unet(n_z: int, seed: int | None = None):
    """The U-Net for n_z input slices; input (None, None, n_z), output (None, None, 1)."""
    import keras
    from keras import layers

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


class Unet(Architecture):
    """fibseg's 2.5-D U-Net: n_xy the side of the training tiles (a multiple of `ALIGN`),
    n_z odd; trained on tiles around the labels, scored slice by slice in tiles with the
    `halo` (exact), whatever inference.engine says."""

    name = "unet"

    def build(self, n_xy, n_z, padding, hyper, seed):
        return build_unet(n_z, seed)

    def check_grid(self, n_xys, n_zs, padding) -> None:
        check_unet_grid(list(n_xys), list(n_zs))

    def grid_geometry(self, n_xy, n_z, padding) -> Geometry:
        return Geometry(self, n_xy, n_z, PADDING)

    def context_xy(self, n_xy: int) -> int:
        return n_xy // 2

    def owns(self, model) -> bool:
        return is_unet(model)

    def owns_description(self, description) -> bool:
        return str(description["name"]).startswith(NAME_PREFIX)

    def geometry(self, model) -> Geometry:
        return Geometry(self, 0, int(model.input_shape[-1]), PADDING)

    def file_geometry(self, description) -> Geometry:
        n_z = int(description["layers"][0]["config"]["batch_shape"][-1])
        return Geometry(self, 0, n_z, PADDING)

    def check_training(self, mode, unlabelled_method, padding) -> None:
        check_unet_training(unlabelled_method)

    def epochs(self, loops, mode):
        return loops.unet_tiles()

    def check_engine(self, engine, allow_approximate_dense, padding) -> None:
        """inference.engine does not apply: the U-Net has an engine of its own."""

    def check_scorable(self, model, path, inference) -> Geometry:
        """Slices in, one sigmoid score per voxel out."""
        import keras

        last = model.layers[-1]
        shape = tuple(model.output_shape)
        if len(shape) != 4 or shape[-1] != 1 or last.activation is not keras.activations.sigmoid:
            raise InputError(
                f"the U-Net's output is {shape} from layer '{last.name}'; fibseg needs one "
                "sigmoid score, P(solid), per voxel.",
                file=path,
                fix="set pretrained.model to a U-Net trained by fibseg "
                "(results/model/best.keras of a run with model.architecture: unet).",
            )
        return self.geometry(model)

    def scorer(self, model, geometry, engine, inference, tile, engines):
        return engines.unet(model, inference, tile)

    def exact_scorer(self, model, geometry, inference, engines):
        return None  # the tiles are exact

    def predict_work_bytes(self, geometry, height, width, inference) -> int:
        """A tile with its halo: the full-resolution maps of the way up."""
        side = min(inference.tile, max(height, width)) + 2 * halo()
        return side * side * 3 * FILTERS[0] * 4 * 4


register(Unet())
