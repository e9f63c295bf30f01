"""Slice registration that does not accumulate error (rule align's default).

Each slice is compared with the `lags` slices before it (and, with an alignment region on a
mark that does not change, with slice 0) by sub-pixel phase correlation of the signal that
tracks the sample: each column's mean is removed (curtaining stripes along y and the x
gradient), a difference of Gaussians keeps the structure's band (not the noise, not the
charging), and a Tukey window tapers the slice's outer 5 % (not a Hann window, which keeps
only the centre; docs/alignment.md). The pairs' displacements then go to
one robust least-squares solve for the slices' positions (scipy's `least_squares`, Cauchy
loss): a pair that disagrees with the others is down-weighted instead of carried to every
later slice, and a step larger than `max_step_px` per slice is dropped before the solve as
implausible for one slice. (A penalty on the positions' second differences, saying that
drift is slow, gained nothing measurable on the simulator and is no option; docs/alignment.md.)

With `model: rigid`, each pair's rotation is estimated as well (pystackreg's rigid body on the
same filtered slices) and solved for in the same way; translation is the default.

The noise comes from the stack itself: the neighbour steps are measured again on the two
halves of the registration region, independently. Where the stack does not move, the halves'
steps are independent noise; where it drifts, they agree. Their half sum carries drift plus
noise, their half difference noise alone, with the same variance: the ratio of the two
energies is F-distributed under no drift (its log, times sqrt(dof) / 2, a z-score), and the
mean step against its standard error catches a slow trend that adds little energy per step.
When neither z-score exceeds `still_sigmas`, the stack shows no drift above the noise and,
with `still: true`, every slice keeps its pixels (identity): resampling a stack that never
moved only blurs it. (Why a test on the steps, not on the solved positions:
docs/alignment.md.)

The paper's registration (each slice to the previous one with StackReg, the transforms chained)
is `method: previous` (`register_to_previous`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pystackreg import StackReg
from scipy.optimize import least_squares

from ..io.volume import Volume
from ..runtime.job import computed_in_order
from ..runtime.settings import AlignSettings
from .signals import pair_shift, slice_planes, spectrum, tracking_signal

MAX_STEP_DEG = 1.0  # a larger rotation between neighbouring slices is an outlier
# Pairs two or more slices apart decorrelate on fine structure and lean towards the fixed
# pattern of the detector (a zero shift): they weigh 1/16 of a neighbour pair, enough to
# bridge a neighbour pair that disagrees with them by far, too little to bend the chain.
LONGER_LAG_PENALTY = 4.0
CURVATURE_WEIGHT = 1e-3  # on the positions' second differences: only bridges dropped pairs


def check_roi(
    roi: tuple[int, int, int, int] | None, shape: tuple[int, int], where: str = "align.roi"
) -> None:
    """A clear error for an alignment region that does not lie inside the slice."""
    if roi is None:
        return
    y, x, height, width = roi
    slice_h, slice_w = shape
    if height < 16 or width < 16:
        raise ValueError(
            f"{where} = [y, x, height, width] = {list(roi)} is smaller than 16 x 16 pixels: "
            "give a region that holds the whole mark with a margin for the drift"
        )
    if y < 0 or x < 0 or y + height > slice_h or x + width > slice_w:
        raise ValueError(
            f"{where} = [y, x, height, width] = {list(roi)} lies outside the slice of "
            f"{slice_h} x {slice_w} pixels: it needs 0 <= y, y + height <= {slice_h}, "
            f"0 <= x and x + width <= {slice_w}"
        )


def register_to_previous(
    volume: Volume | np.ndarray, transformation: int = StackReg.RIGID_BODY
) -> np.ndarray:
    """Cumulative transforms (z, 3, 3), each slice registered to the previous one: rigid
    (rule align, §3.1) or another pystackreg `transformation` (`StackReg.TRANSLATION`).

    The matrices map output to input coordinates in (x, y) order, as pystackreg's and
    scikit-image's `warp` expect; slice 0 is the identity (the reference frame). `volume` is
    a `Volume` or an array (z, y, x) of the same values: both give the same transforms.
    """
    planes = (plane.astype(np.float64) for plane in slice_planes(volume))
    registration = StackReg(transformation)
    transforms = np.repeat(np.eye(3)[None], len(volume), axis=0)
    previous = next(planes)
    for z, current in enumerate(planes, start=1):
        step = registration.register(previous, current)
        transforms[z] = step @ transforms[z - 1]
        previous = current
    return transforms


def rigid_pair(reference: np.ndarray, moving: np.ndarray) -> tuple[float, np.ndarray]:
    """Rotation (radians, about the slice centre) and centre displacement (dx, dy) of `moving`
    against `reference`, by pystackreg's rigid body."""
    matrix = StackReg(StackReg.RIGID_BODY).register(reference, moving)
    centre = np.array([(reference.shape[1] - 1) / 2, (reference.shape[0] - 1) / 2, 1.0])
    angle = float(np.arctan2(matrix[1, 0], matrix[0, 0]))
    return angle, (matrix @ centre)[:2] - centre[:2]


