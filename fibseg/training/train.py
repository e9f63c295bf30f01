"""Training of one grid cell and seed (§3.5, §3.7): on-the-fly patches, checkpoints, resume.

Patches are never materialised: each batch is cut from the regions' context crops, which stay
in memory once (their size does not grow with the number of samples).

Every finished epoch is committed as one directory `checkpoint/epoch_NNNN/` (written under a
temporary name, then renamed), holding the last model with its optimiser state, the best model
so far and the history. A re-run resumes after the newest committed epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..annotation.regions import RegionSet
from ..io.atomic import atomic_output
from ..io.errors import LimitError
from ..networks.model import build_model, draw_hyperparameters, learning_rate
from ..runtime.job import versions
from ..runtime.settings import TrainingSettings
from .patches import PatchSource, make_sequence

HISTORY_COLUMNS = [
    "epoch",
    "loss",
    "val_loss",
    "accuracy",
    "val_accuracy",
    "mIoU",
    "val_mIoU",
    "lr",
    "seconds",
]


def seed_generators(model) -> list:
    """The model's random-number generators (dropout), in layer order."""
    return [
        layer.seed_generator
        for layer in model._flatten_layers()
        if hasattr(layer, "seed_generator")
    ]


def random_state(model) -> list[list[int]]:
    """The state of each dropout generator. Keras does not save it with the model, so a
    checkpoint keeps it beside, and a resumed run draws the masks it would have drawn."""
    import keras

    return [keras.ops.convert_to_numpy(g.state.value).tolist() for g in seed_generators(model)]


def restore_random_state(model, states: list[list[int]]) -> None:
    for generator, state in zip(seed_generators(model), states, strict=True):
        generator.state.assign(np.asarray(state, dtype=generator.state.dtype))


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    done = sorted(checkpoint_dir.glob("epoch_[0-9][0-9][0-9][0-9]"))
    return done[-1] if done else None


RANDOM_STATE = "random_state.json"


class TerminationRequested(RuntimeError):
    """SIGTERM (a SLURM time limit or pre-emption) arrived; the last epoch is saved."""


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


def new_model(architecture: str, n_xy: int, n_z: int, padding: str, hyper: dict, seed: int):
    """A fresh, uncompiled network of the grid cell: the paper's patch CNN or the U-Net."""
    if architecture == "unet":
        from ..networks.unet import build_unet

        return build_unet(n_z, seed)
    return build_model(n_xy, n_z, padding, hyper["p_d"], hyper["p_sd"], hyper["c"], seed)


def compile_model(model, architecture: str, optimizer) -> None:
    """The patch CNN's loss and metrics per patch; the U-Net's over its labelled voxels."""
    import keras

    if architecture == "unet":
        from .dense import dense_loss, dense_metrics

        model.compile(optimizer=optimizer, loss=dense_loss(), weighted_metrics=dense_metrics())
        return
    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.BinaryIoU(target_class_ids=[0, 1], threshold=0.5, name="mIoU"),
        ],
    )


def make_optimizer(training: TrainingSettings, lr: float):
    """The optimiser of a fresh run: SGD with `training.momentum` (the paper's, §3.7) or Adam
    (`training.optimizer: adam`); either follows the step schedule of `learning_rate`."""
    import keras

    if training.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=training.momentum)


