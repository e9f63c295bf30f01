"""Post-processing of §3.8: smooth the scores in x-y with sigma, threshold at T, smooth the
binary image with sigma, threshold at T, then remove connected objects smaller than
`min_size` voxels from both phases. sigma and T are chosen on the validation regions.

`segment` holds the whole volume; `segment_streamed` gives the same result slab by slab, in
memory that scales with the slab, not the depth."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cc3d
import h5py
import numpy as np
import tifffile
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import remove_small_objects

from ..io.atomic import atomic_output
from ..io.voxel_size import hdf5_axes, imagej_calibration
from ..io.writers import compression
from ..networks.windows import region_in_window
from .metrics import confusion, miou_from_confusion

log = logging.getLogger(__name__)


def smooth_xy(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing in the x-y plane only (the last two axes)."""
    if sigma <= 0:
        return array.astype(np.float32)
    sigmas = (0,) * (array.ndim - 2) + (sigma, sigma)
    return ndi.gaussian_filter(array.astype(np.float32), sigmas, mode="reflect")


def remove_small(solid: np.ndarray, min_size: int) -> np.ndarray:
    """Drop solid objects, then pore objects, of fewer than `min_size` voxels."""
    if min_size <= 1:
        return solid
    solid = remove_small_objects(solid, max_size=min_size - 1)
    return ~remove_small_objects(~solid, max_size=min_size - 1)


def segment(scores: np.ndarray, sigma: float, threshold: float, min_size: int) -> np.ndarray:
    """Solid (True) / pore (False) from scores, by the two-pass pipeline of §3.8."""
    first = smooth_xy(scores, sigma) > threshold
    second = smooth_xy(first, sigma) > threshold
    return remove_small(second, min_size)


def segment_as_chosen(scores: np.ndarray, chosen: dict) -> np.ndarray:
    """`segment` with the sigma, T and minimum object size of a postprocess.json."""
    return segment(scores, chosen["sigma"], chosen["threshold"], chosen["min_object_voxels"])


CRITERIA = ("mIoU", "porosity", "both")  # config key postprocess.criterion
BOTH_TOLERANCE = 0.005  # "both": the trials this close to the best validation mIoU


def porosity_of(total: np.ndarray) -> tuple[float, float]:
    """(segmented, labelled) pore fraction of a confusion matrix (rows: labels)."""
    voxels = max(int(total.sum()), 1)
    return float(total[:, 0].sum() / voxels), float(total[0].sum() / voxels)


def chosen_trial(trials: list[dict[str, float]], criterion: str = "mIoU") -> dict[str, float]:
    """The trial a criterion picks: `mIoU`, the highest validation mIoU (the paper's);
    `porosity`, the validation porosity closest to the labels' (then the higher mIoU); `both`,
    of the trials within BOTH_TOLERANCE of the highest mIoU, the porosity closest."""
    if criterion not in CRITERIA:
        raise ValueError(f"postprocess.criterion {criterion!r}: use one of {', '.join(CRITERIA)}")
    best_miou = max(t["val_mIoU"] for t in trials)
    if criterion == "mIoU":
        return next(t for t in trials if t["val_mIoU"] == best_miou)
    near = [
        t for t in trials if criterion == "porosity" or t["val_mIoU"] >= best_miou - BOTH_TOLERANCE
    ]
    return min(near, key=lambda t: (abs(t["val_porosity_error"]), -t["val_mIoU"]))


