import numpy as np
import pytest
import tifffile
from pystackreg import StackReg
from scipy import ndimage as ndi
from skimage.transform import AffineTransform, warp

from fibseg.demo.synth import SynthSpec, synthesize
from fibseg.io.volume import Volume
from fibseg.preprocess.alignment import align_volume, transforms_table
from fibseg.preprocess.gradient import column_means, correct_gradient, fit_gradient
from fibseg.preprocess.registration import register_to_previous
from fibseg.runtime.settings import AlignSettings


def moved_stack(rng, slices=8, size=160, max_degrees=1.0):
    """Slices of one textured image, each moved by a random rigid motion of the image."""
    base = ndi.gaussian_filter(rng.random((size + 64, size + 64)), 3)
    base = (base - base.min()) / np.ptp(base)
    centre = np.array([(size + 63) / 2] * 2)
    truths, images = [], []
    for z in range(slices):
        angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees)) if z else 0.0
        shift = rng.uniform(-5, 5, 2) if z else np.zeros(2)
        matrix = (
            AffineTransform(translation=-centre)
            + AffineTransform(rotation=angle)
            + AffineTransform(translation=centre + shift)
        ).params
        moved = warp(base, AffineTransform(matrix=matrix), order=3, mode="edge")
        images.append(moved[32:-32, 32:-32])
        truths.append(matrix)
    return np.stack(images), truths


def test_paper_alignment_recovers_known_rigid_motion(tmp_path):
    """The paper's registration (config/paper.yaml: align.method previous, model rigid)."""
    rng = np.random.default_rng(0)
    stack, truths = moved_stack(rng)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, (stack * 60000).astype(np.uint16))
    paper = AlignSettings(method="previous", model="rigid")
    with Volume(str(path)) as volume:
        table = transforms_table(
            align_volume(volume, tmp_path / "aligned.h5", None, paper).transforms
        )
    with Volume(str(tmp_path / "aligned.h5")) as aligned:
        result = aligned.read().astype(float) / 60000
    # Where slice z sends the grid points, from the estimated and the true motion.
    yy, xx = np.mgrid[0:160:10, 0:160:10]
    grid = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    shift = np.array([[1, 0, 32], [0, 1, 32], [0, 0, 1.0]])
    errors = []
    for z, truth in enumerate(truths):
        estimated = table.loc[z, ["m00", "m01", "m02", "m10", "m11", "m12"]].to_numpy()
        estimated = np.vstack([estimated.reshape(2, 3), [0, 0, 1]])
        expected = np.linalg.inv(np.linalg.inv(shift) @ truth @ shift)
        errors.append(((estimated @ grid - expected @ grid)[:2] ** 2).sum(0))
    rms = np.sqrt(np.mean(errors))
    assert rms < 0.5, rms
    inner = (slice(None), slice(16, -16), slice(16, -16))
    assert np.abs(result[inner] - stack[0][inner[1:]][None]).mean() < 0.01


def test_translation_registration_recovers_shifts_and_rotates_nothing():
    """`StackReg.TRANSLATION` (an option of `register_to_previous`, not rule align's
    default): pure shifts (±5 px) come back within 0.25 px, with no rotation or scaling."""
    stack, truths = moved_stack(np.random.default_rng(1), max_degrees=0.0)
    transforms = register_to_previous(stack, StackReg.TRANSLATION)
    np.testing.assert_allclose(transforms[:, :2, :2], np.broadcast_to(np.eye(2), (8, 2, 2)))
    # slice z shows the base at truth @ p, so its aligned copy reads it at truth^-1 @ p
    expected = np.array([-truth[:2, 2] for truth in truths])
    assert np.abs(transforms[:, :2, 2] - expected).max() < 0.25


def test_default_alignment_keeps_a_still_stack_as_acquired(tmp_path):
    """No drift above the noise: every aligned slice is the acquired one, voxel for voxel
    (no resampling blur); a drifting stack is resampled."""
    for drift, still in (("none", True), ("walk", False)):
        volume = synthesize(SynthSpec(0.3, slices=12, seed=6, drift=drift, drift_px=1.0))["volume"]
        path = tmp_path / f"{drift}.tif"
        tifffile.imwrite(path, volume)
        with Volume(str(path)) as stack:
            alignment = align_volume(stack, tmp_path / f"{drift}.h5")
        with Volume(str(tmp_path / f"{drift}.h5")) as aligned:
            same = np.array_equal(aligned.read(), volume)
        assert same == still and alignment.drift_detected != still, alignment.statement


@pytest.mark.parametrize("slope", [2e-4, -5e-4])
def test_gradient_correction_recovers_slope_and_keeps_mean(tmp_path, slope):
    rng = np.random.default_rng(1)
    width = 300
    texture = ndi.gaussian_filter(rng.standard_normal((5, 80, width)), (0, 2, 2))
    texture -= texture.mean(axis=(0, 1))  # flat column means: the only slope is `slope`
    flat = 0.45 + 0.1 * texture
    ramp = slope * (np.arange(width) - width / 2)
    stack = np.clip(flat + ramp, 0, 1)
    path = tmp_path / "grad.tif"
    tifffile.imwrite(path, (stack * 65535).round().astype(np.uint16))
    with Volume(str(path)) as volume:
        fitted, _ = fit_gradient(column_means(volume))
        summary = correct_gradient(volume, tmp_path / "pre.h5", (50, 10, 10))
    assert abs(fitted - slope) < 0.01 * abs(slope)
    assert summary["slope_per_px"] == pytest.approx(fitted)
    with Volume(str(tmp_path / "pre.h5")) as pre:
        corrected = pre.read()
        assert pre.dtype == np.float32 and pre._data.chunks == (1, 80, width)
    original = stack.mean()
    assert corrected.mean() == pytest.approx(original, abs=1e-4)
    residual, _ = fit_gradient(corrected.mean(axis=(0, 1)))
    assert abs(residual) < 0.01 * abs(slope)
