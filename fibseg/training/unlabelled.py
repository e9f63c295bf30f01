"""Learning from unlabelled voxels in dense training (`training.unlabelled`): self-training
with confident pseudo-labels, in the manner of FixMatch (Sohn et al. 2020) (`pseudo`), or
blind-spot self-supervised pretraining, in the manner of Noise2Void (Krull et al. 2019)
(`masked`).

pseudo: each step adds `tiles_per_batch` tiles of the preprocessed volumes (any voxel, labelled or
not) to the batch of labelled tiles. The network itself is the teacher: it scores the plain
window (inference mode, no dropout), and every output voxel scored with a confidence
max(p, 1 - p) >= `confidence` becomes a pseudo-label, 1 if p >= 0.5 else 0. The student sees
the same window strongly perturbed (the run's intensity rescaling of eq. 3-4 applied always,
plus Gaussian noise) and is trained towards the pseudo-labels. The two classes of pseudo-labels
weigh the same, and together `weight` times the labelled voxels of the batch, so the objective
is supervised + weight x unsupervised whatever the share of confident voxels. Pseudo-labels
start at `start_epoch` (the teacher must first learn something from the labels).

The windows come from whole volumes, so a tile's context is real data everywhere. All tiles of
one step come from the same n_z slices of one data set: the preprocessed volumes are stored in
whole-slice chunks, so a step reads n_z slices, not n_z per tile.

Measured (docs/label_budget.md): no gain at the small budget of the demo's
generator (0.824 / 0.812 full-volume mIoU against 0.831 / 0.819 without), in 1.7 times the
time.

pseudo with `teacher: forest`: the random-forest baseline is the teacher instead. Its score
volumes (HDF5 `/scores` of each preprocessed volume's shape, rule stitch_forest) are read at
the voxels the twin's outputs stand for, under the windows' own transforms, and turned into
pseudo-labels the same way; no teacher pass of the network is needed. The network distils
the forest's labels of every voxel, which scale-space features get right from few labels,
while keeping its own context. Measured at the small budget of the label-budget study: see
docs/label_budget.md.

masked: before the first epoch of a fresh run (never when resuming), `pretrain_steps` steps of
their own Adam optimiser (`pretrain_lr`) train the network to predict voxels it cannot see.
Each step draws `tiles_per_batch` windows as above; in each, a share `mask_fraction` of the
twin's outputs is chosen, and at the voxel each output stands for (`blind_spot_offset`: the
centre of its patch, input p + n_xy // 2) the centre slice takes the value of a random other
voxel within `mask_radius`. The target is the original value, the loss the squared error over
the masked outputs only. The model is the training twin with the sigmoid score layer replaced
by a linear 1 x 1 head (`blind_spot_model`): every other layer is the classifier's own, so the
pretrained weights are the classifier's when supervised training starts; the head is dropped.
The loss per step goes to `pretrain_history.csv` in the run directory. Measured
(docs/label_budget.md, `cnn_dense_masked`): no gain at the small budget of either simulator
(0.832 / 0.809 against 0.831 / 0.819 on the demo's, 0.778 / 0.798 against 0.781 / 0.802 on the
spheres), two minutes more. It is off by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

from ..io.errors import LimitError
from ..io.writers import write_csv
from ..networks.twin import fragment_layout, from_fragment_layout, twin_geometry
from ..networks.windows import mirror_index, neighbour_slices
from ..runtime.settings import UnlabelledSettings
from .augment import rescale_intensity
from .tiles import dihedral_2d


def check_unlabelled(
    mode: str, method: str, teacher: str = "network", forest_enabled: bool = True
) -> None:
    """Pseudo-labels and blind-spot pretraining are trained densely: they need dense
    training. The forest can teach only where it runs."""
    if method != "none" and mode != "dense":
        raise LimitError(
            f"learning from unlabelled voxels ('{method}') needs dense training, not '{mode}'.",
            "set training.mode: dense (with model.padding: valid) or training.unlabelled."
            "method: none.",
            "training.unlabelled.method",
        )
    if method == "pseudo" and teacher == "forest" and not forest_enabled:
        raise LimitError(
            "pseudo-labels from the forest (training.unlabelled.teacher: forest) need the "
            "random-forest baseline, and forest.enabled is false.",
            "set forest.enabled: true, or training.unlabelled.teacher: network.",
            "training.unlabelled.teacher",
        )


class VolumeWindows:
    """Seeded random (window, window, n_z) input windows of preprocessed volumes (HDF5
    `/volume`, (z, y, x) float in [0, 1]): the inputs of twin tiles of output side `side`."""

    def __init__(
        self,
        volume_files: Sequence[str],
        n_xy: int,
        n_z: int,
        side: int,
        seed: int,
        teacher_files: Sequence[str] = (),
    ):
        if not volume_files:
            raise ValueError("training.unlabelled needs at least one preprocessed volume")
        self.files = [str(f) for f in volume_files]
        self.teacher_files = [str(f) for f in teacher_files]
        self.n_xy, self.n_z, self.side, self.seed = n_xy, n_z, side, seed
        field, _ = twin_geometry(n_xy, "valid")
        self.window = side + field - 1
        self.shapes = []
        for path in self.files:
            with h5py.File(path, "r") as handle:
                self.shapes.append(tuple(handle["volume"].shape))
        if self.teacher_files:
            check_teacher_files(self.files, self.shapes, self.teacher_files)

    def draw(self, count: int, epoch: int, index: int) -> np.ndarray:
        """`count` windows (count, window, window, n_z) float32 for step `index` of `epoch`,
        each under a random dihedral transform; the same arguments give the same windows."""
        return self._draw(count, epoch, index, False)[0]

    def draw_with_teacher(
        self, count: int, epoch: int, index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The windows of `draw` and the teacher's scores (count, side, side) of the voxels
        the twin's outputs stand for (`blind_spot_offset`), under the same transforms."""
        if not self.teacher_files:
            raise ValueError("these windows have no teacher score volumes")
        return self._draw(count, epoch, index, True)

    def _draw(self, count: int, epoch: int, index: int, teacher: bool):
        rng = np.random.default_rng([self.seed, epoch, index, 7])
        which = int(rng.integers(len(self.files)))
        depth, height, width = self.shapes[which]
        z = int(rng.integers(depth))
        slices = neighbour_slices(z, self.n_z, depth)
        with h5py.File(self.files[which], "r") as handle:
            unique, inverse = np.unique(slices, return_inverse=True)
            stack = handle["volume"][unique.tolist()][inverse]
        scores = None
        if teacher:
            with h5py.File(self.teacher_files[which], "r") as handle:
                scores = handle["scores"][z]
        start = blind_spot_offset(self.n_xy)
        windows, blocks = [], []
        for _ in range(count):
            y0 = int(rng.integers(-(self.window // 2), max(height - self.window // 2, 1)))
            x0 = int(rng.integers(-(self.window // 2), max(width - self.window // 2, 1)))
            ys = mirror_index(np.arange(y0, y0 + self.window), height)
            xs = mirror_index(np.arange(x0, x0 + self.window), width)
            window = np.moveaxis(stack[:, ys][:, :, xs], 0, -1).astype(np.float32)
            code = int(rng.integers(8))
            windows.append(dihedral_2d(window, code))
            if scores is not None:
                # the teacher's window, transformed as the input's, is aligned with it voxel
                # for voxel; twin output p stands for its voxel p + start
                moved = dihedral_2d(scores[ys][:, xs].astype(np.float32), code)
                blocks.append(moved[start : start + self.side, start : start + self.side])
        return np.stack(windows), (np.stack(blocks) if blocks else None)


def check_teacher_files(
    volume_files: Sequence[str], shapes: Sequence[tuple], teacher_files: Sequence[str]
) -> None:
    """Each preprocessed volume needs a teacher score volume (HDF5 `/scores`) of its shape."""
    if len(teacher_files) != len(volume_files):
        raise ValueError(
            f"training.unlabelled.teacher: forest needs one score volume per preprocessed "
            f"volume, got {len(teacher_files)} for {len(volume_files)}"
        )
    for volume, shape, path in zip(volume_files, shapes, teacher_files, strict=True):
        with h5py.File(path, "r") as handle:
            found = tuple(handle["scores"].shape)
        if found != tuple(shape):
            raise ValueError(
                f"the teacher scores {path} have shape {found}, the volume {volume} {shape}: "
                "rebuild the forest's scores of this volume (delete the file and rerun)."
            )


def pseudo_labels(
    scores: np.ndarray, confidence: float, total_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Hard pseudo-labels and their weights from teacher scores (any shape).

    A voxel counts when max(p, 1 - p) >= confidence. Each class present among the counted
    voxels gets total_weight / (classes present) spread evenly over its voxels; the rest weigh
    0. So the pseudo-labels weigh `total_weight` in all, half per class when both occur."""
    scores = np.asarray(scores, np.float64)
    labels = (scores >= 0.5).astype(np.float32)
    confident = np.maximum(scores, 1 - scores) >= confidence
    weights = np.zeros(scores.shape, np.float32)
    counts = [int(np.count_nonzero(confident & (labels == c))) for c in (0, 1)]
    present = sum(n > 0 for n in counts)
    for value, count in zip((0, 1), counts, strict=True):
        if count:
            weights[confident & (labels == value)] = total_weight / present / count
    return labels, weights


def perturb(windows: np.ndarray, a: float, b: float, noise: float, rng) -> np.ndarray:
    """The student's view: the intensity rescaling of eq. 3-4 on every window, plus Gaussian
    noise of standard deviation `noise`."""
    out = rescale_intensity(windows, a, b, 1.0, rng)
    if noise > 0:
        out = out + rng.normal(0, noise, out.shape).astype(out.dtype)
    return out


def mixed_batch(twin, labelled: tuple, windows: VolumeWindows, settings, augment, epoch, index):
    """One step's (inputs, fragment labels (.., 1), fragment weights): the labelled tiles of
    `labelled` = (inputs, label maps, weight maps) and, from `settings.start_epoch` on, as
    many pseudo-labelled volume tiles (`settings.tiles_per_batch`) after them."""
    inputs, labels, weights = labelled
    if epoch >= settings.start_epoch and settings.tiles_per_batch > 0:
        if settings.forest_teaches:
            plain, scores = windows.draw_with_teacher(settings.tiles_per_batch, epoch, index)
        else:
            plain = windows.draw(settings.tiles_per_batch, epoch, index)
            teacher = np.asarray(twin.predict_on_batch(plain))[..., 0]
            scores = from_fragment_layout(teacher, len(plain))
        total = settings.weight * float(weights.sum())
        extra_labels, extra_weights = pseudo_labels(scores, settings.confidence, total)
        rng = np.random.default_rng([windows.seed, epoch, index, 11])
        student = perturb(plain, augment["a"], augment["b"], settings.noise, rng)
        inputs = np.concatenate([inputs, student])
        labels = np.concatenate([labels, extra_labels])
        weights = np.concatenate([weights, extra_weights])
    return inputs, fragment_layout(labels)[..., None], fragment_layout(weights)


def fit_epoch_with_unlabelled(
    twin, train_tiles, val_tiles, windows: VolumeWindows, settings: UnlabelledSettings, epoch
) -> dict[str, list[float]]:
    """One epoch of dense training with pseudo-labelled volume tiles, then the dense
    validation of `fibseg.training.dense.evaluate_dense` (labelled voxels only).

    The train loss is the mean over steps of the combined objective; accuracy and mIoU are
    over the labelled and the pseudo-labelled voxels of each step."""
    from .dense import evaluate_dense

    train_tiles.set_epoch(epoch)
    logs = []
    for index in range(len(train_tiles)):
        augment = train_tiles.augment or {"a": 0.0, "b": 0.0}  # noise only, without eq. 3-4
        batch = mixed_batch(
            twin, train_tiles.tiles(index), windows, settings, augment, epoch, index
        )
        logs.append(twin.train_on_batch(*batch, return_dict=True))
    history = {key: [float(np.mean([log[key] for log in logs]))] for key in logs[0]}
    history.update({f"val_{k}": [v] for k, v in evaluate_dense(twin, val_tiles).items()})
    return history


# --- masked: blind-spot pretraining ---------------------------------------------------------

PRETRAIN_EPOCH = 1_000_000  # VolumeWindows.draw's `epoch` for pretraining, one no run reaches


def blind_spot_offset(n_xy: int) -> int:
    """Twin output p (per axis) stands for input voxel p + this of its window: the centre of
    the patch that starts at p + offset (`twin_geometry`, offset 0 for 'valid'), i.e.
    DenseEngine's `before` and `cut_tile`'s n_xy // 2. It is not field // 2: for n_xy 81 the
    field is 76, and the twin sees 40 voxels before this voxel and 35 after it."""
    _, offset = twin_geometry(n_xy, "valid")
    return n_xy // 2 + offset


def neighbour_offsets(radius: int) -> np.ndarray:
    """The (dy, dx) within `radius` (Chebyshev) of a voxel, the voxel itself left out."""
    steps = np.arange(-radius, radius + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(steps, steps, indexing="ij"))
    keep = (dy != 0) | (dx != 0)
    return np.stack([dy[keep], dx[keep]], axis=1)


def blind_spot_batch(
    windows: np.ndarray, n_xy: int, fraction: float, radius: int, rng
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise2Void masking of (B, W, W, n_z) twin input windows of output side
    W - field + 1: (inputs, targets (B, side, side), weights (B, side, side)).

    In each window round(fraction x side**2) output positions (at least one) are drawn without
    replacement; at the voxel each stands for (`blind_spot_offset`) of the centre slice the
    input takes the value of a random other voxel within `radius` (of the unmasked window),
    the target is the original value there, and the weight is 1 (0 at every other output)."""
    windows = np.asarray(windows, np.float32)
    batch, width, _, n_z = windows.shape
    field, _ = twin_geometry(n_xy, "valid")
    side = width - field + 1
    start, centre = blind_spot_offset(n_xy), n_z // 2
    count = min(max(1, round(fraction * side * side)), side * side)
    offsets = neighbour_offsets(radius)
    inputs = windows.copy()
    targets = np.zeros((batch, side, side), np.float32)
    weights = np.zeros((batch, side, side), np.float32)
    for b in range(batch):
        i, j = np.divmod(rng.choice(side * side, count, replace=False), side)
        y, x = i + start, j + start
        dy, dx = offsets[rng.integers(len(offsets), size=count)].T
        source_y = np.clip(y + dy, 0, width - 1)
        source_x = np.clip(x + dx, 0, width - 1)
        targets[b, i, j] = windows[b, y, x, centre]
        inputs[b, y, x, centre] = windows[b, source_y, source_x, centre]
        weights[b, i, j] = 1.0
    return inputs, targets, weights


def blind_spot_model(model, seed: int):
    """The training twin of `model` with its score layer replaced by a new linear 1 x 1 head
    (seeded): every other layer is the model's own, so training it trains the model."""
    import keras

    from ..networks.model import model_geometry
    from ..networks.twin import twin_trunk
    from .dense import check_dense_training

    _, n_z, padding = model_geometry(model)
    check_dense_training(padding)
    inputs = keras.Input((None, None, n_z), name="tiles")
    head = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(seed), name="blind_spot_head"
    )
    return keras.Model(inputs, head(twin_trunk(model, inputs)), name=f"{model.name}_blind_spot")


def masked_mse():
    """Squared error summed over the masked outputs (weight > 0), divided by their number."""
    import keras

    from .dense import labelled_mean_loss

    return labelled_mean_loss(keras.losses.mean_squared_error, "masked_mse")


def pretrain_blind_spot(
    model, windows: VolumeWindows, settings: UnlabelledSettings, seed: int, log=None, out=None
):
    """Blind-spot pretraining of `model` in place: `settings.pretrain_steps` steps of a fresh
    Adam (`pretrain_lr`) on `blind_spot_batch`es of `settings.tiles_per_batch` windows, through
    `blind_spot_model` (dropout on). The head is dropped; the trunk's weights stay in `model`.
    The same seed (and model) gives the same weights.

    Returns the history (step, loss, seconds); with `out` it is written there as CSV."""
    import time

    import keras
    import pandas as pd

    from ..networks.twin import fragment_layout

    keras.utils.set_random_seed(seed)
    net = blind_spot_model(model, seed)
    net.compile(optimizer=keras.optimizers.Adam(settings.pretrain_lr), loss=masked_mse())
    steps = settings.pretrain_steps if settings.tiles_per_batch > 0 else 0
    started, rows = time.time(), []
    for step in range(steps):
        plain = windows.draw(settings.tiles_per_batch, PRETRAIN_EPOCH, step)
        rng = np.random.default_rng([windows.seed, step, 13])
        inputs, targets, weights = blind_spot_batch(
            plain, windows.n_xy, settings.mask_fraction, settings.mask_radius, rng
        )
        loss = net.train_on_batch(
            inputs, fragment_layout(targets)[..., None], fragment_layout(weights), return_dict=True
        )["loss"]
        rows.append({"step": step, "loss": float(loss), "seconds": time.time() - started})
        if log and (step % 50 == 0 or step == steps - 1):
            log.info("blind-spot pretraining step %d/%d: loss %.5f", step + 1, steps, loss)
    history = pd.DataFrame(rows, columns=["step", "loss", "seconds"])
    if out is not None:
        write_csv(out, history)
    return history