def optimize(
    score_windows: list[np.ndarray],
    labels: list[np.ndarray],
    margin: int,
    sigmas: list[float],
    thresholds: list[float],
    min_size: int,
    criterion: str = "mIoU",
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The (sigma, T) that `criterion` picks (`chosen_trial`; by default the highest pooled
    mIoU) over the given regions, and every trial with its pooled mIoU, porosity and
    porosity error (segmented minus labelled).

    `score_windows[i]` holds the scores of region i plus `margin` pixels on each side (so the
    smoothing sees real neighbours); the mIoU is measured on the region itself.
    """
    trials = []
    for sigma, threshold in itertools.product(sigmas, thresholds):
        total = np.zeros((2, 2), np.int64)
        for window, label in zip(score_windows, labels, strict=True):
            solid = segment(window, sigma, threshold, min_size)
            inner = region_in_window(solid, margin, *label.shape)
            total += confusion(label, inner)
        segmented, labelled = porosity_of(total)
        trials.append(
            {
                "sigma": float(sigma),
                "threshold": float(threshold),
                "val_mIoU": miou_from_confusion(total),
                "val_porosity": segmented,
                "val_porosity_error": segmented - labelled,
            }
        )
    return chosen_trial(trials, criterion), trials


# --- Streamed post-processing: slab by slab, in memory that scales with the slab -------------
#
# The smoothing and thresholding are per slice, so a slab of slices is segmented alone. Only
# the removal of small objects needs 3-D neighbours: each slab's components are labelled
# alone (6-connectivity), the components on a slab's first or last slice are merged with those
# they touch across the face to the next slab, and their sizes are summed over the merge. A
# component then goes when its whole size is below min_size, exactly as in `remove_small`.
# Three passes: threshold and size the solid components; drop the small solid ones and size
# the pore components of the result; drop the small pore ones and yield the slab.


class SliceReadable(Protocol):
    """A (z, y, x) array read by slicing its first axis (numpy array, h5py dataset)."""

    shape: tuple[int, ...]

    def __getitem__(self, key: Any) -> Any: ...


class SlabStore(SliceReadable, Protocol):
    """A (z, y, x) array that slabs can also be written into."""

    def __setitem__(self, key: Any, value: np.ndarray) -> None: ...


@dataclass
class FaceComponents:
    """The components of one slab that touch its first or last slice: their labels (as
    `label_components` numbers them in the slab, sorted) and their whole sizes in voxels,
    summed over every slab they reach."""

    labels: np.ndarray
    sizes: np.ndarray


def slab_bounds(depth: int, slab_depth: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive slabs of `slab_depth` slices (the last one may be short)."""
    if slab_depth < 1:
        raise ValueError(f"slab_depth must be at least 1, not {slab_depth}")
    return [(start, min(start + slab_depth, depth)) for start in range(0, depth, slab_depth)]


def threshold_slab(
    scores: SliceReadable, start: int, stop: int, sigma: float, threshold: float
) -> np.ndarray:
    """The two smoothing-and-threshold passes of `segment` on slices [start, stop), read and
    smoothed one slice at a time (bool, True = solid)."""
    solid = np.empty((stop - start, *scores.shape[1:]), bool)
    for z in range(start, stop):
        first = smooth_xy(np.asarray(scores[z]), sigma) > threshold
        solid[z - start] = smooth_xy(first, sigma) > threshold
    return solid


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components of a 3-D mask, numbered 1..n (0 outside), and n. Deterministic:
    the same mask always gets the same numbers."""
    labels, count = cc3d.connected_components(mask, connectivity=6, return_N=True)
    return labels, int(count)


def component_sizes(labels: np.ndarray, count: int) -> np.ndarray:
    """Voxels of each label 0..count, counted a slice at a time (no volume-sized copy)."""
    sizes = np.zeros(count + 1, np.int64)
    for plane in labels:
        sizes += np.bincount(plane.ravel(), minlength=count + 1)
    return sizes


def touching_pairs(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (lower label, upper label) pairs that face each other across a slab face
    (both nonzero at the same pixel): the components that they belong to are one."""
    both = (lower > 0) & (upper > 0)
    lower, upper = lower[both].astype(np.int64), upper[both].astype(np.int64)
    if lower.size == 0:
        return lower, upper
    base = int(upper.max()) + 1
    keys = np.unique(lower * base + upper)
    return keys // base, keys % base


def merge_face_components(masks: Iterable[np.ndarray]) -> list[FaceComponents]:
    """For consecutive slab masks of one phase: each slab's components on its faces, with the
    whole size of the 3-D component they belong to. Slabs are labelled alone; the face
    components are the nodes of a graph whose edges are the label pairs that touch across
    each face, its connected components (a union-find) are the volume's components, and
    their sizes the sums of their nodes' sizes."""
    slab_labels, node_sizes, edges = [], [], []
    first_node = 0  # graph index of the current slab's first face component
    below = None  # the previous slab's last slice (labels) and its face labels' first node
    for mask in masks:
        labels, count = label_components(mask)
        on_faces = np.union1d(labels[0], labels[-1])
        on_faces = on_faces[on_faces > 0].astype(np.int64)
        node_sizes.append(component_sizes(labels, count)[on_faces])
        if below is not None:
            last_slice, below_faces, below_first = below
            lower, upper = touching_pairs(last_slice, labels[0])
            edges.append(
                (
                    below_first + np.searchsorted(below_faces, lower),
                    first_node + np.searchsorted(on_faces, upper),
                )
            )
        below = (labels[-1].copy(), on_faces, first_node)
        slab_labels.append(on_faces)
        first_node += on_faces.size
        del labels
    sizes = np.concatenate(node_sizes) if node_sizes else np.zeros(0, np.int64)
    rows = np.concatenate([a for a, _ in edges]) if edges else np.zeros(0, np.int64)
    cols = np.concatenate([b for _, b in edges]) if edges else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(sizes.size,) * 2)
    _, component = connected_components(graph, directed=False)
    totals = np.bincount(component, weights=sizes).astype(np.int64)[component]
    split = np.cumsum([faces.size for faces in slab_labels])[:-1]
    return [
        FaceComponents(faces, whole)
        for faces, whole in zip(slab_labels, np.split(totals, split), strict=True)
    ]


def drop_small_components(mask: np.ndarray, faces: FaceComponents, min_size: int) -> np.ndarray:
    """`mask` without its components of fewer than `min_size` voxels: a component on a face
    is measured by its whole size (`faces`), any other one within the slab."""
    labels, count = label_components(mask)
    sizes = component_sizes(labels, count)
    sizes[faces.labels] = faces.sizes
    small = sizes < min_size
    small[0] = False
    kept = np.empty_like(mask)
    for z, plane in enumerate(labels):
        kept[z] = mask[z] & ~small[plane]
    return kept