def train_run(
    run_dir: str | os.PathLike,
    region_files: list[str],
    train_csv: str,
    val_csv: str,
    split_csv: str | None,
    n_xy: int,
    n_z: int,
    seed: int,
    padding: str,
    training: TrainingSettings,
    log=None,
    volume_files: list[str] | tuple = (),
    rung: int = 0,
    keep_last_state: bool = False,
    teacher_files: list[str] | tuple = (),
    architecture: str = "patch",
) -> pd.DataFrame:
    """Train one (n_xy, n_z, seed) run, resuming from its last committed epoch: on the
    sampled patches of `train_csv`/`val_csv`, or (`training.mode` dense) on every labelled
    voxel of the train/val regions of `split_csv`, and with `training.unlabelled` on also
    on tiles of the preprocessed `volume_files` pseudo-labelled by the forest's score volumes
    `teacher_files`, one per volume, in the same order (pseudo; fibseg.training.unlabelled).

    Writes `model.keras` (lowest val_loss), `history.csv` and `params.json` into `run_dir`,
    and with `keep_last_state` also `last.keras` (the last epoch's weights and optimiser
    state, from which the next rung of successive halving resumes; fibseg.training.halving). A run
    trains up to `training.epochs`; `rung` is recorded in params.json. With `architecture`
    unet the network is the U-Net (n_xy the side of its training tiles; `UnetEpochs`).
    """
    import keras

    started = time.time()
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoint"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    search = training.search
    hyper = draw_hyperparameters(seed, n_xy, n_z, search)
    keras.utils.set_random_seed(seed)
    region_sets = {r.dataset: r for r in map(RegionSet.read, region_files)}
    augment = {"a": hyper["a"], "b": hyper["b"], "probability": search.augment_probability}
    if architecture == "unet":
        from .unet_tiles import UnetEpochs, check_unet_training

        check_unet_training(training.unlabelled.method)
        epochs = UnetEpochs(region_sets, split_csv, n_xy, n_z, seed, augment, training)
    else:
        if training.unlabelled.method != "none":
            from .unlabelled import check_unlabelled

            check_unlabelled(training.mode, training.unlabelled.method)
        if training.mode == "dense":
            epochs = DenseEpochs(
                region_sets,
                split_csv,
                n_xy,
                n_z,
                seed,
                augment,
                training,
                volume_files,
                teacher_files,
            )
        else:
            epochs = PatchEpochs(
                region_sets, train_csv, val_csv, n_xy, n_z, seed, augment, training
            )

    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        from .dense import custom_objects

        model = keras.saving.load_model(
            resume / "last.keras", safe_mode=True, custom_objects=custom_objects()
        )
        if (resume / RANDOM_STATE).is_file():
            restore_random_state(model, json.loads((resume / RANDOM_STATE).read_text()))
        history = pd.read_csv(resume / "history.csv")
        first_epoch = int(history["epoch"].max()) + 1
        if log:
            log.info("resuming after epoch %d from %s", first_epoch - 1, resume)
    else:
        model = new_model(architecture, n_xy, n_z, padding, hyper, seed)
        optimizer = make_optimizer(training, learning_rate(0, hyper["log10_lr0"], hyper["k"]))
        compile_model(model, architecture, optimizer)
        history = pd.DataFrame(columns=HISTORY_COLUMNS)
        first_epoch = 0

    stop = {"requested": False}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("requested", True))
    try:
        for epoch in range(first_epoch, training.epochs):
            epoch_start = time.time()
            lr = learning_rate(epoch, hyper["log10_lr0"], hyper["k"], search.lr_step)
            model.optimizer.learning_rate = lr
            keras.utils.set_random_seed(seed * 100_003 + epoch)
            result = epochs.fit(model, epoch)
            row = {
                "epoch": epoch,
                "lr": lr,
                "seconds": time.time() - epoch_start,
                **{
                    key: float(values[-1])
                    for key, values in result.items()
                    if key in HISTORY_COLUMNS
                },
            }
            history = pd.concat([history.astype(float), pd.DataFrame([row])], ignore_index=True)[
                HISTORY_COLUMNS
            ]
            commit_epoch(checkpoint_dir, epoch, model, history)
            if log:
                log.info("epoch %d: %s", epoch, {k: round(v, 5) for k, v in row.items()})
            if stop["requested"]:
                raise TerminationRequested(
                    f"stopped by SIGTERM after epoch {epoch}; the "
                    "checkpoint is saved, re-run to resume"
                )
    finally:
        signal.signal(signal.SIGTERM, previous_handler)

    final = latest_checkpoint(checkpoint_dir)
    with atomic_output(run_dir / "model.keras") as tmp:
        shutil.copyfile(final / "best.keras", tmp)
    if keep_last_state:
        with atomic_output(run_dir / "last.keras") as tmp:
            shutil.copyfile(final / "last.keras", tmp)
    history["epoch"] = history["epoch"].astype(int)
    with atomic_output(run_dir / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    params = {
        "n_xy": n_xy,
        "n_z": n_z,
        "seed": seed,
        "rung": rung,
        "padding": padding,
        "architecture": architecture,
        **hyper,
        "epochs": training.epochs,
        "mode": training.mode,
        "steps_per_epoch": training.steps_per_epoch,
        "unlabelled": dataclasses.asdict(training.unlabelled),
        "batch_size": training.batch_size,
        "optimizer": training.optimizer,
        "momentum": training.momentum,
        **epochs.counts,
        "best_epoch": int(history.loc[history["val_loss"].idxmin(), "epoch"]),
        "wall_seconds_this_session": time.time() - started,
        "train_seconds_total": float(history["seconds"].sum()),
        "versions": versions(),
        "resumed_from_epoch": first_epoch,
        "random_state": random_state(model),
    }
    with atomic_output(run_dir / "params.json") as tmp:
        tmp.write_text(json.dumps(params, indent=2))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return history


def commit_epoch(checkpoint_dir: Path, epoch: int, model, history: pd.DataFrame) -> None:
    """Write the epoch's checkpoint under a temporary name, rename it, drop older ones."""
    previous = latest_checkpoint(checkpoint_dir)
    staging = checkpoint_dir / f".epoch_{epoch:04d}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    model.save(staging / "last.keras")
    best_so_far = history["val_loss"].iloc[:-1].min() if len(history) > 1 else np.inf
    if history["val_loss"].iloc[-1] < best_so_far or previous is None:
        model.save(staging / "best.keras")
    else:
        shutil.copyfile(previous / "best.keras", staging / "best.keras")
    history.to_csv(staging / "history.csv", index=False)
    (staging / RANDOM_STATE).write_text(json.dumps(random_state(model)))
    final = checkpoint_dir / f"epoch_{epoch:04d}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in checkpoint_dir.glob("epoch_[0-9][0-9][0-9][0-9]"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
