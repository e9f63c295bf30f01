"""Rule align's default registration (fibseg.preprocess.registration): the joint solve, its outlier
handling, the drift test, the alignment region, and the simulator's kinds of drift."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

from fibseg.demo.synth import FIDUCIAL_ROWS, SynthSpec, drift_path, synthesize
from fibseg.preprocess.registration import (
    check_roi,
    estimate_alignment,
    pair_shift,
    solve_positions,
    spectrum,
    tracking_signal,
)
from fibseg.runtime.settings import AlignSettings


def textured_stack(shifts: np.ndarray, size: int = 128, seed: int = 0) -> np.ndarray:
    """Slices of one smooth random texture, slice z showing it moved by shifts[z] (dx, dy):
    slice z at (x + dx, y + dy) shows what the texture shows at (x, y)."""
    rng = np.random.default_rng(seed)
    base = ndi.gaussian_filter(rng.standard_normal((size + 40, size + 40)), 2.5)
    planes = [ndi.shift(base, (dy, dx), order=3, mode="reflect") for dx, dy in shifts]
    return np.stack([p[20:-20, 20:-20] for p in planes]).astype(np.float32)


def corner_residual_px(drift: np.ndarray, transforms: np.ndarray, shape) -> np.ndarray:
    """Per slice, the largest distance over the 4 corners between where the aligned slice
    shows the sample and where slice 0's frame puts it."""
    height, width = shape
    corners = np.array(
        [[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1.0]]
    ).T
    moved = np.einsum("zij,jp->zip", drift @ transforms, corners)
    return np.hypot(*(moved[:, :2] - corners[None, :2]).transpose(1, 0, 2)).max(axis=1)


def test_joint_solve_recovers_known_shifts():
    rng = np.random.default_rng(3)
    shifts = np.cumsum(rng.uniform(-2, 2, size=(10, 2)), axis=0)
    shifts[0] = 0
    alignment = estimate_alignment(textured_stack(shifts), AlignSettings(still=False))
    # the aligned slice z reads the acquired one at p + shift: translation = shifts[z]
    np.testing.assert_allclose(
        alignment.transforms[:, :2, :2], np.broadcast_to(np.eye(2), (10, 2, 2))
    )
    assert np.abs(alignment.transforms[:, :2, 2] - shifts).max() < 0.25
    assert alignment.drift_detected


def exact_pairs(positions: np.ndarray, lags: int):
    """Every pair up to `lags` apart, with its exact displacement."""
    pairs = [(k, k - lag) for k in range(1, len(positions)) for lag in range(1, lags + 1)]
    z, ref = np.array([p for p in pairs if p[1] >= 0]).T
    return z, ref, positions[z] - positions[ref]


