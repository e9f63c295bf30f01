"""The training loops a run's architecture picks from (`RunLoops`, the
fibseg.networks.architecture.Loops of one run): the paper's sampled patches (`PatchEpochs`),
dense tiles through the patch CNN's twin (`DenseEpochs`) and the U-Net's tiles
(fibseg.training.unet_tiles.UnetEpochs). Each compiles the fresh model and fits one epoch."""

from __future__ import annotations

import pandas as pd

from ..io.errors import LimitError
from .patches import PatchSource, make_sequence


class PatchEpochs:
    """The paper's way (§3.5): batches of sampled patches, `model.fit` one epoch at a time."""

    def __init__(self, region_sets, train_csv, val_csv, n_xy, n_z, seed, augment, training):
        self.train = PatchSource(region_sets, pd.read_csv(train_csv))
        val = PatchSource(region_sets, pd.read_csv(val_csv))
        size = training.batch_size
        self.train_batches = make_sequence(
            self.train, n_xy, n_z, size, seed, augment, True, training.steps_per_epoch
        )
        self.val_batches = make_sequence(val, n_xy, n_z, size, seed)
        self.counts = {"train_samples": len(self.train), "val_samples": len(val)}

    def compile(self, model, optimizer) -> None:
        compile_per_patch(model, optimizer)

    def fit(self, model, epoch: int) -> dict[str, list[float]]:
        self.train_batches.set_epoch(epoch)
        return model.fit(
            self.train_batches, validation_data=self.val_batches, epochs=1, verbose=0
        ).history


class DenseEpochs:
    """Dense training (`training.mode: dense`): tiles of the train regions through the
    fully convolutional twin that shares the model's weights; the loss on every labelled
    voxel, pore and solid weighted equally. An epoch sees every labelled train voxel once, or
    runs `training.steps_per_epoch` steps; `training.unlabelled` adds tiles of `volume_files`
    pseudo-labelled by the forest's score volumes `teacher_files` (pseudo)."""

    def __init__(
        self,
        region_sets,
        split_csv,
        n_xy,
        n_z,
        seed,
        augment,
        training,
        volume_files=(),
        teacher_files=(),
    ):
        from .tiles import DenseTiles, region_selection

        table = pd.read_csv(split_csv)
        tiles = {"tiles_per_batch": training.tiles_per_batch, "tile": training.tile, "seed": seed}
        self.train_tiles = DenseTiles(
            region_sets,
            region_selection(table, "train"),
            n_xy,
            n_z,
            augment=augment,
            shuffle=True,
            max_batches=training.steps_per_epoch,
            **tiles,
        )
        self.val_tiles = DenseTiles(region_sets, region_selection(table, "val"), n_xy, n_z, **tiles)
        self.counts = {
            "train_samples": self.train_tiles.labelled,
            "val_samples": self.val_tiles.labelled,
        }
        self.twin = None
        self.unlabelled = training.unlabelled
        self.windows = None
        if self.unlabelled.method == "pseudo":
            from .unlabelled import VolumeWindows

            if not teacher_files:
                raise LimitError(
                    "pseudo-labels (training.unlabelled.method: pseudo) need the forest's "
                    "score volumes, and none were given.",
                    "turn the forest on (forest.enabled: true) or set "
                    "training.unlabelled.method: none.",
                    "training.unlabelled.method",
                )
            side = self.train_tiles.side
            self.windows = VolumeWindows(volume_files, teacher_files, n_xy, n_z, side, seed)

    def compile(self, model, optimizer) -> None:
        """The patch model's own loss and metrics (its twin is compiled in `fit`)."""
        compile_per_patch(model, optimizer)

    def fit(self, model, epoch: int) -> dict[str, list[float]]:
        from .dense import compile_training_twin, fit_dense_epoch
        from .unlabelled import fit_epoch_with_unlabelled

        if self.twin is None:
            self.twin = compile_training_twin(model)
        if self.unlabelled.method == "pseudo":
            return fit_epoch_with_unlabelled(
                self.twin, self.train_tiles, self.val_tiles, self.windows, self.unlabelled, epoch
            )
        return fit_dense_epoch(self.twin, self.train_tiles, self.val_tiles, epoch)


def compile_per_patch(model, optimizer) -> None:
    """The patch CNN's loss and metrics, one label per patch."""
    import keras

    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.BinaryIoU(target_class_ids=[0, 1], threshold=0.5, name="mIoU"),
        ],
    )


class RunLoops:
    """The training loops of one run (fibseg.networks.architecture.Loops); the run's
    architecture picks one (`Architecture.epochs`)."""

    def __init__(self, run, region_sets: dict, augment: dict) -> None:
        """`run`: a fibseg.training.train.TrainingRun; `augment`: its draw of the intensity
        augmentation."""
        self.run, self.region_sets, self.augment = run, region_sets, augment

    def patches(self) -> PatchEpochs:
        run, files = self.run, self.run.files
        return PatchEpochs(
            self.region_sets,
            files.train_csv,
            files.val_csv,
            run.n_xy,
            run.n_z,
            run.seed,
            self.augment,
            run.training,
        )

    def dense(self) -> DenseEpochs:
        run, files = self.run, self.run.files
        return DenseEpochs(
            self.region_sets,
            files.split_csv,
            run.n_xy,
            run.n_z,
            run.seed,
            self.augment,
            run.training,
            files.volumes,
            files.teachers,
        )

    def unet_tiles(self):
        from .unet_tiles import UnetEpochs

        run = self.run
        return UnetEpochs(
            self.region_sets,
            run.files.split_csv,
            run.n_xy,
            run.n_z,
            run.seed,
            self.augment,
            run.training,
        )
