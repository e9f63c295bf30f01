"""Training augmentation of §3.5, vectorised over a batch of (B, n_xy, n_xy, n_z) patches."""

from __future__ import annotations

import numpy as np


def dihedral(patches: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Apply one of the 8 flips/rotations in x-y per patch: code % 4 quarter turns, after a
    left-right flip when code >= 4. The centre voxel, and so the label, stays in place."""
    out = np.empty_like(patches)
    for code in np.unique(codes):
        chosen = codes == code
        group = patches[chosen]
        if code >= 4:
            group = group[:, :, ::-1]
        out[chosen] = np.rot90(group, int(code) % 4, axes=(1, 2))
    return out


def random_dihedral(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each of the 8 transforms (the identity included) with probability 1/8."""
    return dihedral(patches, rng.integers(0, 8, len(patches)))


def rescale_intensity(
    patches: np.ndarray, a: float, b: float, probability: float, rng: np.random.Generator
) -> np.ndarray:
    """With `probability` per patch, move its mean to mu * N(1, a) and its standard deviation
    to sigma * N(1, b) (eq. 3-4)."""
    out = patches.copy()
    chosen = rng.random(len(patches)) < probability
    if not chosen.any():
        return out
    group = patches[chosen]
    axes = tuple(range(1, patches.ndim))
    mean = group.mean(axis=axes, keepdims=True)
    std = group.std(axis=axes, keepdims=True)
    shape = (len(group),) + (1,) * (patches.ndim - 1)
    new_mean = mean * rng.normal(1, a, shape)
    new_std = std * rng.normal(1, b, shape)
    out[chosen] = ((group - mean) / np.maximum(std, 1e-12) * new_std + new_mean).astype(
        patches.dtype
    )
    return out
