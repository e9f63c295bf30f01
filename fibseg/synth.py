"""Synthetic FIB-SEM volumes of a porous two-phase material, with shine-through.

The SEM images the milled face of slice z. Solid voxels on the face are bright. A pore pixel
shows the first solid lying behind the face (slices z+1, z+2, ...), brighter the shallower it
lies and more out of focus the deeper. On top come bright rims at the pore edges, curtaining
stripes along y, a linear intensity gradient along x, noise, and a random rigid drift between
slices (slice 0 is the reference frame, which is also the frame of `synthesize`'s truth and
regions).

Alignment does not undo the drift exactly: registering each slice to the previous one adds
its errors up along z (on the demo's 32 slices, several pixels by the last slice). A user
annotates the volume as fibseg aligned it, so `seen_after_alignment` moves the truth into
that frame and cuts the regions' labels from it: the demo's labels and truth then show what
the aligned volume shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pystackreg import StackReg
from scipy import ndimage as ndi
from skimage.transform import AffineTransform, warp

from .preprocess import register_to_previous


@dataclass(frozen=True)
class SynthSpec:
    """What to synthesise. Lengths are in voxels; the voxel is 10 x 10 x 50 nm (x, y, z)."""

    porosity: float
    slices: int = 32
    height: int = 256
    width: int = 256
    n_regions: int = 20
    region_size: int = 48
    seed: int = 0
    pore_size_xy: float = 4.0  # std of the Gaussian random field's smoothing, in pixels
    pore_size_z: float | None = None  # the same in slices; None: isotropic in nm
    voxel_nm: tuple[float, float, float] = (50.0, 10.0, 10.0)  # z, y, x
    shine_depth_slices: float = 1.6  # shine-through fades as exp(-depth / this)
    shine_strength: float = 1.0  # fraction of the solid contrast a pore shows at depth 1
    drift_px: float = 0.6  # std of the per-slice translation step
    drift_deg: float = 0.05  # std of the per-slice rotation step
    noise: float = 0.06  # std of the additive Gaussian noise (intensity in [0, 1])
    gradient: float = 0.2  # intensity change across the x range
    curtaining: float = 0.05  # amplitude of the stripes along y
    charging: float = 0.15  # amplitude of slow brightness variations (charging) across the slice


SHINE_LAYERS = 5  # how many slices behind the face can shine through
DRIFT_MARGIN = 24  # extra pixels rendered around the field so drift never shows a border


def porous_structure(
    spec: SynthSpec, rng: np.random.Generator, extra_slices: int, margin: int
) -> np.ndarray:
    """Boolean (z, y, x) solid mask at the requested porosity; anisotropic like the voxels."""
    shape = (spec.slices + extra_slices, spec.height + 2 * margin, spec.width + 2 * margin)
    sigma_z = spec.pore_size_z or spec.pore_size_xy * spec.voxel_nm[1] / spec.voxel_nm[0]
    field = ndi.gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32),
        sigma=(max(sigma_z, 0.5), spec.pore_size_xy, spec.pore_size_xy),
        mode="wrap",
    )
    threshold = np.quantile(field, spec.porosity)
    return field > threshold


def render_face(solid: np.ndarray, z: int, spec: SynthSpec, texture: np.ndarray) -> np.ndarray:
    """Intensity of the milled face at slice z of a solid mask, in about [0, 1]."""
    face = solid[z]
    pore_level, solid_level = 0.15, 0.6
    image = np.where(face, solid_level, pore_level).astype(np.float32)
    image += np.where(face, texture, 0)
    # bright rims: solid pixels next to a pore edge
    distance_to_pore = ndi.distance_transform_edt(face)
    image += np.where(face, 0.18 * np.exp(-(distance_to_pore - 1) / 1.2), 0)
    # shine-through: the first solid behind the face, fading and blurring with depth
    open_so_far = ~face
    shine = np.zeros_like(image)
    for depth in range(1, SHINE_LAYERS + 1):
        if z + depth >= solid.shape[0]:
            break
        first_solid = open_so_far & solid[z + depth]
        weight = spec.shine_strength * np.exp(-(depth - 1) / spec.shine_depth_slices)
        shine += weight * ndi.gaussian_filter(first_solid.astype(np.float32), 0.8 + 0.9 * depth)
        open_so_far &= ~solid[z + depth]
    image += np.where(face, 0, (solid_level - pore_level) * shine)
    return ndi.gaussian_filter(image, 0.7)  # the SEM's own point spread


def drift_transforms(spec: SynthSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Cumulative random rigid transforms (3x3, x-y order) per slice; slice 0 is identity."""
    centre = np.array(
        [(spec.width + 2 * DRIFT_MARGIN - 1) / 2, (spec.height + 2 * DRIFT_MARGIN - 1) / 2]
    )
    angle, shift = 0.0, np.zeros(2)
    matrices = []
    for z in range(spec.slices):
        if z > 0:
            angle += np.deg2rad(rng.normal(0, spec.drift_deg))
            shift += rng.normal(0, spec.drift_px, size=2)
        about_centre = (
            AffineTransform(translation=-centre)
            + AffineTransform(rotation=angle)
            + AffineTransform(translation=centre + shift)
        )
        matrices.append(about_centre.params)
    return matrices


