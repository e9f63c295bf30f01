"""The paper's patch CNN as an architecture (`PatchCNN`, registered as `patch`): one voxel
scored from its n_xy x n_xy x n_z neighbourhood (fibseg.networks.model), by the sliding
window or through its fully convolutional twin (fibseg.networks.twin). It is also what a
model of no known architecture is taken for: the sliding engine scores any model with one
(n_xy, n_xy, n_z) input and one sigmoid output."""

from __future__ import annotations

from ..io.errors import InputError, LimitError
from .architecture import Architecture, Geometry, register
from .model import (
    DENSE,
    FILTERS,
    build_model,
    check_dense_padding,
    check_dense_training,
    check_grid_sizes,
    model_geometry,
)
from .twin import twin_geometry

# Layers of the grid's architecture that the dense engine's twin uses (fibseg.networks.twin).
DENSE_LAYERS = (
    *(f"block{b}_conv{c}" for b in range(1, len(FILTERS) + 1) for c in (1, 2)),
    "dense1",
    "dense2",
    "score",
)
WIDEST = max(*FILTERS, *DENSE)  # channels of the dense twin's widest feature map
FROM_A_RUN = (
    "set pretrained.model to a model trained by fibseg (results/model/best.keras of a run)."
)


class PatchCNN(Architecture):
    """The CNN of §3.4: n_xy the (odd) side of the neighbourhood, n_z odd, padding 'same'
    (the paper's) or 'valid' (exact dense training and inference). Trained on sampled
    patches or densely through its twin (`training.mode`); scored by `inference.engine`."""

    name = "patch"
    fallback = True

    def build(self, n_xy, n_z, padding, hyper, seed):
        return build_model(n_xy, n_z, padding, hyper["p_d"], hyper["p_sd"], hyper["c"], seed)

    def check_grid(self, n_xys, n_zs, padding) -> None:
        check_grid_sizes(list(n_xys), list(n_zs), padding)

    def grid_geometry(self, n_xy, n_z, padding) -> Geometry:
        return Geometry(self, n_xy, n_z, padding)

    def context_xy(self, n_xy: int) -> int:
        return n_xy // 2

    def owns(self, model) -> bool:
        return True  # the fallback: asked only after every other architecture

    def owns_description(self, description) -> bool:
        return True

    def geometry(self, model) -> Geometry:
        return Geometry(self, *model_geometry(model))

    def file_geometry(self, description) -> Geometry:
        layers = description["layers"]
        shape = next(
            layer["config"]["batch_shape"]
            for layer in layers
            if layer["class_name"] == "InputLayer"
        )
        paddings = [
            layer["config"].get("padding") for layer in layers if layer["name"] == "block1_conv1"
        ]
        return Geometry(self, int(shape[1]), int(shape[3]), paddings[0] if paddings else "same")

    def check_training(self, mode, unlabelled_method, padding) -> None:
        if mode == "dense":
            check_dense_training(padding)

    def epochs(self, loops, mode):
        return loops.dense() if mode == "dense" else loops.patches()

    def check_engine(self, engine, allow_approximate_dense, padding) -> None:
        if engine == "dense":
            check_dense_padding(padding, allow_approximate_dense)

    def check_scorable(self, model, path, inference) -> Geometry:
        """(n_xy, n_xy, n_z) input of odd sizes and one sigmoid output, so that each voxel
        is scored as the centre of its neighbourhood; for the dense engine also the grid's
        layers and 'valid' padding (or the approximation allowed)."""
        import keras

        shape = tuple(model.input_shape) if len(model.inputs) == 1 else ()
        sizes = shape[1:]
        if (
            len(sizes) != 3
            or None in sizes
            or sizes[0] != sizes[1]
            or not all(n % 2 for n in sizes)
        ):
            raise InputError(
                f"the model takes input {shape if shape else f'{len(model.inputs)} inputs'}; "
                "fibseg scores one (n_xy, n_xy, n_z) neighbourhood per voxel, n_xy and n_z "
                "odd so that the voxel is its centre.",
                file=path,
                fix=FROM_A_RUN,
            )
        last = model.layers[-1]
        if tuple(model.output_shape) != (None, 1) or getattr(last, "activation", None) is not (
            keras.activations.sigmoid
        ):
            raise InputError(
                f"the model's output is {tuple(model.output_shape)} from layer '{last.name}'; "
                "fibseg needs one sigmoid output, P(solid), per neighbourhood.",
                file=path,
                fix=FROM_A_RUN,
            )
        names = {layer.name for layer in model.layers}
        geometry = self.geometry(model)
        if inference.engine == "dense":
            if not set(DENSE_LAYERS) <= names:
                raise InputError(
                    "the dense engine rebuilds the layers of fibseg's CNN, and this model lacks "
                    f"{', '.join(n for n in DENSE_LAYERS if n not in names)}.",
                    file=path,
                    fix="set inference.engine: sliding, which scores any such model, or "
                    "pretrained.model to a model trained by fibseg.",
                )
            try:
                check_dense_padding(geometry.padding, inference.allow_approximate_dense)
            except LimitError as error:
                raise InputError(
                    f"the model has padding '{geometry.padding}': {error.problem}",
                    file=path,
                    fix="set inference.engine: sliding (exact for any model), or accept the "
                    "approximation with inference.allow_approximate_dense: true, or set "
                    "pretrained.model to a model trained with model.padding: valid.",
                ) from None
        return geometry

    def scorer(self, model, geometry, engine, inference, tile, engines):
        if engine == "sliding":
            return engines.sliding(model, inference)
        if engine == "dense":
            check_dense_padding(geometry.padding, inference.allow_approximate_dense)
            return engines.dense(model, inference, tile)
        raise ValueError(f"unknown inference engine '{engine}' (sliding or dense)")

    def exact_scorer(self, model, geometry, inference, engines):
        """The sliding window, for a 'same' model on the (approximate) dense engine."""
        if inference.engine != "dense" or geometry.padding != "same":
            return None
        return engines.sliding(model, inference)

    def predict_work_bytes(self, geometry, height, width, inference) -> int:
        n_xy, n_z = geometry.n_xy, geometry.n_z
        if inference.engine == "sliding":
            return inference.extract_batch * n_xy * n_xy * n_z * 4 * 2  # view copy + transpose
        field, _ = twin_geometry(n_xy, geometry.padding)
        side = min(inference.tile, max(height, width)) + field - 1
        return side * side * WIDEST * 4 * 3  # a few feature maps of the widest layer


register(PatchCNN())
