"""Scoring with one or several members: CNN runs (`.keras`, loaded in safe mode) or the random
forest the run trained itself (`.joblib`, a pickle: read only when the caller says the file is
the run's own). Each member scores from its own n_z slices; the ensemble's score is the members'
mean, and its uncertainty is their spread.

The uncertainty map is the standard deviation of the members' scores. With a single member
there is no spread, so it is the closeness to the decision boundary, 0.5 - |p - 0.5|
(0 = certain, 0.5 = a coin toss); the `uncertainty` attribute of the output says which.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..annotation.regions import RegionSet
from ..io.atomic import atomic_output
from ..io.volume import Volume
from ..io.writers import compression
from ..networks.registry import Geometry
from ..networks.windows import neighbour_slices
from ..runtime.progress import Progress
from ..runtime.settings import InferenceSettings
from .infer import (
    ENGINES,
    Scorer,
    check_scorable,
    label_agreement,
    load_model,
    make_scorer,
    score_regions,
)
from .pretrained import check_model_format

# The rules whose model is the run's own forest (rule train_forest's forest.joblib, a pickle):
# the only ones that may read one (scripts/predict_regions.py, predict_slices.py).
TRUSTED_FOREST_RULES = ("predict_forest_regions", "predict_forest_slices")
SPREAD, MARGIN = "std across members", "0.5 - |p - 0.5| (one member)"


@dataclass
class Member:
    """One scoring method: its file, the slices it reads and its scorer (stack, roi); for a
    CNN also its Keras model and its geometry (with its architecture, found once on loading)."""

    path: str
    n_z: int
    scorer: Scorer
    model: object = None  # the Keras model of a CNN member
    geometry: Geometry | None = None


def load_member(
    path: str,
    inference: InferenceSettings,
    tile: int | None = None,
    threads: int = 1,
    trusted_forest: bool = False,
) -> Member:
    """A CNN run (`.keras`, loaded in safe mode, scored with the configured engine) or, with
    `trusted_forest`, a forest (`.joblib`, predicting on `threads` threads). A `.joblib` file
    is a pickle, which runs any code it holds when it is read: only the forest this run trained
    (results/forest/forest.joblib, the forest rules) may be read. Any other file that is not
    `.keras` is refused, unread, with an InputError that names it."""
    if trusted_forest and Path(path).suffix == ".joblib":
        from ..baselines.forest import forest_scorer, load_forest

        forest, metadata = load_forest(path)
        forest.n_jobs = threads
        return Member(path, int(metadata["n_z"]), forest_scorer(forest, metadata["sigma_max"]))
    check_model_format(path)
    model = load_model(path)
    geometry = check_scorable(model, path, inference)
    scorer = make_scorer(model, inference.engine, inference, tile, geometry)
    return Member(path, geometry.n_z, scorer, model, geometry)


def combine(scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, str]:
    """The members' mean score, the uncertainty map and what the map is."""
    stacked = np.stack(scores).astype(np.float32)
    if len(scores) > 1:
        return stacked.mean(axis=0), stacked.std(axis=0), SPREAD
    return stacked[0], 0.5 - np.abs(stacked[0] - 0.5), MARGIN


