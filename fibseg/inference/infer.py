"""Inference: every voxel's score is P(solid) from its own n_xy x n_xy x n_z neighbourhood,
mirror-padded at the x-y and z edges (§3.8).

The two engines live in their own modules: `fibseg.inference.sliding` (the paper's method)
and `fibseg.inference.dense_engine` (the fully convolutional twin). This module picks one from
the settings and applies it to slices of a volume or to annotated regions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..annotation.regions import RegionSet
from ..io.errors import InputError, LimitError
from ..networks.model import FILTERS, model_geometry
from ..networks.windows import neighbour_slices
from ..runtime.settings import InferenceSettings
from .dense_engine import DenseEngine, check_dense_padding
from .sliding import sliding_scores
from .unet_engine import UnetEngine

Scorer = Callable[..., np.ndarray]


def make_scorer(
    model, engine: str, inference: InferenceSettings, tile: int | None = None
) -> Scorer:
    """A function (stack, roi) -> scores for the configured engine; fibseg's U-Net has an
    engine of its own (fibseg.inference.unet_engine), whatever `engine` says."""
    _, _, padding = model_geometry(model)
    if padding == "unet":
        return UnetEngine(model, tile or inference.tile).scores
    if engine == "sliding":
        return lambda stack, roi=None: sliding_scores(
            model, stack, inference.extract_batch, inference.predict_batch, roi
        )
    if engine == "dense":
        check_dense_padding(padding, inference.allow_approximate_dense)
        return DenseEngine(model, tile or inference.tile).scores
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
    around it, from its crop (context beyond the crop is mirrored). Every region is scored in
    the common box of `regions.labels` (regions of different sizes are padded to it)."""
    z0 = regions.margin_z - n_z // 2
    height, width = regions.labels.shape[1:]
    windows = []
    for index in range(len(regions.table)):
        if only is not None and index not in only:
            continue
        top = regions.margin_xy - margin
        roi = (top, top + height + 2 * margin, top, top + width + 2 * margin)
        windows.append(scorer(regions.crops[index, z0 : z0 + n_z], roi))
    return np.stack(windows)


def label_agreement(first: np.ndarray, second: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of voxels that two score maps put in the same class."""
    return float(np.mean((first > threshold) == (second > threshold)))


def load_model(path: str):
    """A Keras model, loaded in safe mode: a file from someone else cannot run code (a
    Lambda layer's Python function, say) while it is read. Fails with an InputError that
    names the file."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        unsafe = "safe_mode" in str(error) or "arbitrary code" in str(error)
        raise InputError(
            "the model holds code that runs when it is loaded (a Lambda layer or a custom "
            "function), which safe mode refuses."
            if unsafe
            else f"is not a Keras model that can be read ({error}).",
            file=path,
            fix="set pretrained.model to a model saved by fibseg (results/model/best.keras), "
            "or rebuild the model without Lambda layers and custom objects."
            if unsafe
            else "point pretrained.model at the .keras file that fibseg wrote (Keras 3 format).",
        ) from None


# Layers of the grid's architecture that the dense engine's twin uses (fibseg.networks.twin).
DENSE_LAYERS = (
    *(f"block{b}_conv{c}" for b in range(1, len(FILTERS) + 1) for c in (1, 2)),
    "dense1",
    "dense2",
    "score",
)


def check_scorable(model, path: str, inference: InferenceSettings) -> tuple[int, int, str]:
    """(n_xy, n_xy, n_z) input of odd sizes and one sigmoid output, so that each voxel is
    scored as the centre of its neighbourhood; for the dense engine also the grid's layers
    and 'valid' padding (or the approximation allowed). Returns (n_xy, n_z, padding)."""
    import keras

    if model_geometry(model)[2] == "unet":
        return check_unet_scorable(model, path)
    shape = tuple(model.input_shape) if len(model.inputs) == 1 else ()
    sizes = shape[1:]
    if len(sizes) != 3 or None in sizes or sizes[0] != sizes[1] or not all(n % 2 for n in sizes):
        raise InputError(
            f"the model takes input {shape if shape else f'{len(model.inputs)} inputs'}; "
            "fibseg scores one (n_xy, n_xy, n_z) neighbourhood per voxel, n_xy and n_z odd "
            "so that the voxel is its centre.",
            file=path,
            fix="set pretrained.model to a model trained by fibseg (results/model/best.keras "
            "of a run).",
        )
    last = model.layers[-1]
    if tuple(model.output_shape) != (None, 1) or getattr(last, "activation", None) is not (
        keras.activations.sigmoid
    ):
        raise InputError(
            f"the model's output is {tuple(model.output_shape)} from layer '{last.name}'; "
            "fibseg needs one sigmoid output, P(solid), per neighbourhood.",
            file=path,
            fix="set pretrained.model to a model trained by fibseg (results/model/best.keras "
            "of a run).",
        )
    names = {layer.name for layer in model.layers}
    grid_model = set(DENSE_LAYERS) <= names
    padding = model_geometry(model)[2]
    if inference.engine == "dense":
        if not grid_model:
            raise InputError(
                "the dense engine rebuilds the layers of fibseg's CNN, and this model lacks "
                f"{', '.join(n for n in DENSE_LAYERS if n not in names)}.",
                file=path,
                fix="set inference.engine: sliding, which scores any such model, or "
                "pretrained.model to a model trained by fibseg.",
            )
        try:
            check_dense_padding(padding, inference.allow_approximate_dense)
        except LimitError as error:
            raise InputError(
                f"the model has padding '{padding}': {error.problem}",
                file=path,
                fix="set inference.engine: sliding (exact for any model), or accept the "
                "approximation with inference.allow_approximate_dense: true, or set "
                "pretrained.model to a model trained with model.padding: valid.",
            ) from None
    return int(sizes[0]), int(sizes[2]), padding


def check_unet_scorable(model, path: str) -> tuple[int, int, str]:
    """fibseg's U-Net: slices in, one sigmoid score per voxel out. Returns (0, n_z, 'unet')."""
    import keras

    last = model.layers[-1]
    shape = tuple(model.output_shape)
    if len(shape) != 4 or shape[-1] != 1 or last.activation is not keras.activations.sigmoid:
        raise InputError(
            f"the U-Net's output is {shape} from layer '{last.name}'; fibseg needs one sigmoid "
            "score, P(solid), per voxel.",
            file=path,
            fix="set pretrained.model to a U-Net trained by fibseg (results/model/best.keras "
            "of a run with model.architecture: unet).",
        )
    return 0, int(model.input_shape[-1]), "unet"
