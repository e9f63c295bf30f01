"""Inference: every voxel's score is P(solid) from its own n_xy x n_xy x n_z neighbourhood,
mirror-padded at the x-y and z edges (§3.8), or from a whole slice through the U-Net.

The engines live in their own modules: `fibseg.inference.sliding` (the paper's method),
`fibseg.inference.dense_engine` (the patch CNN's fully convolutional twin) and
`fibseg.inference.unet_engine` (the U-Net's exact tiles). A model's architecture
(fibseg.networks.registry) picks one of `ENGINES`, with the configured engine; this module
applies it to slices of a volume or to annotated regions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..annotation.regions import RegionSet
from ..io.errors import InputError
from ..networks.registry import Geometry, architecture_of, geometry_of
from ..networks.windows import neighbour_slices
from ..runtime.settings import InferenceSettings
from .dense_engine import DenseEngine
from .sliding import sliding_scores
from .unet_engine import UnetEngine

Scorer = Callable[..., np.ndarray]


class FibsegEngines:
    """The engines an architecture scores with (fibseg.networks.architecture.Engines)."""

    def sliding(self, model, inference: InferenceSettings) -> Scorer:
        return lambda stack, roi=None: sliding_scores(
            model, stack, inference.extract_batch, inference.predict_batch, roi
        )

    def dense(self, model, inference: InferenceSettings, tile: int | None) -> Scorer:
        return DenseEngine(model, tile or inference.tile).scores

    def unet(self, model, inference: InferenceSettings, tile: int | None) -> Scorer:
        return UnetEngine(model, tile or inference.tile).scores


ENGINES = FibsegEngines()


def make_scorer(
    model,
    engine: str,
    inference: InferenceSettings,
    tile: int | None = None,
    geometry: Geometry | None = None,
) -> Scorer:
    """A function (stack, roi) -> scores for the configured engine, as the model's
    architecture picks it (fibseg's U-Net has an engine of its own, whatever `engine` says);
    `geometry` the model's, where it is known already (`check_scorable`)."""
    geometry = geometry or geometry_of(model)
    return geometry.architecture.scorer(model, geometry, engine, inference, tile, ENGINES)


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


def check_scorable(model, path: str, inference: InferenceSettings) -> Geometry:
    """The model's geometry (with its architecture, found once here), or an InputError naming
    `path` where fibseg cannot score it with the configured engine: for a patch model one
    (n_xy, n_xy, n_z) input of odd sizes and one sigmoid output (for the dense engine also
    the grid's layers and 'valid' padding, or the approximation allowed); for the U-Net one
    sigmoid score per voxel."""
    return architecture_of(model).check_scorable(model, path, inference)
