"""Sizes on the analysis grid: local thickness (the diameter of the largest ball that fits
in the phase and covers the voxel), its distribution, and the pore-solid surface area."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def local_thickness(
    phase: np.ndarray, spacing: tuple[float, ...], max_radii: int = 40
) -> np.ndarray:
    """Diameter (nm) of the largest ball inside `phase` that covers each voxel; 0 outside.

    Balls of radius r are centred where the distance transform is ≥ r and dilated with a
    second distance transform (PoreSpy's `local_thickness_dt`), radius by radius from the
    largest, with radii in steps of the finest spacing (at most `max_radii` of them)."""
    thickness = np.zeros(phase.shape, np.float32)
    if not phase.any():
        return thickness
    distance = ndimage.distance_transform_edt(phase, sampling=spacing).astype(np.float32)
    step = min(spacing)
    steps = np.arange(1, math.floor(distance.max() / step + 1e-6) + 1)
    if len(steps) > max_radii:
        steps = np.unique(np.round(np.linspace(1, steps[-1], max_radii)))
    for radius in steps[::-1] * step:
        centres = distance >= radius - 1e-6 * step
        if not centres.any():
            continue
        covered = ndimage.distance_transform_edt(~centres, sampling=spacing) < radius
        thickness[covered & (thickness == 0)] = 2 * radius
    return thickness


def size_distribution(thickness: np.ndarray, phase: np.ndarray) -> dict:
    """Volume-weighted distribution of the local thickness over a phase: each diameter (nm)
    and the phase's volume fraction that has it, with the mean and the d10/d50/d90."""
    values = thickness[phase]
    if values.size == 0:
        nan = float("nan")
        return {"diameter_nm": [], "volume_fraction": [], "mean_nm": nan} | {
            f"d{q}_nm": nan for q in (10, 50, 90)
        }
    diameters, counts = np.unique(values, return_counts=True)
    return {
        "diameter_nm": diameters.astype(float).tolist(),
        "volume_fraction": (counts / values.size).tolist(),
        "mean_nm": float(values.mean(dtype=np.float64)),
    } | {f"d{q}_nm": float(np.percentile(values, q)) for q in (10, 50, 90)}


def surface_area(pore: np.ndarray, spacing: tuple[float, ...], slab: int = 64) -> float:
    """Area (nm²) of the pore-solid interface: marching cubes at 0.5 on the mask smoothed by
    a Gaussian of one voxel (binary voxels alone overestimate a ball's area by ~10 %), in
    slabs of planes that share their last plane with the next (their areas add up)."""
    from skimage.measure import marching_cubes, mesh_surface_area

    smooth = ndimage.gaussian_filter(pore.astype(np.float32), 1.0, mode="nearest")
    area = 0.0
    for start in range(0, max(1, pore.shape[0] - 1), slab):
        part = smooth[start : start + slab + 1]
        if part.shape[0] < 2 or part.min() >= 0.5 or part.max() <= 0.5:
            continue
        vertices, faces, _, _ = marching_cubes(part, 0.5, spacing=spacing)
        area += mesh_surface_area(vertices, faces)
    return float(area)
