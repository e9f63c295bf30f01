"""Alignment of §3.1 applied: the per-slice transforms as a table, and the resampling of a
volume and of its labels onto slice 0 (fibseg.preprocess.registration estimates them)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
from skimage.transform import AffineTransform, warp

from ..io.atomic import atomic_output
from ..io.volume import Volume
from ..io.voxel_size import hdf5_axes
from ..io.writers import compression
from ..runtime.settings import AlignSettings
from .registration import Alignment, estimate_alignment


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
    threads: int = 1,
) -> Alignment:
    """Align every slice to slice 0 (`fibseg.preprocess.registration.estimate_alignment`) and write
    `/volume` (input dtype, compressed, with `element_size_um` of `voxel_nm`) to an HDF5
    file; slices that the alignment leaves in place are copied, not resampled. The
    registration's Fourier transforms run on `threads` threads."""
    alignment = estimate_alignment(volume, settings or AlignSettings(), threads)
    transforms = alignment.transforms
    with atomic_output(output_h5) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_dataset(
            "volume",
            shape=volume.shape,
            dtype=volume.dtype,
            chunks=(1, *volume.shape[1:]),
            **compression(volume.shape),
        )
        data.attrs.update(hdf5_axes(voxel_nm))
        for z in range(len(volume)):
            plane = volume.read(z, z + 1)[0]
            identity = np.allclose(transforms[z], np.eye(3), rtol=0, atol=1e-9)
            data[z] = plane if identity else apply_transform(plane, transforms[z])
    return alignment
