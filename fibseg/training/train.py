"""Training of one grid cell and seed (§3.5, §3.7): on-the-fly patches, checkpoints, resume.

Patches are never materialised: each batch is cut from the regions' context crops, which stay
in memory once (their size does not grow with the number of samples).

Every finished epoch is committed as one directory `checkpoint/epoch_NNNN/` (written under a
temporary name, then renamed), holding the last model with its optimiser state, the best model
so far and the history. A re-run resumes after the newest committed epoch.

What a run trains is its architecture's (fibseg.networks.registry): it builds the network
and picks its training loop among the run's `RunLoops` (fibseg.training.loops: the patches,
the dense tiles, or the U-Net's tiles of fibseg.training.unet_tiles, the default's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..annotation.regions import RegionSet
from ..io.atomic import atomic_output
from ..io.digest import file_digest
from ..networks.model import draw_hyperparameters, learning_rate
from ..networks.registry import Architecture
from ..runtime.job import versions
from ..runtime.settings import TrainingSettings
from .initial import SCRATCH, start_from
from .loops import RunLoops

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


@dataclass(frozen=True)
class RunFiles:
    """The files a run reads: its data sets' regions (regions.h5), the sampled patches
    (`train_csv`, `val_csv`; patch mode), the split of the regions (`split_csv`; dense and
    U-Net tiles), and for pseudo-labels the preprocessed `volumes` with the forest's score
    volumes `teachers`, one per volume, in the same order (fibseg.training.unlabelled)."""

    regions: Sequence[str]
    train_csv: str | None = None
    val_csv: str | None = None
    split_csv: str | None = None
    volumes: Sequence[str] = ()
    teachers: Sequence[str] = ()


@dataclass(frozen=True)
class TrainingRun:
    """One run of the grid: the (n_xy, n_z) cell and seed of an architecture, with
    model.padding, written to `directory`; `rung` (successive halving) is recorded, and
    `keep_last_state` keeps the last epoch's state (last.keras) for the next rung."""

    directory: str | os.PathLike
    architecture: Architecture
    n_xy: int
    n_z: int
    seed: int
    training: TrainingSettings
    files: RunFiles
    padding: str = "same"
    rung: int = 0
    keep_last_state: bool = False
    init_model: str | None = None  # the .keras file a fresh run starts from (training.init)
    # (a resumed run, and a later rung of successive halving, continues its own weights and
    # only records it)


def make_optimizer(training: TrainingSettings, lr: float):
    """The optimiser of a fresh run: SGD with `training.momentum` (the paper's, §3.7) or Adam
    (`training.optimizer: adam`); either follows the step schedule of `learning_rate`."""
    import keras

    if training.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=training.momentum)


def train_run(run: TrainingRun, log=None) -> pd.DataFrame:
    """Train one (n_xy, n_z, seed) run, resuming from its last committed epoch, with the loop
    its architecture picks: for the patch CNN on the sampled patches, or (`training.mode`
    dense) on every labelled voxel of the train/val regions, and with `training.unlabelled`
    on also on tiles of the preprocessed volumes pseudo-labelled by the forest's score volumes
    (pseudo; fibseg.training.unlabelled); for the U-Net on tiles of n_xy x n_xy around the
    labels (`UnetEpochs`).

    Writes `model.keras` (lowest val_loss), `history.csv` and `params.json` into the run's
    directory, and with `keep_last_state` also `last.keras` (the last epoch's weights and
    optimiser state, from which the next rung of successive halving resumes;
    fibseg.training.halving). A run trains up to `training.epochs`, or stops once
    `training.patience` epochs brought no lower val_loss; `rung` is recorded in params.json.
    A fresh run starts from random weights, or from those of `run.init_model`
    (training.init; fibseg.training.initial), which it then fine-tunes.
    """
    import keras

    started = time.time()
    run_dir = Path(run.directory)
    n_xy, n_z, seed, training = run.n_xy, run.n_z, run.seed, run.training
    architecture = run.architecture
    checkpoint_dir = run_dir / "checkpoint"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    search = training.search
    hyper = draw_hyperparameters(seed, n_xy, n_z, search)
    keras.utils.set_random_seed(seed)
    region_sets = {r.dataset: r for r in map(RegionSet.read, run.files.regions)}
    augment = {"a": hyper["a"], "b": hyper["b"], "probability": search.augment_probability}
    architecture.check_training(training.mode, training.unlabelled.method, run.padding)
    if training.unlabelled.method != "none":
        from .unlabelled import check_unlabelled

        check_unlabelled(training.mode, training.unlabelled.method)
    epochs = architecture.epochs(RunLoops(run, region_sets, augment), training.mode)

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
        model = architecture.build(n_xy, n_z, run.padding, hyper, seed)
        if run.init_model:
            start_from(model, run.init_model, architecture.name)
            if log:
                log.info("starting from the weights of %s (training.init)", run.init_model)
        optimizer = make_optimizer(training, learning_rate(0, hyper["log10_lr0"], hyper["k"]))
        epochs.compile(model, optimizer)
        history = pd.DataFrame(columns=HISTORY_COLUMNS)
        first_epoch = 0

    stop = {"requested": False}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("requested", True))
    try:
        for epoch in range(first_epoch, training.epochs):
            if patience_exhausted(history, training.patience):
                if log:
                    log.info(
                        "val_loss has not fallen for %d epochs (training.patience): stopping "
                        "before epoch %d",
                        training.patience,
                        epoch,
                    )
                break
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
    if run.keep_last_state:
        with atomic_output(run_dir / "last.keras") as tmp:
            shutil.copyfile(final / "last.keras", tmp)
    history["epoch"] = history["epoch"].astype(int)
    with atomic_output(run_dir / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    params = {
        "n_xy": n_xy,
        "n_z": n_z,
        "seed": seed,
        "rung": run.rung,
        "padding": run.padding,
        "architecture": architecture.name,
        **hyper,
        "epochs": training.epochs,
        "mode": training.mode,
        "steps_per_epoch": training.steps_per_epoch,
        "unlabelled": dataclasses.asdict(training.unlabelled),
        "batch_size": training.batch_size,
        "optimizer": training.optimizer,
        "momentum": training.momentum,
        "init": init_record(run.init_model),
        "patience": training.patience,
        "epochs_trained": len(history),
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


def patience_exhausted(history: pd.DataFrame, patience: int | None) -> bool:
    """Whether the last `patience` epochs brought no val_loss below the best before them."""
    if not patience or len(history) <= patience:
        return False
    best_epoch = int(np.argmin(history["val_loss"].to_numpy()))
    return len(history) - 1 - best_epoch >= patience


def init_record(init_model: str | None) -> dict | str:
    """What params.json records of the run's starting point: scratch, or the file and its
    SHA-256."""
    if init_model is None:
        return SCRATCH
    return {"model": str(init_model), "sha256": file_digest(Path(init_model))}


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