def measure_pairs(
    volume: Volume | np.ndarray, settings: AlignSettings, threads: int = 1
) -> pd.DataFrame:
    """One row per compared pair (z, ref = an earlier slice): the measured displacement
    (dx, dy, and the rotation `dangle` in radians for the rigid model)."""

    def signal_of(plane: np.ndarray) -> np.ndarray:
        signal = tracking_signal(plane, settings.band_px, settings.roi)
        return signal if settings.model == "rigid" else spectrum(signal)

    signals: dict[int, np.ndarray] = {}
    rows = []
    for z, signal in enumerate(computed_in_order(signal_of, slice_planes(volume), threads)):
        signals[z] = signal
        refs = [z - lag for lag in range(1, settings.lags + 1) if z - lag >= 0]
        if settings.roi is not None and z > 0 and 0 not in refs:
            refs.append(0)  # a mark that does not change: every slice to the first
        for ref in refs:
            if settings.model == "rigid":
                angle, (dx, dy) = rigid_pair(signals[ref], signals[z])
            else:
                shift = pair_shift(signals[ref], signals[z], settings.upsample, "fourier", threads)
                angle, (dx, dy) = 0.0, shift
            rows.append({"z": z, "ref": ref, "dx": dx, "dy": dy, "dangle": angle})
        for old in [k for k in signals if k < z - settings.lags and k != 0]:
            del signals[old]
    return pd.DataFrame(rows, columns=["z", "ref", "dx", "dy", "dangle"])


@dataclass(frozen=True)
class Solution:
    """Positions (z,) of one coordinate (position 0 is 0) and, per pair, its residual, its
    noise scale, and whether it entered the solve."""

    positions: np.ndarray
    residual: np.ndarray
    scale: np.ndarray
    used: np.ndarray


def solve_positions(
    n: int,
    z: np.ndarray,
    ref: np.ndarray,
    measured: np.ndarray,
    max_step: float,
    floor: float = 0.05,
    reference_pairs: bool = False,
) -> Solution:
    """Positions p (p[0] = 0) that best explain the pairs' p[z] - p[ref] = measured.

    Robust least squares: each pair's residual is divided by its group's noise (the
    residuals' median absolute deviation, re-estimated twice, at least `floor`; groups:
    neighbours, longer lags, whose noise is taken LONGER_LAG_PENALTY times larger, and, with
    `reference_pairs`, the pairs to slice 0) and goes through a Cauchy loss, so a pair that
    disagrees with the others by far weighs almost nothing: the longer lags then bridge it.
    Pairs whose step exceeds `max_step` per slice of lag are left out. A tiny weight on p's
    second differences (CURVATURE_WEIGHT) interpolates a slice whose pairs were all left out
    from its neighbours."""
    z, ref = np.asarray(z, dtype=int), np.asarray(ref, dtype=int)
    measured = np.asarray(measured, dtype=np.float64)
    lag = z - ref
    used = np.abs(measured) <= max_step * lag
    residual, scale = np.full(len(z), np.nan), np.full(len(z), floor)
    if n == 1:
        return Solution(np.zeros(1), residual, scale, used)
    pairs = np.zeros((len(z), n))
    pairs[np.arange(len(z)), z] = 1.0
    pairs[np.arange(len(z)), ref] = -1.0
    pairs = pairs[used][:, 1:]  # p[0] = 0
    # noise groups: neighbours, longer lags, and pairs to slice 0 (a mark that does not change)
    group = (
        np.where(ref == 0, 2, np.minimum(lag, 2) - 1) if reference_pairs else np.minimum(lag, 2) - 1
    )
    target, group_used = measured[used], group[used]
    curvature = np.zeros((max(n - 2, 0), n))
    for k in range(n - 2):
        curvature[k, k : k + 3] = (1.0, -2.0, 1.0)
    curvature = CURVATURE_WEIGHT * curvature[:, 1:]
    estimate = np.linalg.lstsq(
        np.vstack([pairs, curvature]),
        np.concatenate([target, np.zeros(len(curvature))]),
        rcond=None,
    )[0]
    pair_scale = np.full(len(target), floor)
    for _ in range(3):
        fit = least_squares(
            lambda p, s=pair_scale: np.concatenate([(pairs @ p - target) / s, curvature @ p]),
            estimate,
            jac=lambda p, s=pair_scale: np.vstack([pairs / s[:, None], curvature]),
            loss="cauchy",
            f_scale=2.0,
        )
        estimate = fit.x
        residual_used = pairs @ estimate - target
        for k in np.unique(group_used):
            of_group = group_used == k
            noise = 1.4826 * np.median(np.abs(residual_used[of_group]))
            pair_scale[of_group] = max(noise, floor) * (LONGER_LAG_PENALTY if k == 1 else 1.0)
    residual[used], scale[used] = residual_used, pair_scale
    return Solution(np.concatenate([[0.0], estimate]), residual, scale, used)


