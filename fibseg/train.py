"""Training of one grid cell and seed (§3.5, §3.7): on-the-fly patches, checkpoints, resume.

Patches are never materialised: each batch is cut from the regions' context crops, which stay
in memory once (their size does not grow with the number of samples).

Every finished epoch is committed as one directory `checkpoint/epoch_NNNN/` (written under a
temporary name, then renamed), holding the last model with its optimiser state, the best model
so far and the history. A re-run resumes after the newest committed epoch.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .augment import random_dihedral, rescale_intensity
from .io import atomic_output
from .model import build_model, draw_hyperparameters, learning_rate
from .regions import RegionSet

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


class PatchSource:
    """Cuts (B, n_xy, n_xy, n_z) patches around sample voxels from the regions' crops."""

    def __init__(self, region_sets: dict[str, RegionSet], samples: pd.DataFrame) -> None:
        self.region_sets = region_sets
        self.samples = samples.reset_index(drop=True)
        self.labels = self.samples["label"].to_numpy(np.float32)
        rows, cys, cxs = [], [], []
        for name in self.samples["dataset"].unique():
            if name not in region_sets:
                raise KeyError(f"samples name data set '{name}' but no regions.h5 was given")
        for sample in self.samples.itertuples():
            regions = region_sets[sample.dataset]
            region = regions.table.iloc[sample.region]
            rows.append(sample.region)
            cys.append(sample.y - region.y + regions.margin_xy)
            cxs.append(sample.x - region.x + regions.margin_xy)
        self.region = np.asarray(rows, np.int64)
        self.cy = np.asarray(cys, np.int64)
        self.cx = np.asarray(cxs, np.int64)
        self.dataset = self.samples["dataset"].to_numpy()

    def __len__(self) -> int:
        return len(self.samples)

    def cut(self, indices: np.ndarray, n_xy: int, n_z: int) -> np.ndarray:
        """Patches of the samples at `indices`, channels last (n_z slices as channels)."""
        half, half_z = n_xy // 2, n_z // 2
        out = np.empty((len(indices), n_z, n_xy, n_xy), np.float32)
        names = self.dataset[indices]
        for name in np.unique(names):
            chosen = np.flatnonzero(names == name)
            regions = self.region_sets[name]
            if half > regions.margin_xy or half_z > regions.margin_z:
                raise ValueError(
                    f"regions.h5 of '{name}' has margins {regions.margin_xy}/"
                    f"{regions.margin_z}, too small for n_xy={n_xy}, n_z={n_z}"
                )
            picked = indices[chosen]
            z0 = regions.margin_z - half_z
            windows = np.lib.stride_tricks.sliding_window_view(
                regions.crops[:, z0 : z0 + n_z], (n_xy, n_xy), axis=(2, 3)
            )
            out[chosen] = windows[
                self.region[picked], :, self.cy[picked] - half, self.cx[picked] - half
            ]
        return np.moveaxis(out, 1, -1)


