"""Dense training of `valid` models (`training.mode: dense`): the patch CNN trained through
its fully convolutional twin (fibseg.networks.twin), which shares its variables, with the loss
on every labelled voxel of a tile (the tiles: fibseg.training.tiles).

For `valid` models twin output voxel p is exactly the patch model on the patch centred at that
voxel, so one dense step over a tile gives the loss and the gradients of the patch path over
the tile's labelled voxels (tests/test_dense_training.py: to ~1e-16 in float64).

Two things differ from the patch path by construction, not by accident:
- spatial dropout draws one channel mask per fragment, shared by all the output voxels of that
  fragment (a feature voxel feeds many outputs), instead of one per patch; ordinary dropout
  after dense1 and dense2 stays independent per voxel;
- the intensity augmentation (eq. 3-4) rescales a tile with the mean and spread of its whole
  input window, not of each patch.

Keras 3 ops only, so the twin also runs under JAX or PyTorch. Keras is imported lazily.
"""

from __future__ import annotations

import functools

import numpy as np

from ..networks.model import check_dense_training, model_geometry
from ..networks.twin import build_twin


def training_twin(model):
    """The fully convolutional twin of a `valid` patch model that SHARES its variables
    (fibseg.networks.twin, with dense2 and the score as the model's own Dense layers).

    Input (B, side + field - 1, side + field - 1, n_z) tiles, side a multiple of 16; output
    the (4**4 B, side / 16, side / 16, 1) fragment scores (see `fragment_layout`). The dropout
    layers are the model's own, so they follow the `training` flag."""
    _, _, padding = model_geometry(model)
    check_dense_training(padding)
    return build_twin(model, "dense", "training_twin")


@functools.cache
def labelled_mean_class():
    """The keras Loss class behind `labelled_mean_loss`, registered so that a model compiled
    with it (the U-Net) loads again with its optimiser (`custom_objects`)."""
    import keras
    from keras import ops

    class LabelledMean(keras.losses.Loss):
        def __init__(
            self, name="labelled_mean_bce", reduction=None, elementwise="binary_crossentropy"
        ):
            super().__init__(name=name, reduction=None)
            self.elementwise = elementwise

        def get_config(self) -> dict:
            return {"name": self.name, "elementwise": self.elementwise}

        def call(self, y_true, y_pred):
            return getattr(keras.losses, self.elementwise)(y_true, y_pred)

        def __call__(self, y_true, y_pred, sample_weight=None):
            values = self.call(ops.cast(y_true, self.dtype), y_pred)
            if sample_weight is None:
                return ops.mean(values)
            weight = ops.reshape(ops.cast(sample_weight, values.dtype), ops.shape(values))
            labelled = ops.sum(ops.cast(weight > 0, values.dtype))
            return ops.sum(values * weight) / ops.maximum(labelled, 1.0)

    return LabelledMean


def custom_objects() -> dict:
    """What `keras.saving.load_model` needs to read a model compiled with a fibseg loss."""
    return {"LabelledMean": labelled_mean_class()}


def labelled_mean_loss(elementwise, name: str):
    """A keras Loss: sum(w * elementwise(y_true, y_pred)) / (outputs with w > 0), the mean
    over the outputs that carry a weight (the mean over all without weights); `elementwise`
    a function of keras.losses."""
    return labelled_mean_class()(name=name, elementwise=elementwise.__name__)


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
