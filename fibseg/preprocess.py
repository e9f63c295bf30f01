"""Pre-processing of §3.1: alignment (fibseg.registration estimates it; here the paper's
previous-slice StackReg chain and the resampling) and removal of the x intensity gradient."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
from skimage.transform import AffineTransform, warp

from .io import Volume, atomic_output, compression, element_size_um
from .registration import Alignment, AlignSettings, estimate_alignment


def transforms_table(transforms: np.ndarray) -> pd.DataFrame:
    """One row per slice: translation (px), rotation (degrees) and the matrix entries."""
    return pd.DataFrame(
        {
            "z": np.arange(len(transforms)),
            "tx": transforms[:, 0, 2],
            "ty": transforms[:, 1, 2],
            "angle_deg": np.degrees(np.arctan2(transforms[:, 1, 0], transforms[:, 0, 0])),
            **{f"m{r}{c}": transforms[:, r, c] for r in range(2) for c in range(3)},
        }
    )


def transforms_from_table(table: pd.DataFrame) -> np.ndarray:
    """The (z, 3, 3) matrices of an alignment.csv (`transforms_table`'s inverse)."""
    transforms = np.repeat(np.eye(3)[None], len(table), axis=0)
    for r in range(2):
        for c in range(3):
            transforms[:, r, c] = table[f"m{r}{c}"].to_numpy(np.float64)
    return transforms


def align_labels(labels: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """A label volume (z, y, x) moved by the slices' alignment transforms, nearest neighbour
    (no new label values); what comes in from outside the slice is 0 (unlabelled)."""
    if len(labels) != len(transforms):
        raise ValueError(f"{len(labels)} label slices but {len(transforms)} transforms")
    moved = np.empty_like(labels)
    for z, (plane, matrix) in enumerate(zip(labels, transforms, strict=True)):
        moved[z] = warp(
            plane,
            AffineTransform(matrix=matrix),
            order=0,
            mode="constant",
            cval=0,
            preserve_range=True,
        ).astype(labels.dtype)
    return moved


def apply_transform(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resample one slice into the reference frame; uncovered borders repeat the edge."""
    moved = warp(
        image.astype(np.float64),
        AffineTransform(matrix=matrix),
        order=3,
        mode="edge",
        preserve_range=True,
    )
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(moved), info.min, info.max).astype(image.dtype)
    return moved.astype(image.dtype)


def align_volume(
    volume: Volume,
    output_h5: str | os.PathLike,
    voxel_nm: tuple[float, float, float] | None = None,
    settings: AlignSettings | None = None,
) -> Alignment:
    """Align every slice to slice 0 (`fibseg.registration.estimate_alignment`) and write
    `/volume` (input dtype, compressed, with `element_size_um` of `voxel_nm`) to an HDF5
    file; slices that the alignment leaves in place are copied, not resampled."""
    alignment = estimate_alignment(volume, settings or AlignSettings())
    transforms = alignment.transforms
    with atomic_output(output_h5) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_dataset(
            "volume",
            shape=volume.shape,
            dtype=volume.dtype,
            chunks=(1, *volume.shape[1:]),
            **compression(volume.shape),
        )
        data.attrs.update(element_size_um(voxel_nm))
        for z in range(len(volume)):
            plane = volume.read(z, z + 1)[0]
            identity = np.allclose(transforms[z], np.eye(3), rtol=0, atol=1e-9)
            data[z] = plane if identity else apply_transform(plane, transforms[z])
    return alignment


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
        data.attrs.update(element_size_um(voxel_size_nm))
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
