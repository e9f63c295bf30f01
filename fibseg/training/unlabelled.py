"""Learning from unlabelled voxels in dense training (`training.unlabelled`): pseudo-labels
from the random forest's score volumes (`pseudo`). The network distils the forest, trained on
its labels under strong perturbation as in FixMatch (Sohn et al. 2020).

pseudo: each step adds `tiles_per_batch` tiles of the preprocessed volumes (any voxel, labelled
or not) to the batch of labelled tiles. The forest's score volumes (HDF5 `/scores` of each
preprocessed volume's shape, rule stitch_forest) are read at the voxels the twin's outputs
stand for, under the windows' own transforms, and every voxel scored with a confidence
max(p, 1 - p) >= `confidence` becomes a pseudo-label, 1 if p >= 0.5 else 0. The network sees
the same window strongly perturbed (the run's intensity rescaling of eq. 3-4 applied always,
plus Gaussian noise) and is trained towards the pseudo-labels. The two classes of
pseudo-labels weigh the same, and together `weight` times the labelled voxels of the batch, so
the objective is supervised + weight x unsupervised whatever the share of confident voxels.
Pseudo-labels start at `start_epoch`. The network distils the forest's labels of every voxel,
which scale-space features get right from few labels, while keeping its own context.

The windows come from whole volumes, so a tile's context is real data everywhere. All tiles of
one step come from the same n_z slices of one data set: the preprocessed volumes are stored in
whole-slice chunks, so a step reads n_z slices, not n_z per tile. Measurements, and those of
the options since removed: studies/label_budget.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

from ..io.errors import LimitError
from ..networks.twin import fragment_layout, twin_geometry
from ..networks.windows import mirror_index, neighbour_slices
from ..runtime.settings import UnlabelledSettings
from .augment import rescale_intensity
from .tiles import dihedral_2d


def check_unlabelled(mode: str, method: str, forest_enabled: bool = True) -> None:
    """Pseudo-labels are trained densely: they need dense training, and the random forest,
    whose score volumes they come from."""
    if method != "none" and mode != "dense":
        raise LimitError(
            f"learning from unlabelled voxels ('{method}') needs dense training, not '{mode}'.",
            "set training.mode: dense (with model.padding: valid) or training.unlabelled."
            "method: none.",
            "training.unlabelled.method",
        )
    if method == "pseudo" and not forest_enabled:
        raise LimitError(
            "pseudo-labels (training.unlabelled.method: pseudo) come from the random-forest "
            "baseline's score volumes, and forest.enabled is false.",
            "set forest.enabled: true, or training.unlabelled.method: none.",
            "training.unlabelled.method",
        )


def output_voxel_offset(n_xy: int) -> int:
    """Twin output p (per axis) stands for input voxel p + this of its window: the centre of
    the patch that starts at p + offset (`twin_geometry`, offset 0 for 'valid'), i.e.
    DenseEngine's `before` and `cut_tile`'s n_xy // 2. It is not field // 2: for n_xy 81 the
    field is 76, and the twin sees 40 voxels before this voxel and 35 after it."""
    _, offset = twin_geometry(n_xy, "valid")
    return n_xy // 2 + offset


class VolumeWindows:
    """Seeded random (window, window, n_z) input windows of preprocessed volumes (HDF5
    `/volume`, (z, y, x) float in [0, 1]): the inputs of twin tiles of output side `side`,
    with the forest's scores (HDF5 `/scores`, one volume of the same shape per preprocessed
    volume, in the same order) of the voxels the twin's outputs stand for."""

    def __init__(
        self,
        volume_files: Sequence[str],
        score_files: Sequence[str],
        n_xy: int,
        n_z: int,
        side: int,
        seed: int,
    ):
        if not volume_files:
            raise ValueError("training.unlabelled needs at least one preprocessed volume")
        self.files = [str(f) for f in volume_files]
        self.score_files = [str(f) for f in score_files]
        self.n_xy, self.n_z, self.side, self.seed = n_xy, n_z, side, seed
        field, _ = twin_geometry(n_xy, "valid")
        self.window = side + field - 1
        self.shapes = []
        for path in self.files:
            with h5py.File(path, "r") as handle:
                self.shapes.append(tuple(handle["volume"].shape))
        check_score_files(self.files, self.shapes, self.score_files)

    def draw(self, count: int, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` windows (count, window, window, n_z) float32 for step `index` of `epoch`,
        each under a random dihedral transform, and the forest's scores (count, side, side) of
        the voxels the twin's outputs stand for (`output_voxel_offset`), under the same
        transforms; the same arguments give the same windows."""
        rng = np.random.default_rng([self.seed, epoch, index, 7])
        which = int(rng.integers(len(self.files)))
        depth, height, width = self.shapes[which]
        z = int(rng.integers(depth))
        slices = neighbour_slices(z, self.n_z, depth)
        with h5py.File(self.files[which], "r") as handle:
            unique, inverse = np.unique(slices, return_inverse=True)
            stack = handle["volume"][unique.tolist()][inverse]
        with h5py.File(self.score_files[which], "r") as handle:
            scores = handle["scores"][z]
        start = output_voxel_offset(self.n_xy)
        windows, blocks = [], []
        for _ in range(count):
            y0 = int(rng.integers(-(self.window // 2), max(height - self.window // 2, 1)))
            x0 = int(rng.integers(-(self.window // 2), max(width - self.window // 2, 1)))
            ys = mirror_index(np.arange(y0, y0 + self.window), height)
            xs = mirror_index(np.arange(x0, x0 + self.window), width)
            window = np.moveaxis(stack[:, ys][:, :, xs], 0, -1).astype(np.float32)
            code = int(rng.integers(8))
            windows.append(dihedral_2d(window, code))
            # the scores' window, transformed as the input's, is aligned with it voxel for
            # voxel; twin output p stands for its voxel p + start
            moved = dihedral_2d(scores[ys][:, xs].astype(np.float32), code)
            blocks.append(moved[start : start + self.side, start : start + self.side])
        return np.stack(windows), np.stack(blocks)


def check_score_files(
    volume_files: Sequence[str], shapes: Sequence[tuple], score_files: Sequence[str]
) -> None:
    """Each preprocessed volume needs a forest score volume (HDF5 `/scores`) of its shape."""
    if len(score_files) != len(volume_files):
        raise ValueError(
            f"training.unlabelled.method: pseudo needs one forest score volume per "
            f"preprocessed volume, got {len(score_files)} for {len(volume_files)}"
        )
    for volume, shape, path in zip(volume_files, shapes, score_files, strict=True):
        with h5py.File(path, "r") as handle:
            found = tuple(handle["scores"].shape)
        if found != tuple(shape):
            raise ValueError(
                f"the forest scores {path} have shape {found}, the volume {volume} {shape}: "
                "rebuild the forest's scores of this volume (delete the file and rerun)."
            )


def pseudo_labels(
    scores: np.ndarray, confidence: float, total_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Hard pseudo-labels and their weights from the forest's scores (any shape).

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


def mixed_batch(labelled: tuple, windows: VolumeWindows, settings, augment, epoch, index):
    """One step's (inputs, fragment labels (.., 1), fragment weights): the labelled tiles of
    `labelled` = (inputs, label maps, weight maps) and, from `settings.start_epoch` on, as
    many pseudo-labelled volume tiles (`settings.tiles_per_batch`) after them."""
    inputs, labels, weights = labelled
    if epoch >= settings.start_epoch and settings.tiles_per_batch > 0:
        plain, scores = windows.draw(settings.tiles_per_batch, epoch, index)
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
        batch = mixed_batch(train_tiles.tiles(index), windows, settings, augment, epoch, index)
        logs.append(twin.train_on_batch(*batch, return_dict=True))
    history = {key: [float(np.mean([log[key] for log in logs]))] for key in logs[0]}
    history.update({f"val_{k}": [v] for k, v in evaluate_dense(twin, val_tiles).items()})
    return history
