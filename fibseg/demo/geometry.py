"""The pores' geometries of the simulator (fibseg.demo.synth, `SynthSpec.geometry`): Gaussian
random fields (thresholded by `porous_structure`), a band-passed field (a labyrinth of one
scale) and random straight fibres; each solid mask at the spec's porosity."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import ndimage as ndi


class SynthSpec(Protocol):
    """What the geometries read of fibseg.demo.synth.SynthSpec."""

    porosity: float
    pore_size_xy: float
    pore_size_z: float | None
    voxel_nm: tuple[float, float, float]


def field_sigmas(spec: SynthSpec, scale_xy: float) -> tuple[float, float, float]:
    """(z, y, x) smoothing of a field of `scale_xy` pixels: in z `pore_size_z` scaled alike
    (None: the same length in nm), at least half a slice."""
    if spec.pore_size_z is None:
        sigma_z = scale_xy * spec.voxel_nm[1] / spec.voxel_nm[0]
    else:
        sigma_z = spec.pore_size_z * scale_xy / spec.pore_size_xy
    return (max(sigma_z, 0.5), scale_xy, scale_xy)


def gaussian_field(
    spec: SynthSpec, scale_xy: float, shape: tuple[int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """White noise smoothed by `field_sigmas` of `scale_xy` pixels."""
    return ndi.gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32),
        sigma=field_sigmas(spec, scale_xy),
        mode="wrap",
    )


def spinodal_structure(
    spec: SynthSpec, shape: tuple[int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """Solid mask of a band-passed field (white noise smoothed at `pore_size_xy` minus at
    twice that) thresholded at the porosity: pore and solid both connected, a labyrinth of
    one scale, as phase separation leaves."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    sigmas = np.array(field_sigmas(spec, spec.pore_size_xy))
    band = ndi.gaussian_filter(noise, sigmas, mode="wrap")
    band -= ndi.gaussian_filter(noise, 2 * sigmas, mode="wrap")
    return band > np.quantile(band, spec.porosity)


def fibre_structure(
    spec: SynthSpec, shape: tuple[int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """Solid mask of random straight fibres (isotropic in nm) whose radius is set so that the
    porosity is exact; their number makes the radius about `pore_size_xy` pixels (a Boolean
    model of lines: solid share 1 - exp(-count * pi * radius^2 * length / volume))."""
    voxel = np.array(spec.voxel_nm, dtype=np.float64)
    extent = np.array(shape) * voxel  # nm, (z, y, x)
    radius = spec.pore_size_xy * voxel[1]
    half = float(np.max(extent))  # each fibre runs this far both ways from its centre ...
    # ... and the centres fill the box grown by that much, so that fibres are as dense at the
    # box's faces as inside it
    grown = np.prod(extent + 2 * half)
    count = int(np.ceil(-np.log(spec.porosity) * grown / (np.pi * radius**2 * 2 * half)))
    axes = np.zeros(shape, bool)
    offsets = np.arange(-half, half, 0.5 * voxel.min())
    for _ in range(count):
        centre = rng.uniform(-half, extent + half)
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        points = np.floor((centre + offsets[:, None] * direction) / voxel).astype(int)
        inside = ((points >= 0) & (points < np.array(shape))).all(axis=1)
        axes[tuple(points[inside].T)] = True
    distance = ndi.distance_transform_edt(~axes, sampling=voxel).astype(np.float32)
    distance += rng.uniform(0, 1e-3, shape).astype(np.float32)  # no ties: the porosity exact
    return distance <= np.quantile(distance, 1 - spec.porosity)