def split_halves(
    volume: Volume | np.ndarray, settings: AlignSettings, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring slices' displacements (z - 1, 2) measured on each half of the
    registration region (split across its longer axis), independently: where the stack does
    not move, the halves' steps are independent noise; where it drifts, they agree."""
    y, x, height, width = settings.roi or (0, 0, *volume.shape[1:])
    if width >= height:
        halves = [(y, x, height, width // 2), (y, x + width // 2, height, width - width // 2)]
    else:
        halves = [(y, x, height // 2, width), (y + height // 2, x, height - height // 2, width)]

    def spectra_of(plane: np.ndarray) -> list[np.ndarray]:
        return [spectrum(tracking_signal(plane, settings.band_px, half)) for half in halves]

    steps = np.zeros((2, len(volume) - 1, 2))
    previous = None
    for z, current in enumerate(computed_in_order(spectra_of, slice_planes(volume), threads)):
        if previous is not None:
            for h in range(2):
                steps[h, z - 1] = pair_shift(
                    previous[h], current[h], settings.upsample, "fourier", threads
                )
        previous = current
    return steps[0], steps[1]


@dataclass(frozen=True)
class DriftTest:
    """How far the two halves' neighbour steps agree beyond their noise: `energy_z`, the
    z-score of the log ratio of their half sum's to their half difference's energy (F
    under no drift), `mean_z`, the mean half-sum step over its standard error, and
    `step_sigma` (x, y), the noise of one step (the half difference's robust spread)."""

    energy_z: float
    mean_z: float
    step_sigma: np.ndarray


def drift_test(first: np.ndarray, second: np.ndarray, max_step: float) -> DriftTest:
    """The drift test on the two halves' (z - 1, 2) steps; a step over `max_step` in either
    half (an outlier, not drift) is left out."""
    kept = (np.abs(first) <= max_step).all(axis=1) & (np.abs(second) <= max_step).all(axis=1)
    common, difference = (first[kept] + second[kept]) / 2, (first[kept] - second[kept]) / 2
    if len(common) == 0:
        return DriftTest(0.0, 0.0, np.zeros(2))
    noise_energy = max(float(np.sum(difference**2)), 1e-12)
    dof = difference.size
    energy_z = float(np.log(max(np.sum(common**2), 1e-12) / noise_energy) * np.sqrt(dof) / 2)
    standard_error = np.sqrt(noise_energy / dof / len(common))
    mean_z = float(np.hypot(*common.mean(axis=0)) / standard_error)
    step_sigma = 1.4826 * np.median(np.abs(difference), axis=0)
    return DriftTest(energy_z, mean_z, step_sigma)


def rigid_matrices(
    angles: np.ndarray, centre_shift: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """(z, 3, 3) matrices (output to input, x-y order) of rotations about the slice centre
    followed by the centre's displacement."""
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
    matrices = np.repeat(np.eye(3)[None], len(angles), axis=0)
    for k, (angle, shift) in enumerate(zip(angles, centre_shift, strict=True)):
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrices[k, :2, :2] = rotation
        matrices[k, :2, 2] = centre + shift - rotation @ centre
    return matrices


@dataclass(frozen=True)
class Alignment:
    """The transforms (z, 3, 3; output to input coordinates, x-y order, slice 0 the identity)
    and the per-slice and per-pair report of a registration."""

    transforms: np.ndarray
    slices: pd.DataFrame
    pairs: pd.DataFrame
    drift_detected: bool
    statement: str
    drift_score: float = float("inf")  # the drift test's larger z-score (DriftTest)


def estimate_alignment(
    volume: Volume | np.ndarray, settings: AlignSettings | None = None, threads: int = 1
) -> Alignment:
    """Register a stack: `settings.method` joint (robust joint solve, this module) or
    previous (the paper's chain); the report says whether any drift rose above the noise.
    Slices are filtered, and the Fourier transforms run, on `threads` threads."""
    settings = settings or AlignSettings()
    n = len(volume)
    shape = tuple(volume.shape[1:])
    check_roi(settings.roi, shape)
    if settings.method == "previous":
        model = StackReg.RIGID_BODY if settings.model == "rigid" else StackReg.TRANSLATION
        transforms = register_to_previous(volume, model)
        slices = pd.DataFrame({"z": np.arange(n)})
        statement = "each slice registered to the previous one (no drift test)"
        return Alignment(transforms, slices, pd.DataFrame(), True, statement)
    pairs = measure_pairs(volume, settings, threads)
    columns = [("x", "dx", settings.max_step_px), ("y", "dy", settings.max_step_px)]
    if settings.model == "rigid":
        columns.append(("angle", "dangle", np.deg2rad(MAX_STEP_DEG)))
    solutions = {
        axis: solve_positions(
            n,
            pairs.z.to_numpy(),
            pairs.ref.to_numpy(),
            pairs[column].to_numpy(),
            max_step,
            floor=0.05 if axis != "angle" else np.deg2rad(0.005),
            reference_pairs=settings.roi is not None,
        )
        for axis, column, max_step in columns
    }
    shift = np.stack([solutions["x"].positions, solutions["y"].positions], axis=1)
    angles = solutions["angle"].positions if "angle" in solutions else np.zeros(n)
    if n > 1:
        test = drift_test(*split_halves(volume, settings, threads), settings.max_step_px)
    else:
        test = DriftTest(0.0, 0.0, np.zeros(2))
    largest = float(np.hypot(shift[:, 0], shift[:, 1]).max())
    drift_score = max(test.energy_z, test.mean_z)
    drift_detected = drift_score > settings.still_sigmas
    noise_text = (
        f"largest displacement {largest:.2f} px; the two halves' steps agree at z = "
        f"{test.energy_z:.1f} (energy) and {test.mean_z:.1f} (mean step) against "
        f"still_sigmas {settings.still_sigmas:g} (steps +- {test.step_sigma[0]:.2f} / "
        f"{test.step_sigma[1]:.2f} px in x / y)"
    )
    if drift_detected:
        statement = f"drift above the noise: {noise_text}"
    else:
        statement = f"no drift above the noise: {noise_text}"
        if settings.still:
            statement += "; the slices keep their pixels"
    keep_still = settings.still and not drift_detected
    applied_shift = np.zeros_like(shift) if keep_still else shift
    applied_angles = np.zeros_like(angles) if keep_still else angles
    transforms = rigid_matrices(applied_angles, applied_shift, shape)
    slices = pd.DataFrame(
        {
            "z": np.arange(n),
            "position_x": shift[:, 0],
            "position_y": shift[:, 1],
            "step_x": np.diff(shift[:, 0], prepend=0.0),
            "step_y": np.diff(shift[:, 1], prepend=0.0),
            "step_sigma_x": np.where(np.arange(n) > 0, test.step_sigma[0], 0.0),
            "step_sigma_y": np.where(np.arange(n) > 0, test.step_sigma[1], 0.0),
            "position_angle_deg": np.degrees(angles),
        }
    )
    report = pairs.assign(
        residual_x=solutions["x"].residual,
        residual_y=solutions["y"].residual,
        noise_x=solutions["x"].scale,
        noise_y=solutions["y"].scale,
        used=solutions["x"].used & solutions["y"].used,
    )
    return Alignment(transforms, slices, report, drift_detected, statement, drift_score)
