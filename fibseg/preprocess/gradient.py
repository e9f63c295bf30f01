"""Removal of the x intensity gradient of §3.1: every slice scaled to [0, 1], the line fitted
through the column means subtracted and its mean added back."""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..io.atomic import atomic_output
from ..io.volume import Volume
from ..io.voxel_size import hdf5_axes
from ..io.writers import compression


def intensity_scale(dtype: np.dtype) -> float:
    """Divisor that maps the stored intensities to [0, 1]."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def column_means(volume: Volume) -> np.ndarray:
    """Mean intensity in [0, 1] of every x column over all slices and rows."""
    scale = intensity_scale(volume.dtype)
    total = np.zeros(volume.shape[2])
    for z in range(len(volume)):
        image = volume.read(z, z + 1)[0].astype(np.float64) / scale
        total += image.sum(axis=0)  # NaN/Inf were ruled out by rule check_dataset
    return total / (volume.shape[0] * volume.shape[1])


def fit_gradient(means: np.ndarray) -> tuple[float, float]:
    """Least-squares line (slope per pixel, intercept) through the column means."""
    slope, intercept = np.polyfit(np.arange(means.size, dtype=np.float64), means, 1)
    return float(slope), float(intercept)


def correct_gradient(
    volume: Volume, output_h5: str | os.PathLike, voxel_size_nm: tuple[float, float, float]
) -> dict[str, float]:
    """Scale to [0, 1], subtract the fitted x line, add its mean back (§3.1), write float32
    (compressed, with `element_size_um`)."""
    means = column_means(volume)
    slope, intercept = fit_gradient(means)
    x = np.arange(volume.shape[2], dtype=np.float64)
    line = slope * x + intercept
    correction = (line - line.mean()).astype(np.float32)
    scale = intensity_scale(volume.dtype)
    clipped = 0
    with atomic_output(output_h5) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_dataset(
            "volume",
            shape=volume.shape,
            dtype=np.float32,
            chunks=(1, *volume.shape[1:]),
            **compression(volume.shape),
        )
        data.attrs.update(hdf5_axes(voxel_size_nm))
        for z in range(len(volume)):
            image = volume.read(z, z + 1)[0].astype(np.float32) / np.float32(scale)
            image -= correction[None, :]
            clipped += int(np.count_nonzero((image < 0) | (image > 1)))
            data[z] = np.clip(image, 0, 1)
        summary = {
            "slope_per_px": slope,
            "intercept": intercept,
            "line_mean": float(line.mean()),
            "clipped_voxels": clipped,
        }
        handle.attrs.update(summary)
        handle.attrs["voxel_size_nm_zyx"] = np.asarray(voxel_size_nm, dtype=np.float64)
    return summary
