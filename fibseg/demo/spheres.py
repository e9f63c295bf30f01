"""A held-out simulator: a packing of particles imaged by FIB-SEM (`synthesize_spheres`).

It is independent of the demo's generator (`fibseg.demo.synth`): another structure (a Boolean
model of spheres instead of a thresholded Gaussian random field) and another contrast model
(see `synthesize_spheres`). It exists to check conclusions drawn on the demo's generator on
data that played no part in them: it is never used to choose anything (a default, a preset, a
calibration), only to test a choice made elsewhere (the label-budget study's `spheres` data,
studies/label_budget.md). Keep it that way, or it stops being a check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .synth import random_regions

VOXEL_NM = (50.0, 10.0, 10.0)  # z, y, x: the demo's voxel
SHINE_SLICES = 6  # slices behind the face that can shine through (300 nm)


@dataclass(frozen=True)
class SphereSpec:
    """A particle packing imaged by FIB-SEM. Lengths in nm unless named px; voxels 10 x 10 x
    50 nm (x, y, z) as in the demo."""

    porosity: float
    slices: int = 48
    height: int = 384
    width: int = 384
    n_regions: int = 20
    region_size: int = 48
    seed: int = 0
    radii_nm: tuple[float, ...] = (40.0, 60.0, 90.0)  # radius classes of the particles
    radius_shares: tuple[float, ...] = (0.5, 0.3, 0.2)  # share of the particles per class
    solid_level: float = 0.55
    pore_level: float = 0.12
    particle_contrast: float = 0.08  # std of the particles' relative brightness
    shine: float = 0.9  # fraction of a solid's brightness that shines through at depth 0
    attenuation_nm: float = 100.0  # shine-through fades as exp(-depth_nm / this)
    edge_contrast: float = 0.35  # topographic edge brightening (both phases)
    blur_px: float = 0.9  # the SEM's point spread
    electrons: float = 40.0  # detected electrons at intensity 1 (Poisson noise)
    beam_drift: float = 0.05  # amplitude of the slow beam-current drift along z


def particle_surface_distance(
    spec: SphereSpec, shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (nm, < 0 inside) to the union of Poisson-placed spheres, and the
    index of the sphere that gives it (the particle a voxel belongs to or faces)."""
    voxel = np.asarray(VOXEL_NM)
    radii, shares = np.asarray(spec.radii_nm), np.asarray(spec.radius_shares)
    shares = shares / shares.sum()
    mean_volume = float(np.sum(shares * 4 / 3 * np.pi * radii**3))
    # Boolean model: P(pore) = exp(-intensity * E[V]); centres also fall in a margin of the
    # largest radius, so the edges are not depleted.
    reach = np.ceil(radii.max() / voxel).astype(int)
    box_nm = (np.asarray(shape) + 2 * reach) * voxel
    count = rng.poisson(-np.log(spec.porosity) / mean_volume * np.prod(box_nm))
    centres = rng.uniform(0, 1, (count, 3)) * box_nm - reach * voxel  # nm, array frame
    radius = rng.choice(radii, count, p=shares)
    distance = np.full(shape, np.inf, np.float32)
    owner = np.zeros(shape, np.int32)
    for index, (centre, r) in enumerate(zip(centres, radius, strict=True)):
        low = np.maximum(np.floor((centre - r) / voxel).astype(int), 0)
        high = np.minimum(np.ceil((centre + r) / voxel).astype(int) + 1, shape)
        if np.any(high <= low):
            continue
        axes = [
            np.arange(lo, hi) * v - c for lo, hi, v, c in zip(low, high, voxel, centre, strict=True)
        ]
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
        d = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][:, None] ** 2 + axes[2] ** 2) - r
        closer = d < distance[box]
        distance[box] = np.where(closer, d, distance[box])
        owner[box] = np.where(closer, index, owner[box])
    return distance, owner


def render_spheres(
    solid: np.ndarray, brightness: np.ndarray, spec: SphereSpec, rng: np.random.Generator
) -> np.ndarray:
    """Intensities (about [0, 1]) of the first len - SHINE_SLICES milled faces."""
    depth = solid.shape[0] - SHINE_SLICES
    level = spec.solid_level * brightness
    image = np.where(solid[:depth], level[:depth], spec.pore_level).astype(np.float32)
    # shine-through: a pore shows the first solid behind it along z, attenuated with depth
    open_so_far = ~solid[:depth]
    for step in range(1, SHINE_SLICES + 1):
        behind = solid[step : step + depth]
        first = open_so_far & behind
        weight = spec.shine * np.exp(-(step - 0.5) * VOXEL_NM[0] / spec.attenuation_nm)
        image[first] += weight * (level[step : step + depth][first] - spec.pore_level)
        open_so_far &= ~behind
    # topographic edge contrast, on both sides of every pore edge
    edges = ndi.gaussian_gradient_magnitude(solid[:depth].astype(np.float32), (0, 1.0, 1.0))
    image += spec.edge_contrast * edges
    image = ndi.gaussian_filter(image, (0, spec.blur_px, spec.blur_px))
    phase = rng.uniform(0, 2 * np.pi)
    drift = 1 + spec.beam_drift * np.sin(np.arange(depth) / 7 + phase)
    image *= drift[:, None, None].astype(np.float32)
    counts = rng.poisson(np.clip(image, 0, None) * spec.electrons)
    return counts / spec.electrons


def synthesize_spheres(spec: SphereSpec) -> dict[str, object]:
    """A volume of the held-out simulator, with its truth (1 = solid) and annotated regions:
    the keys volume, truth, regions and labels of `fibseg.demo.synth.synthesize`.

    Structure: solid = the union of spheres at Poisson-random centres (a Boolean model), radii
    of 40, 60 and 90 nm, isotropic in nm, so on 10 x 10 x 50 nm voxels a particle spans 1-4
    slices. The intensity of centres follows the Boolean model's porosity formula; a final
    shift of every sphere's radius by the same few nm makes the porosity exact. Unlike the
    demo's Gaussian random field the pores are the concave gaps between convex particles.

    Contrast: every particle has its own brightness (8 % spread). A pore shows the first
    solid behind it along z, its own brightness times 0.9 exp(-depth / 100 nm), with no extra
    blur with depth (the demo blurs and uses a fixed level). Edges are brightened on both
    sides by the gradient of the phase map (the demo brightens solid rims only). Then a
    Gaussian point spread, a slow beam-current drift along z, and Poisson (shot) noise whose
    variance grows with the signal (the demo adds Gaussian noise). No curtaining, no x
    gradient, no drift between slices.
    """
    rng = np.random.default_rng(spec.seed)
    shape = (spec.slices + SHINE_SLICES, spec.height, spec.width)
    distance, owner = particle_surface_distance(spec, shape, rng)
    shift = np.quantile(distance[: spec.slices], 1 - spec.porosity)
    solid = distance < shift
    brightness = 1 + spec.particle_contrast * rng.standard_normal(int(owner.max()) + 1)
    image = render_spheres(solid, np.clip(brightness, 0.7, 1.3)[owner], spec, rng)
    volume = np.clip(image * 40000 + 5000, 0, 65535).astype(np.uint16)
    truth = solid[: spec.slices].astype(np.uint8)
    regions, labels = random_regions(truth, spec.n_regions, spec.region_size, rng)
    return {"volume": volume, "truth": truth, "regions": regions, "labels": labels}