@pytest.mark.parametrize("error", [3.0, 40.0])
def test_one_bad_pair_moves_no_other_slice(error):
    """A neighbour pair wrong by 3 px (a plausible step) or 40 px (dropped as implausible):
    with the pairs two slices apart the solve keeps every slice in place; a chain of
    neighbour pairs alone carries a plausible error to every later slice."""
    positions = np.cumsum(np.random.default_rng(0).normal(0, 0.6, 20))
    positions -= positions[0]
    z, ref, measured = exact_pairs(positions, lags=2)
    bad = np.flatnonzero((z == 9) & (ref == 8))[0]
    measured[bad] += error
    solution = solve_positions(20, z, ref, measured, max_step=5.0)
    assert np.abs(solution.positions - positions).max() < 0.05
    assert solution.used[bad] == (error < 5.0)
    z1, ref1, measured1 = exact_pairs(positions, lags=1)
    measured1[8] += 3.0  # pair (9, 8)
    chain = solve_positions(20, z1, ref1, measured1, max_step=5.0)
    np.testing.assert_allclose(chain.positions[9:] - positions[9:], 3.0, atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stack_that_never_drifted_stays_put(seed):
    """The demo generator without drift: no pixel moves by more than 1 px, no slice turns
    (the paper's chain moves such stacks by up to 15 px, benchmarks/alignment_error.py)."""
    data = synthesize(SynthSpec(0.3, seed=seed, drift="none"))
    alignment = estimate_alignment(data["volume"])
    residual = corner_residual_px(data["drift"], alignment.transforms, data["volume"].shape[1:])
    assert residual.max() <= 1.0, alignment.statement
    angles = np.degrees(np.arctan2(alignment.transforms[:, 1, 0], alignment.transforms[:, 0, 0]))
    assert np.abs(angles).max() <= 0.1
    assert not alignment.drift_detected and "no drift above the noise" in alignment.statement


def test_spectra_computed_once_give_the_real_space_shift():
    """A slice's Fourier transform, computed once and reused in each of its pairs, gives the
    shift phase correlation finds on the two slices themselves."""
    stack = [tracking_signal(p) for p in textured_stack(np.array([[0.0, 0.0], [1.35, -2.6]]))]
    expected = -phase_cross_correlation(stack[0], stack[1], upsample_factor=20, normalization=None)[
        0
    ][::-1]
    reused = pair_shift(spectrum(stack[0]), spectrum(stack[1]), 20, space="fourier")
    np.testing.assert_allclose(reused, expected, atol=1e-9)
    np.testing.assert_allclose(reused, [1.35, -2.6], atol=0.1)


@pytest.mark.parametrize("roi", [None, (8, 8, 100, 112)])
def test_threads_give_the_same_registration(roi):
    """Slices filtered on a thread pool, transforms on two workers: the pairs, the drift test
    and the transforms equal the single-threaded ones."""
    rng = np.random.default_rng(5)
    shifts = np.cumsum(rng.uniform(-1.5, 1.5, size=(9, 2)), axis=0)
    shifts[0] = 0
    stack = textured_stack(shifts, seed=2)
    one = estimate_alignment(stack, AlignSettings(roi=roi), threads=1)
    two = estimate_alignment(stack, AlignSettings(roi=roi), threads=2)
    np.testing.assert_allclose(two.pairs[["dx", "dy"]], one.pairs[["dx", "dy"]], atol=1e-9)
    assert two.pairs[["z", "ref"]].equals(one.pairs[["z", "ref"]])
    np.testing.assert_allclose(two.transforms, one.transforms, atol=1e-9)
    assert two.drift_score == pytest.approx(one.drift_score, rel=1e-9)
    assert one.drift_detected


def test_a_drifting_stack_is_found_to_drift_and_followed():
    data = synthesize(SynthSpec(0.3, seed=4, drift="trend", drift_px=0.6, drift_deg=0.0))
    alignment = estimate_alignment(data["volume"])
    residual = corner_residual_px(data["drift"], alignment.transforms, data["volume"].shape[1:])
    unaligned = corner_residual_px(data["drift"], np.eye(3)[None], data["volume"].shape[1:])
    assert alignment.drift_detected, alignment.statement
    assert residual.mean() < 0.25 * unaligned.mean() and residual.mean() < 2.0, residual
    assert (alignment.slices.step_sigma_x[1:] > 0).all()  # each step with its uncertainty


def test_alignment_region_on_a_fiducial():
    """Registered on a mark that does not change, every slice lands within 0.3 px; on the
    whole slice (the sample's structure changes), less well."""
    spec = SynthSpec(0.3, seed=10, drift="trend", drift_px=0.3, drift_deg=0.0, fiducial=True)
    data = synthesize(spec)
    roi = (4, spec.width // 2 - 64, FIDUCIAL_ROWS - 8, 128)
    # the mark (radius 14 around row FIDUCIAL_ROWS / 2) stays inside the region on every slice
    assert np.abs(data["drift"][:, 1, 2]).max() < FIDUCIAL_ROWS / 2 - 4 - 15
    assert np.abs(data["drift"][:, 0, 2]).max() < 64 - 15
    alignment = estimate_alignment(data["volume"], AlignSettings(roi=roi, band_px=(0.5, 4.0)))
    residual = corner_residual_px(data["drift"], alignment.transforms, data["volume"].shape[1:])
    whole = estimate_alignment(data["volume"], AlignSettings())
    whole_residual = corner_residual_px(data["drift"], whole.transforms, data["volume"].shape[1:])
    assert residual.max() <= 0.3, residual
    assert residual.mean() < whole_residual.mean()
    assert (alignment.pairs.ref == 0).sum() == spec.slices - 1  # every slice to the first


@pytest.mark.parametrize(
    ("roi", "message"),
    [
        ((200, 0, 80, 64), "y + height <= 256"),
        ((0, -4, 32, 32), "0 <= x"),
        ((0, 0, 8, 64), "16 x 16"),
    ],
)
def test_an_alignment_region_outside_the_slice_is_a_clear_error(roi, message):
    with pytest.raises(ValueError, match="align.roi") as error:
        check_roi(roi, (256, 300), "align.roi (data set HPC22, volume stack.tif)")
    assert message in str(error.value)
    assert "HPC22" in str(error.value) and "stack.tif" in str(error.value)
    with pytest.raises(ValueError, match="align.roi"):
        estimate_alignment(np.zeros((3, 256, 300), np.float32), AlignSettings(roi=roi))


def test_previous_slice_chain_stays_an_option():
    shifts = np.array([[0, 0], [1.5, -0.5], [3.0, 0.5], [2.0, 2.0]])
    alignment = estimate_alignment(
        textured_stack(shifts), AlignSettings(method="previous", model="translation")
    )
    assert np.abs(alignment.transforms[:, :2, 2] - shifts).max() < 0.25


def test_drift_kinds_of_the_simulator():
    spec = SynthSpec(0.3, slices=40, seed=9)
    none_shift, none_angle = drift_path(
        SynthSpec(**{**spec.__dict__, "drift": "none"}), np.random.default_rng(0)
    )
    assert not none_shift.any() and not none_angle.any()
    smooth = SynthSpec(**{**spec.__dict__, "drift": "trend", "jitter_px": 0.0, "drift_deg": 0.0})
    shift, angle = drift_path(smooth, np.random.default_rng(0))
    # a trend is slow: its second differences are constant and far below its steps
    curvature = np.diff(shift, 2, axis=0)
    np.testing.assert_allclose(curvature, curvature[:1].repeat(len(curvature), 0), atol=1e-12)
    assert np.abs(curvature).max() < 0.1 * np.abs(np.diff(shift, axis=0)).max()
    assert not angle.any()
    jittery = SynthSpec(**{**spec.__dict__, "drift": "trend"})
    shift_j, _ = drift_path(jittery, np.random.default_rng(0))
    assert 0.05 < np.std(np.diff(shift_j - shift, axis=0)) < 0.5
    with pytest.raises(ValueError, match="drift 'sideways'"):
        drift_path(SynthSpec(**{**spec.__dict__, "drift": "sideways"}), np.random.default_rng(0))