def make_sequence(
    source: PatchSource,
    n_xy: int,
    n_z: int,
    batch_size: int,
    seed: int,
    augment: dict | None = None,
    shuffle: bool = False,
    max_batches: int | None = None,
):
    """A Keras PyDataset of (patches, labels) batches; shuffled and augmented per epoch."""
    import keras

    class PatchBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=4)
            self.epoch = 0
            self.order = np.arange(len(source))
            self.on_epoch_end()

        def __len__(self) -> int:
            batches = -(-len(source) // batch_size)
            return min(batches, max_batches) if max_batches else batches

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch
            self.on_epoch_end()

        def on_epoch_end(self) -> None:
            if shuffle:
                self.order = np.random.default_rng([seed, self.epoch]).permutation(len(source))

        def __getitem__(self, index: int):
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            patches = source.cut(chosen, n_xy, n_z)
            if augment:
                rng = np.random.default_rng([seed, self.epoch, index])
                patches = rescale_intensity(
                    patches, augment["a"], augment["b"], augment["probability"], rng
                )
                patches = random_dihedral(patches, rng)
            return patches, source.labels[chosen]

    return PatchBatches()


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    done = sorted(checkpoint_dir.glob("epoch_[0-9][0-9][0-9][0-9]"))
    return done[-1] if done else None


class TerminationRequested(RuntimeError):
    """SIGTERM (a SLURM time limit or pre-emption) arrived; the last epoch is saved."""


def configure_threads(threads: int) -> None:
    """Limit the backend's CPU threads to what Snakemake granted the job, and make its ops
    deterministic: the same seed then gives the same weights on the same machine."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        tf.config.experimental.enable_op_determinism()


def train_run(
    run_dir: str | os.PathLike,
    region_files: list[str],
    train_csv: str,
    val_csv: str,
    n_xy: int,
    n_z: int,
    seed: int,
    padding: str,
    training: dict,
    log=None,
) -> pd.DataFrame:  # noqa: ANN001
    """Train one (n_xy, n_z, seed) run, resuming from its last committed epoch.

    Writes `model.keras` (lowest val_loss), `history.csv` and `params.json` into `run_dir`.
    """
    import keras

    started = time.time()
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoint"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    search = training["search"]
    hyper = draw_hyperparameters(seed, n_xy, n_z, search)
    keras.utils.set_random_seed(seed)
    region_sets = {r.dataset: r for r in map(RegionSet.read, region_files)}
    train_source = PatchSource(region_sets, pd.read_csv(train_csv))
    val_source = PatchSource(region_sets, pd.read_csv(val_csv))
    batch_size = training["batch_size"]
    augment = {"a": hyper["a"], "b": hyper["b"], "probability": search["augment_probability"]}
    train_batches = make_sequence(
        train_source,
        n_xy,
        n_z,
        batch_size,
        seed,
        augment,
        shuffle=True,
        max_batches=training.get("steps_per_epoch"),
    )
    val_batches = make_sequence(val_source, n_xy, n_z, batch_size, seed)

    resume = latest_checkpoint(checkpoint_dir)
    if resume is not None:
        model = keras.saving.load_model(resume / "last.keras")
        history = pd.read_csv(resume / "history.csv")
        first_epoch = int(history["epoch"].max()) + 1
        if log:
            log.info("resuming after epoch %d from %s", first_epoch - 1, resume)
    else:
        model = build_model(n_xy, n_z, padding, hyper["p_d"], hyper["p_sd"], hyper["c"], seed)
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate(0, hyper["log10_lr0"], hyper["k"]), momentum=training["momentum"]
            ),
            loss="binary_crossentropy",
            metrics=[
                "accuracy",
                keras.metrics.BinaryIoU(target_class_ids=[0, 1], threshold=0.5, name="mIoU"),
            ],
        )
        history = pd.DataFrame(columns=HISTORY_COLUMNS)
        first_epoch = 0

    stop = {"requested": False}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("requested", True))
    try:
        for epoch in range(first_epoch, training["epochs"]):
            epoch_start = time.time()
            lr = learning_rate(epoch, hyper["log10_lr0"], hyper["k"], search["lr_step"])
            model.optimizer.learning_rate = lr
            keras.utils.set_random_seed(seed * 100_003 + epoch)
            train_batches.set_epoch(epoch)
            result = model.fit(
                train_batches, validation_data=val_batches, epochs=1, verbose=0
            ).history
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
    history["epoch"] = history["epoch"].astype(int)
    with atomic_output(run_dir / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    params = {
        "n_xy": n_xy,
        "n_z": n_z,
        "seed": seed,
        "padding": padding,
        **hyper,
        "epochs": training["epochs"],
        "batch_size": batch_size,
        "momentum": training["momentum"],
        "train_samples": len(train_source),
        "val_samples": len(val_source),
        "best_epoch": int(history.loc[history["val_loss"].idxmin(), "epoch"]),
        "wall_seconds_this_session": time.time() - started,
        "train_seconds_total": float(history["seconds"].sum()),
        "versions": versions(),
        "resumed_from_epoch": first_epoch,
    }
    with atomic_output(run_dir / "params.json") as tmp:
        tmp.write_text(json.dumps(params, indent=2))
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return history


def commit_epoch(checkpoint_dir: Path, epoch: int, model, history: pd.DataFrame) -> None:  # noqa: ANN001
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
    final = checkpoint_dir / f"epoch_{epoch:04d}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in checkpoint_dir.glob("epoch_[0-9][0-9][0-9][0-9]"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def versions() -> dict[str, str]:
    import keras

    found = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": np.__version__,
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    return found
