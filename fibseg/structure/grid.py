"""The analysis grid of the pore-structure analysis: porosity on the native voxels, and
the near-isotropic grid everything else runs on.

How anisotropic voxels are handled: RESAMPLING to (near-)isotropic voxels. FIB-SEM voxels are
50 nm in z against 10 nm in x-y. Porosity and its profiles are counted on the native voxels
(exact). Everything else runs on an analysis grid of cubic voxels of side h, with per-axis
spacing extent / voxels (isotropic up to rounding; every function here takes that per-axis
spacing: scipy's EDT `sampling=`, MCP_Geometric's `sampling=`, the solver's face areas).
The grid is made by shape-based interpolation (Raya & Udupa 1990): each native slice's
signed distance to the interface (a 2-D EDT in nm, clipped at ± the native z step so that a
slice with no interface nearby cannot drag the next one's) is resampled bilinearly in x-y,
linearly between slices, and its sign is the phase. A pore that narrows from slice to slice
thus becomes a slope, not a 50 nm staircase; tests/test_structure.py checks a 45° tube and a
cavity sampled at 4:1 against 1:1. Why not anisotropic distance transforms on the native grid
alone: a 5:1 voxel turns local thickness into 50 nm steps in z and the marching-cubes area
of binary slices into staircases, and the native paper volume does not fit (next point;
docs/methods.md, "Pore structure").

Memory, and the full paper volume (200 × 2247 × 3372 voxels, 1.5e9): h is the finest side,
not finer than the finest native voxel, for which the analysis grid has at most
`max_voxels` voxels (or `voxel_nm` if set). Only the segmentation (1 byte per native voxel),
its pore mask and one slice at a time are held at native size; the analysis steps cost a
few hundred bytes per analysis voxel at their peak (docs/benchmarks.md), so the volume is
analysed by DOWNSAMPLING it to a grid that fits the job (config/paper.yaml).
The price is resolution: a feature thinner than about 2 h is lost, diameters come in steps
of at least 2 h, and transport metrics drift when pores are a few voxels wide (docs/methods.md). The
grid's spacing and porosity are written beside the results.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..runtime.settings import StructureSettings

AXES = ("z", "y", "x")


def porosity_profiles(pore: np.ndarray, voxel_nm: tuple[float, ...]) -> dict:
    """Pore fraction overall and per plane along z, y and x, at the voxel centres (nm)."""
    total = pore.size
    profiles = {}
    for axis, name in enumerate(AXES):
        others = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(pore, axis=others)
        profiles[name] = {
            "position_nm": ((np.arange(pore.shape[axis]) + 0.5) * voxel_nm[axis]).tolist(),
            "porosity": (counts / (total // pore.shape[axis])).tolist(),
        }
    return {"overall": float(np.count_nonzero(pore) / total), "profiles": profiles}


def analysis_shape(
    shape: tuple[int, ...], voxel_nm: tuple[float, ...], settings: StructureSettings
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Shape and per-axis spacing (nm) of the near-isotropic analysis grid."""
    extent = [n * v for n, v in zip(shape, voxel_nm, strict=True)]
    side = settings.voxel_nm
    if side is None:
        side = max(min(voxel_nm), (math.prod(extent) / settings.max_voxels) ** (1 / 3))
        while math.prod(max(1, round(e / side)) for e in extent) > settings.max_voxels:
            side *= 1.01  # rounding can overshoot the bound by a few voxels
    grid = tuple(max(1, round(e / side)) for e in extent)
    return grid, tuple(e / n for e, n in zip(extent, grid, strict=True))


def _signed_distance(pore: np.ndarray, sampling: tuple[float, float], clip: float) -> np.ndarray:
    """Signed distance (nm) of a 2-D slice: > 0 in pore, < 0 in solid, clipped at ± clip."""
    if not pore.any():
        return np.full(pore.shape, -clip, np.float32)
    if pore.all():
        return np.full(pore.shape, clip, np.float32)
    inside = ndimage.distance_transform_edt(pore, sampling=sampling)
    inside -= ndimage.distance_transform_edt(~pore, sampling=sampling)
    return np.clip(inside, -clip, clip).astype(np.float32)


def _linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre-aligned linear interpolation from n_in to n_out samples: (lower index,
    upper index, weight of the upper)."""
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (position - lower).astype(np.float32)


def resample(pore: np.ndarray, voxel_nm: tuple[float, ...], grid: tuple[int, ...]) -> np.ndarray:
    """The pore mask on a grid of shape `grid` over the same extent, by shape-based
    interpolation (see the module's docstring). Equal shapes return the mask unchanged."""
    if tuple(pore.shape) == tuple(grid):
        return pore
    clip = float(voxel_nm[0])
    ly, uy, wy = _linear_weights(pore.shape[1], grid[1])
    lx, ux, wx = _linear_weights(pore.shape[2], grid[2])
    wy, wx = wy[:, None], wx[None, :]
    planes = np.empty((pore.shape[0], grid[1], grid[2]), np.float32)
    for z in range(pore.shape[0]):
        distance = _signed_distance(pore[z], voxel_nm[1:], clip)
        rows = distance[ly] * (1 - wy) + distance[uy] * wy
        planes[z] = rows[:, lx] * (1 - wx) + rows[:, ux] * wx
    lz, uz, wz = _linear_weights(pore.shape[0], grid[0])
    out = np.empty(grid, bool)
    for z in range(grid[0]):
        out[z] = planes[lz[z]] * (1 - wz[z]) + planes[uz[z]] * wz[z] > 0
    return out
