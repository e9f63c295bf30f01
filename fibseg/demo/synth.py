"""Synthetic FIB-SEM volumes of a porous two-phase material, with shine-through.

The SEM images the milled face of slice z. Solid voxels on the face are bright. A pore pixel
shows the first solid lying behind the face (slices z+1, z+2, ...), brighter the shallower it
lies and more out of focus the deeper. On top come bright rims at the pore edges, curtaining
stripes along y, a linear intensity gradient along x, noise, and a rigid drift between slices
(`drift`: a random walk, a slow trend with jitter, or none; slice 0 is the reference frame,
which is also the frame of `synthesize`'s truth and regions). `fiducial` covers the top rows
with a protective layer that carries a milled mark, as users register on; the truth there
stays the porous structure the layer hides, so only alignment studies use it.

Alignment does not undo the drift exactly: on the demo's 256 x 256 slices even the
structure's own change from slice to slice moves a registration by a few tenths of a pixel
per slice (fibseg.preprocess.registration, docs/alignment.md). A user
annotates the volume as fibseg aligned it, so `seen_after_alignment` moves the truth into
that frame and cuts the regions' labels from it: the demo's labels and truth then show what
the aligned volume shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.transform import AffineTransform, warp

from ..preprocess.registration import estimate_alignment
from ..runtime.settings import AlignSettings


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
    drift: str = "walk"  # "walk", "trend" or "none" (DRIFT_KINDS)
    drift_px: float = 0.6  # walk: std of the per-slice step; trend: std of the start velocity
    drift_deg: float = 0.05  # the same for the rotation (degrees); 0: no rotation
    jitter_px: float = 0.15  # trend: std of each slice's own displacement around the trend
    fiducial: bool = False  # a mark on a protective layer at the top (FIDUCIAL_ROWS rows)
    noise: float = 0.06  # std of the additive Gaussian noise (intensity in [0, 1])
    gradient: float = 0.2  # intensity change across the x range
    curtaining: float = 0.05  # amplitude of the stripes along y
    charging: float = 0.15  # amplitude of slow brightness variations (charging) across the slice


DRIFT_KINDS = ("walk", "trend", "none")
FIDUCIAL_ROWS = 64  # rows of the protective layer that carries the fiducial mark
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


def drift_path(spec: SynthSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the stage's displacement (z, 2; px) and rotation (z; radians), slice 0 at 0.

    walk: a random walk (steps of std `drift_px` and `drift_deg`), the hard case. trend: what
    stages do, a slow drift (a start velocity of std `drift_px` per slice that changes
    smoothly, by up to about as much again over the stack) plus each slice's own jitter of
    std `jitter_px`; the rotation drifts slowly the same way, at a fifth of `drift_deg` per
    slice (about the walk's total turn over the demo's 32 slices). none: the stage never moved."""
    if spec.drift not in DRIFT_KINDS:
        raise ValueError(f"drift {spec.drift!r}: use one of {', '.join(DRIFT_KINDS)}")
    z = np.arange(spec.slices, dtype=np.float64)
    if spec.drift == "none":
        return np.zeros((spec.slices, 2)), np.zeros(spec.slices)
    if spec.drift == "walk":  # drawn slice by slice, rotation first, as fibseg always drew it
        steps, turns = np.zeros((spec.slices, 2)), np.zeros(spec.slices)
        for k in range(1, spec.slices):
            turns[k] = np.deg2rad(rng.normal(0, spec.drift_deg))
            steps[k] = rng.normal(0, spec.drift_px, size=2)
        return np.cumsum(steps, axis=0), np.cumsum(turns)
    velocity = rng.normal(0, spec.drift_px, size=2)
    change = rng.normal(0, spec.drift_px, size=2)
    depth = z / max(spec.slices - 1, 1)
    shift = np.outer(z, velocity) + np.outer(z * depth / 2, change)
    shift[1:] += rng.normal(0, spec.jitter_px, size=(spec.slices - 1, 2))
    spin, spin_change = np.deg2rad(rng.normal(0, spec.drift_deg / 5, size=2))
    return shift, z * spin + z * depth / 2 * spin_change


def drift_transforms(spec: SynthSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Cumulative rigid transforms (3x3, x-y order) of `drift_path` per slice, rotating about
    the rendered field's centre; slice 0 is identity."""
    centre = np.array(
        [(spec.width + 2 * DRIFT_MARGIN - 1) / 2, (spec.height + 2 * DRIFT_MARGIN - 1) / 2]
    )
    shifts, angles = drift_path(spec, rng)
    return [
        (
            AffineTransform(translation=-centre)
            + AffineTransform(rotation=angle)
            + AffineTransform(translation=centre + shift)
        ).params
        for shift, angle in zip(shifts, angles, strict=True)
    ]


def fiducial_layer(spec: SynthSpec) -> tuple[np.ndarray, np.ndarray]:
    """The protective layer's intensity and where it covers the rendered field (both (y, x)
    of the field with its margin): FIDUCIAL_ROWS rows at the top of the slice, with a
    milled mark (a cross in a ring) at the middle, the same on every slice."""
    height, width = spec.height + 2 * DRIFT_MARGIN, spec.width + 2 * DRIFT_MARGIN
    covered = np.zeros((height, width), bool)
    covered[: DRIFT_MARGIN + FIDUCIAL_ROWS] = True
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    cy, cx = DRIFT_MARGIN + FIDUCIAL_ROWS / 2, width / 2
    radius = np.hypot(yy - cy, xx - cx)
    cross = (np.abs(yy - cy) < 1.5) | (np.abs(xx - cx) < 1.5)
    mark = (cross & (radius < 12)) | (np.abs(radius - 13) < 1.2)
    layer = np.where(mark, 0.9, 0.35).astype(np.float32)
    return ndi.gaussian_filter(layer, 0.7), covered


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
    layer = fiducial_layer(spec) if spec.fiducial else None
    for z, matrix in enumerate(drift):
        face = render_face(solid, z, spec, texture)
        if layer is not None:
            face = np.where(layer[1], layer[0], face)
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
    data: dict[str, object], settings: AlignSettings | None = None
) -> dict[str, object]:
    """`synthesize`'s data with the truth and the regions' labels in the frame of fibseg's
    alignment of its volume (rule align with `settings`), nearest neighbour: what a user
    sees in, and so annotates on, the aligned volume. Where the aligned slice shows no
    sample (its border, filled by repeating the edge), the truth repeats its edge too."""
    alignment = estimate_alignment(data["volume"], settings or AlignSettings()).transforms
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