def synthesize(spec: SynthSpec) -> dict[str, object]:
    """Volume (uint16), truth (uint8, 1 = solid), region table, label stack and the drift
    (z, 3, 3): acquired slice z shows the truth at drift[z] @ (x, y, 1)."""
    rng = np.random.default_rng(spec.seed)
    margin = DRIFT_MARGIN
    solid = porous_structure(spec, rng, SHINE_LAYERS, margin)
    texture = (
        ndi.gaussian_filter(rng.standard_normal(solid.shape[1:], dtype=np.float32), 1.5) * 0.08
    )
    stripes = ndi.gaussian_filter1d(rng.standard_normal(spec.width), 1.0)
    stripes = spec.curtaining * stripes / (np.abs(stripes).max() + 1e-9)
    ramp = spec.gradient * (np.arange(spec.width) / max(spec.width - 1, 1) - 0.5)
    crop = (slice(margin, margin + spec.height), slice(margin, margin + spec.width))
    charge = ndi.gaussian_filter(rng.standard_normal((spec.height, spec.width)), 40)
    charge = spec.charging * charge / (np.abs(charge).max() + 1e-9)
    volume = np.empty((spec.slices, spec.height, spec.width), np.uint16)
    drift = drift_transforms(spec, rng)
    for z, matrix in enumerate(drift):
        face = render_face(solid, z, spec, texture)
        moved = warp(
            face, AffineTransform(matrix=matrix), order=1, mode="edge", preserve_range=True
        )[crop]
        slow = 1 + 0.3 * np.sin(np.linspace(0, np.pi, spec.height) + z / 5)[:, None]
        image = moved * (1 + charge) + stripes[None, :] * slow + ramp[None, :]
        image += rng.normal(0, spec.noise, image.shape)
        volume[z] = np.clip(image * 50000 + 9000, 0, 65535).astype(np.uint16)
    truth = solid[: spec.slices][(slice(None), *crop)].astype(np.uint8)
    # the drift in the frame of the cropped volume: acquired slice z shows the truth at
    # drift[z] @ (x, y, 1)
    to_margin = AffineTransform(translation=(margin, margin)).params
    regions, labels = random_regions(truth, spec.n_regions, spec.region_size, rng)
    return {
        "volume": volume,
        "truth": truth,
        "regions": regions,
        "labels": labels,
        "drift": np.stack([np.linalg.inv(to_margin) @ m @ to_margin for m in drift]),
    }


def seen_after_alignment(
    data: dict[str, object], transformation: int = StackReg.RIGID_BODY
) -> dict[str, object]:
    """`synthesize`'s data with the truth and the regions' labels in the frame of fibseg's
    alignment of its volume (rule align, `register_to_previous` with `transformation`),
    nearest neighbour: what a user sees in, and so annotates on, the aligned volume. Where
    the aligned slice shows no sample (its border, filled by repeating the edge), the truth
    repeats its edge too."""
    alignment = register_to_previous(data["volume"], transformation)
    truth = data["truth"]
    seen = np.empty_like(truth)
    for z, (drift, aligned) in enumerate(zip(data["drift"], alignment, strict=True)):
        seen[z] = warp(
            truth[z],
            AffineTransform(matrix=drift @ aligned),
            order=0,
            mode="edge",
            preserve_range=True,
        ).astype(truth.dtype)
    return {**data, "truth": seen, "labels": cut_regions(seen, data["regions"])}


def random_regions(
    truth: np.ndarray, count: int, size: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """Square annotated regions at random places, with their labels cut from the truth."""
    slices, height, width = truth.shape
    if size > min(height, width):
        raise ValueError(f"region_size {size} does not fit a {height} x {width} slice")
    table = pd.DataFrame(
        {
            "z": rng.integers(0, slices, count),
            "y": rng.integers(0, height - size + 1, count),
            "x": rng.integers(0, width - size + 1, count),
            "height": size,
            "width": size,
        }
    )
    return table, cut_regions(truth, table)


def cut_regions(truth: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """The regions' label stack (regions, height, width) cut from a truth volume."""
    return np.stack(
        [truth[r.z, r.y : r.y + r.height, r.x : r.x + r.width] for r in table.itertuples()]
    )
