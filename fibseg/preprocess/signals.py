"""What rule align's registration compares (fibseg.preprocess.registration): a slice's
tracking signal (column means removed, a band of the structure, the edges tapered), its
Fourier transform, computed once per slice, and the sub-pixel shift between two of them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage as ndi
from scipy.signal.windows import tukey
from skimage.registration import phase_cross_correlation

from ..io.volume import Volume

EDGE_TAPER = 0.1  # Tukey window: the fraction of each axis tapered (half at each end)


def slice_planes(volume: Volume | np.ndarray) -> Iterator[np.ndarray]:
    """Each slice of a stack, read in order."""
    for z in range(len(volume)):
        yield volume[z] if isinstance(volume, np.ndarray) else volume.read(z, z + 1)[0]


def tracking_signal(
    image: np.ndarray,
    band_px: tuple[float, float] = (1.0, 8.0),
    roi: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """What registration compares: the slice (or its `roi`) with each column's mean removed,
    band-passed by a difference of Gaussians and its outer 5 % tapered (Tukey window)."""
    image = np.asarray(image, dtype=np.float64)
    if roi is not None:
        y, x, height, width = roi
        image = image[y : y + height, x : x + width]
    image = image - image.mean(axis=0, keepdims=True)
    fine, coarse = band_px
    band = ndi.gaussian_filter(image, fine) - ndi.gaussian_filter(image, coarse)
    window = np.outer(tukey(band.shape[0], EDGE_TAPER), tukey(band.shape[1], EDGE_TAPER))
    return band * window


def spectrum(signal: np.ndarray) -> np.ndarray:
    """The Fourier transform `pair_shift` compares: once per slice, for all its pairs."""
    return sp_fft.fftn(signal)


def pair_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    upsample: int = 20,
    space: str = "real",
    workers: int = 1,
) -> np.ndarray:
    """(dx, dy) of `moving` against `reference`: moving(x + dx, y + dy) shows what
    reference(x, y) shows. With `space="fourier"`, both are `spectrum`s of the signals; the
    inverse transform runs on `workers` threads."""
    with sp_fft.set_workers(workers):
        shift, _, _ = phase_cross_correlation(
            reference, moving, upsample_factor=upsample, normalization=None, space=space
        )
    return -shift[::-1]