def ensemble_slices(
    read_slices: Callable[[np.ndarray], np.ndarray],
    depth: int,
    z_range: range,
    members: list[Member],
    log: logging.Logger | None = None,
    tile_every_s: float = 15.0,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Scores and uncertainty (len(z_range), y, x) of the consecutive slices `z_range` of a
    volume of `depth` slices (`slice_scores`, stacked)."""
    scored = list(slice_scores(read_slices, depth, z_range, members, log, tile_every_s))
    return np.stack([s[0] for s in scored]), np.stack([s[1] for s in scored]), scored[0][2]


def slice_scores(
    read_slices: Callable[[np.ndarray], np.ndarray],
    depth: int,
    z_range: range,
    members: list[Member],
    log: logging.Logger | None = None,
    tile_every_s: float = 15.0,
) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
    """Scores, uncertainty (y, x) and what the uncertainty is, of each of the consecutive
    slices `z_range` in turn, so that a caller can write each slice and hold none. Each slice
    is read once, whatever the members' n_z: the slices the next z needs stay in memory (at
    most the largest n_z of them). With `log`, every slice of every member (and the tiles of
    big slices, at most one line per `tile_every_s`) is logged with its rate and the time
    left."""
    progress = None
    widest = max(member.n_z for member in members)
    cache: dict[int, np.ndarray] = {}
    for z in z_range:
        scores = []
        for rank, member in enumerate(members, start=1):
            stack = cached_stack(read_slices, neighbour_slices(z, member.n_z, depth), cache)
            if log is not None and progress is None:
                voxels = stack.shape[1] * stack.shape[2]
                progress = Progress(log, len(z_range) * len(members), voxels, tile_every_s)
            label = f"z={z}" + (f", member {rank}/{len(members)}" if len(members) > 1 else "")
            with progress.tiles(label) if progress else contextlib.nullcontext():
                scores.append(member.scorer(stack))
            if progress:
                progress.slice_done(label)
        needed = {int(i) for i in neighbour_slices(z + 1, widest, depth)}
        for index in set(cache) - needed:
            del cache[index]
        yield combine(scores)


def cached_stack(
    read_slices: Callable[[np.ndarray], np.ndarray],
    indices: np.ndarray,
    cache: dict[int, np.ndarray],
) -> np.ndarray:
    """The slices at `indices` as one stack, reading (in one call) only those not in `cache`,
    which keeps them."""
    missing = sorted({int(i) for i in indices} - set(cache))
    if missing:
        cache.update(zip(missing, read_slices(np.asarray(missing)), strict=True))
    return np.stack([cache[int(i)] for i in indices])


def score_chunk(
    volume_spec: str,
    dataset: str,
    models: list[str],
    slices: tuple[int, int],
    inference: InferenceSettings,
    threads: int,
    trusted_forest: bool,
    output: str,
    log: logging.Logger | None = None,
) -> None:
    """What rule predict_slices does: load the members once, score slices `first` to
    `stop - 1` of the volume and write each slice's scores and uncertainty to `output` as it
    is scored (LZF: a file read once by rule stitch), so that the job holds a few slices,
    whatever their number. benchmarks/inference.py times it against the engine alone."""
    members = [load_member(p, inference, None, threads, trusted_forest) for p in models]
    first, stop = slices
    with (
        Volume(volume_spec, dataset) as volume,
        atomic_output(output) as tmp,
        h5py.File(tmp, "w") as handle,
    ):
        if log is not None:
            log.info("scoring slices %d-%d of %s", first, stop - 1, volume.shape)
        shape = (stop - first, *volume.shape[1:])
        arrays = {
            name: handle.create_dataset(
                name, shape, np.float32, chunks=(1, *shape[1:]), **compression(shape, fast=True)
            )
            for name in ("scores", "uncertainty")
        }
        total = 0.0
        scored = slice_scores(volume.read_slices, volume.shape[0], range(first, stop), members, log)
        for offset, (scores, uncertainty, _) in enumerate(scored):
            arrays["scores"][offset] = scores
            arrays["uncertainty"][offset] = uncertainty
            total += float(scores.mean(dtype=np.float64))
        kind = SPREAD if len(members) > 1 else MARGIN
        handle.attrs.update({"first_slice": first, "stop_slice": stop, "uncertainty": kind})
    if log is not None:
        log.info(
            "slices %d-%d scored by %d member(s), mean %.4f",
            *(first, stop - 1, len(members), total / max(1, stop - first)),
        )


def ensemble_regions(
    regions: RegionSet, members: list[Member], margin: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Scores and uncertainty of every region of a data set plus `margin` pixels."""
    return combine([score_regions(regions, m.scorer, m.n_z, margin) for m in members])


def region_window(regions: RegionSet, margin: int) -> int:
    """Side of the largest region plus its margins: one dense tile per region."""
    return int(max(regions.table.height.max(), regions.table.width.max())) + 2 * margin


def approximation_agreement(
    member: Member,
    regions: RegionSet,
    scores: np.ndarray,
    inference: InferenceSettings,
    margin: int,
    check_regions: list[int],
) -> float | None:
    """Where the member's engine approximates its network (a 'same' CNN on the dense
    engine), the label agreement with the exact scores (the sliding window) over
    `check_regions` (the validation regions); else None."""
    geometry = member.geometry
    if member.model is None or geometry is None:
        return None
    exact_scorer = geometry.architecture.exact_scorer(member.model, geometry, inference, ENGINES)
    if exact_scorer is None:
        return None
    exact = score_regions(regions, exact_scorer, member.n_z, margin, check_regions)
    return label_agreement(scores[check_regions], exact)


def score_dataset_regions(
    members: list[Member],
    regions: RegionSet,
    inference: InferenceSettings,
    margin: int,
    check_regions: list[int],
) -> tuple[np.ndarray, np.ndarray, str, float | None]:
    """Scores, uncertainty (and what it is) of a data set's regions, and for a single 'same'
    CNN on the dense engine its label agreement with the sliding window."""
    scores, uncertainty, kind = ensemble_regions(regions, members, margin)
    agreement = None
    if len(members) == 1:
        agreement = approximation_agreement(
            members[0], regions, scores, inference, margin, check_regions
        )
    return scores, uncertainty, kind, agreement