def segment_streamed(
    scores: SliceReadable,
    sigma: float,
    threshold: float,
    min_size: int,
    slab_depth: int,
    scratch: SlabStore | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """`segment` of a (z, y, x) score volume, slab by slab: yields (first slice, solid slab),
    in order, whose stack equals `segment(scores[:], sigma, threshold, min_size)`.

    `scratch` is a bool (z, y, x) store (`scratch_mask`, or a numpy array) that holds the
    thresholded volume between the passes; it is needed only when min_size > 1 and is
    overwritten. Memory scales with one slab, not the depth (about 10 bytes per slab voxel;
    `fibseg.pipeline.dag.postprocess_memory_mb`).
    """
    bounds = slab_bounds(scores.shape[0], slab_depth)
    if min_size <= 1:  # `remove_small` is a no-op: one pass
        for start, stop in bounds:
            yield start, threshold_slab(scores, start, stop, sigma, threshold)
        return
    if scratch is None or tuple(scratch.shape) != tuple(scores.shape):
        raise ValueError("segment_streamed needs a scratch store of the scores' shape")

    def thresholded() -> Iterator[np.ndarray]:
        for number, (start, stop) in enumerate(bounds, 1):
            log.info("threshold and label solid: slab %d/%d", number, len(bounds))
            solid = threshold_slab(scores, start, stop, sigma, threshold)
            scratch[start:stop] = solid
            yield solid

    solid_faces = merge_face_components(thresholded())

    def pores_without_small_solid() -> Iterator[np.ndarray]:
        for number, ((start, stop), faces) in enumerate(zip(bounds, solid_faces, strict=True), 1):
            log.info("drop small solid, label pore: slab %d/%d", number, len(bounds))
            solid = drop_small_components(np.asarray(scratch[start:stop], bool), faces, min_size)
            scratch[start:stop] = solid
            yield ~solid

    pore_faces = merge_face_components(pores_without_small_solid())
    for (start, stop), faces in zip(bounds, pore_faces, strict=True):
        pore = drop_small_components(~np.asarray(scratch[start:stop], bool), faces, min_size)
        yield start, ~pore


@contextlib.contextmanager
def scratch_mask(directory: str | os.PathLike, shape: tuple[int, ...]) -> Iterator[h5py.Dataset]:
    """A temporary bool (z, y, x) HDF5 dataset in `directory`, one compressed chunk per slice,
    for `segment_streamed`; the file is deleted on exit."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=directory) as folder:
        with h5py.File(Path(folder) / "mask.h5", "w") as handle:
            yield handle.create_dataset(
                "mask", shape=shape, dtype=bool, chunks=(1, *shape[1:]), compression="lzf"
            )


def write_segmentation(
    scores: SliceReadable,
    chosen: dict,
    h5_path: str | os.PathLike,
    tif_path: str | os.PathLike,
    attrs: dict[str, object],
    slab_depth: int,
    voxel_nm: tuple[float, float, float] | None = None,
) -> float:
    """`segment_as_chosen` of a score volume, streamed into `h5_path` (dataset "segmentation",
    uint8, one compressed chunk per slice, `attrs`, `element_size_um`) and the ImageJ TIFF
    stack `tif_path` (as `io.write_tiff` writes it, with the voxel size `voxel_nm`), both
    atomically; the scratch mask lies beside `h5_path` meanwhile. Returns the porosity
    (fraction of pore voxels)."""
    shape = tuple(scores.shape)
    bounds = slab_bounds(shape[0], slab_depth)
    pore_voxels = 0
    with (
        atomic_output(h5_path) as h5_tmp,
        atomic_output(tif_path) as tif_tmp,
        scratch_mask(Path(h5_path).parent, shape) as scratch,
        h5py.File(h5_tmp, "w") as out,
        tifffile.TiffWriter(tif_tmp, imagej=True) as tif,
    ):
        out.attrs.update(attrs)
        dataset = out.create_dataset(
            "segmentation", shape, np.uint8, chunks=(1, *shape[1:]), **compression(shape)
        )
        dataset.attrs.update(hdf5_axes(voxel_nm))

        def slices() -> Iterator[np.ndarray]:
            nonlocal pore_voxels
            slabs = segment_streamed(
                scores,
                chosen["sigma"],
                chosen["threshold"],
                chosen["min_object_voxels"],
                slab_depth,
                scratch,
            )
            for number, (start, solid) in enumerate(slabs, 1):
                slab = solid.astype(np.uint8)
                dataset[start : start + len(slab)] = slab
                pore_voxels += slab.size - np.count_nonzero(slab)
                log.info(
                    "wrote slab %d/%d (slices %d-%d)",
                    number,
                    len(bounds),
                    start,
                    start + len(slab) - 1,
                )
                yield from slab

        tif.write(
            slices(),
            shape=shape,
            dtype=np.uint8,
            photometric="minisblack",
            **imagej_calibration(voxel_nm),
        )
    return pore_voxels / math.prod(shape)
