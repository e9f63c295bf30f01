"""Scoring with one or several members: CNN runs (`.keras`, loaded in safe mode) or the random
forest the run trained itself (`.joblib`, a pickle: read only when the caller says the file is
the run's own). Each member reads its own n_z slices; the ensemble's score is the members'
mean, and its uncertainty is their spread.

The uncertainty map is the standard deviation of the members' scores. With a single member
there is no spread, so it is the closeness to the decision boundary, 0.5 - |p - 0.5|
(0 = certain, 0.5 = a coin toss); the `uncertainty` attribute of the output says which.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..annotation.regions import RegionSet
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
    """Scores and uncertainty (len(z_range), y, x) of slices of a volume of `depth` slices.
    With `log`, every slice of every member (and the tiles of big slices, at most one line
    per `tile_every_s`) is logged with its rate and the time left."""
    progress = None
    per_member = []
    for rank, member in enumerate(members, start=1):
        scores = []
        for z in z_range:
            stack = read_slices(neighbour_slices(z, member.n_z, depth))
            if log is not None and progress is None:
                voxels = stack.shape[1] * stack.shape[2]
                progress = Progress(log, len(z_range) * len(members), voxels, tile_every_s)
            label = f"z={z}" + (f", member {rank}/{len(members)}" if len(members) > 1 else "")
            with progress.tiles(label) if progress else contextlib.nullcontext():
                scores.append(member.scorer(stack))
            if progress:
                progress.slice_done(label)
        per_member.append(np.stack(scores))
    return combine(per_member)


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
