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
from scipy import special
from skimage.transform import AffineTransform, warp

from ..preprocess.registration import estimate_alignment
from ..runtime.settings import AlignSettings
from .geometry import fibre_structure, gaussian_field, spinodal_structure


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
    # --- the hard films' physics (fibseg.demo.films); the defaults give the easy generator
    pore_sizes_xy: tuple[float, ...] = ()  # further pore scales (smoothing std, pixels)
    pore_shares: tuple[float, ...] = ()  # share of the porosity each further scale opens
    solid_level: float = 0.6  # intensity of the solid face
    pore_level: float = 0.15  # intensity of a pore that shows nothing behind it
    texture: float = 0.08  # amplitude of the solid's grain
    texture_3d: bool = False  # the grain changes from slice to slice (and shines through)
    rim: float = 0.18  # brightening of the solid face at a pore edge
    rim_px: float = 1.2  # how fast the rim fades into the solid (pixels)
    shine_layers: int = 5  # slices behind the face that can shine through
    shine_blur_px: float = 0.8  # blur of the shine-through at depth 0 (pixels) ...
    shine_blur_per_slice: float = 0.9  # ... and its growth per slice of depth
    psf_px: float = 0.7  # the SEM's point spread (std, pixels)
    curtain_px: float = 1.0  # width (smoothing std) of the curtaining stripes
    curtain_change: float = 0.0  # per slice, the share of the stripes drawn anew (0: fixed)
    curtain_onset: float = 0.0  # stripes start at random rows down to this share of the height
    charging_px: float = 40.0  # scale of the charging pattern (pixels)
    charging_change: float = 0.0  # per slice, the share of the charging drawn anew (0: fixed)
    gain_jitter: float = 0.0  # std of a slow brightness change from slice to slice (beam current)
    shot_noise: float = 0.0  # noise that grows with the signal: std shot_noise * sqrt(intensity)
    # the pores' geometry (GEOMETRIES): thresholded Gaussian fields of one or more scales, a
    # band-passed field (a bicontinuous labyrinth of one scale), or the space between random
    # straight solid fibres of radius about `pore_size_xy`
    geometry: str = "field"


DRIFT_KINDS = ("walk", "trend", "none")
GEOMETRIES = ("field", "spinodal", "fibres")
FIDUCIAL_ROWS = 64  # rows of the protective layer that carries the fiducial mark
DRIFT_MARGIN = 24  # extra pixels rendered around the field so drift never shows a border


def porous_structure(
    spec: SynthSpec,
    rng: np.random.Generator,
    extra_slices: int,
    margin: int,
    extra_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Boolean (z, y, x) solid mask at the requested porosity; anisotropic like the voxels.

    One scale (`pore_sizes_xy` empty): a Gaussian random field thresholded at the porosity.
    Several: the union of the pores of one field per scale (`pore_size_xy`, then
    `pore_sizes_xy`, the further fields drawn from `extra_rng`), each scale opening its share
    of the porosity (`pore_shares`, the first scale the rest), the union thresholded so
    that the porosity is exact."""
    shape = (spec.slices + extra_slices, spec.height + 2 * margin, spec.width + 2 * margin)
    if spec.geometry not in GEOMETRIES:
        raise ValueError(f"geometry {spec.geometry!r}: use one of {', '.join(GEOMETRIES)}")
    if spec.geometry == "spinodal":
        return spinodal_structure(spec, shape, extra_rng or rng)
    if spec.geometry == "fibres":
        return fibre_structure(spec, shape, extra_rng or rng)
    if not spec.pore_sizes_xy:
        field = gaussian_field(spec, spec.pore_size_xy, shape, rng)
        threshold = np.quantile(field, spec.porosity)
        return field > threshold
    scales, shares = pore_scales(spec)
    extra_rng = extra_rng or rng
    # pore in scale i where its field's normal score u_i < p_i, with prod(1 - p_i) = 1 - p
    # (independent fields): the union is where min_i u_i / p_i < 1
    closest = np.full(shape, np.inf, np.float32)
    for index, (scale, share) in enumerate(zip(scales, shares, strict=True)):
        field = gaussian_field(spec, scale, shape, rng if index == 0 else extra_rng)
        opened = 1 - (1 - spec.porosity) ** share
        scores = special.ndtr(field / field.std()).astype(np.float32) / np.float32(opened)
        np.minimum(closest, scores, out=closest)
    return closest > np.quantile(closest, spec.porosity)


def pore_scales(spec: SynthSpec) -> tuple[list[float], list[float]]:
    """The pore scales (pixels) and the share of the porosity each opens."""
    scales = [spec.pore_size_xy, *spec.pore_sizes_xy]
    if len(spec.pore_shares) != len(spec.pore_sizes_xy):
        raise ValueError("pore_shares needs one share per entry of pore_sizes_xy")
    first = 1 - sum(spec.pore_shares)
    shares = [first, *spec.pore_shares]
    if min(shares) <= 0:
        raise ValueError(f"pore_shares {spec.pore_shares} must be > 0 and sum to under 1")
    return scales, shares


def render_face(
    solid: np.ndarray, z: int, spec: SynthSpec, texture: np.ndarray | None
) -> np.ndarray:
    """Intensity of the milled face at slice z of a solid mask, in about [0, 1].

    `texture` is the solid's grain, (y, x) the same on every slice, or (z, y, x) with
    `texture_3d`: then a pore also shows the grain of the solid it sees behind it."""
    face = solid[z]
    grain = texture[z] if spec.texture_3d else texture
    pore_level, solid_level = spec.pore_level, spec.solid_level
    image = np.where(face, solid_level, pore_level).astype(np.float32)
    image += np.where(face, grain, 0)
    # bright rims: solid pixels next to a pore edge
    distance_to_pore = ndi.distance_transform_edt(face)
    image += np.where(face, spec.rim * np.exp(-(distance_to_pore - 1) / spec.rim_px), 0)
    # shine-through: the first solid behind the face, fading and blurring with depth
    open_so_far = ~face
    shine = np.zeros_like(image)
    shine_grain = np.zeros_like(image) if spec.texture_3d else None
    for depth in range(1, spec.shine_layers + 1):
        if z + depth >= solid.shape[0]:
            break
        first_solid = open_so_far & solid[z + depth]
        weight = spec.shine_strength * np.exp(-(depth - 1) / spec.shine_depth_slices)
        blur = spec.shine_blur_px + spec.shine_blur_per_slice * depth
        shine += weight * ndi.gaussian_filter(first_solid.astype(np.float32), blur)
        if shine_grain is not None:
            shine_grain += weight * ndi.gaussian_filter(first_solid * texture[z + depth], blur)
        open_so_far &= ~solid[z + depth]
    image += np.where(face, 0, (solid_level - pore_level) * shine)
    if shine_grain is not None:
        image += np.where(face, 0, shine_grain)
    return ndi.gaussian_filter(image, spec.psf_px)  # the SEM's own point spread


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
    # what the hard films add draws from a second stream, so that the easy generator's draws
    # stay what they always were
    extra = np.random.default_rng([spec.seed, 1])
    margin = DRIFT_MARGIN
    solid = porous_structure(spec, rng, spec.shine_layers, margin, extra)
    if spec.texture_3d:  # a grain of its own on every slice
        grain = extra.standard_normal(solid.shape, dtype=np.float32)
        texture = ndi.gaussian_filter(grain, (0, 1.5, 1.5)) * np.float32(spec.texture)
    else:
        texture = (
            ndi.gaussian_filter(rng.standard_normal(solid.shape[1:], dtype=np.float32), 1.5)
            * spec.texture
        )
    stripes = stripe_pattern(spec, rng)
    onset = curtain_onset(spec, extra)
    ramp = spec.gradient * (np.arange(spec.width) / max(spec.width - 1, 1) - 0.5)
    crop = (slice(margin, margin + spec.height), slice(margin, margin + spec.width))
    charge = charge_pattern(spec, rng)
    gain = slice_gain(spec, extra)
    volume = np.empty((spec.slices, spec.height, spec.width), np.uint16)
    drift = drift_transforms(spec, rng)
    layer = fiducial_layer(spec) if spec.fiducial else None
    for z, matrix in enumerate(drift):
        if z and spec.curtain_change:  # curtaining that changes from slice to slice
            stripes = mixed(stripes, stripe_pattern(spec, extra), spec.curtain_change)
        if z and spec.charging_change:  # and charging
            charge = mixed(charge, charge_pattern(spec, extra), spec.charging_change)
        face = render_face(solid, z, spec, texture)
        if layer is not None:
            face = np.where(layer[1], layer[0], face)
        moved = warp(
            face, AffineTransform(matrix=matrix), order=1, mode="edge", preserve_range=True
        )[crop]
        slow = 1 + 0.3 * np.sin(np.linspace(0, np.pi, spec.height) + z / 5)[:, None]
        curtains = stripes[None, :] * slow if onset is None else stripes[None, :] * slow * onset
        image = moved * (1 + charge) + curtains + ramp[None, :]
        if gain is not None:
            image *= gain[z]
        if spec.shot_noise:
            std = np.sqrt(spec.noise**2 + spec.shot_noise**2 * np.clip(image, 0, None))
            image += rng.standard_normal(image.shape) * std
        else:
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


def stripe_pattern(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """Curtaining along y: (x,) stripes of width `curtain_px`, largest `curtaining`."""
    stripes = ndi.gaussian_filter1d(rng.standard_normal(spec.width), spec.curtain_px)
    return spec.curtaining * stripes / (np.abs(stripes).max() + 1e-9)


def charge_pattern(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """Charging: a (y, x) relative brightness of scale `charging_px`, largest `charging`."""
    charge = ndi.gaussian_filter(rng.standard_normal((spec.height, spec.width)), spec.charging_px)
    return spec.charging * charge / (np.abs(charge).max() + 1e-9)


def mixed(previous: np.ndarray, fresh: np.ndarray, change: float) -> np.ndarray:
    """The previous slice's pattern with the share `change` of its variance drawn anew."""
    return np.sqrt(1 - change) * previous + np.sqrt(change) * fresh


def curtain_onset(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray | None:
    """(y, x) weight of the curtaining: a stripe runs from a row of its own, drawn smoothly
    along x down to `curtain_onset` of the height, to the bottom; None: every row."""
    if not spec.curtain_onset:
        return None
    start = ndi.gaussian_filter1d(rng.standard_normal(spec.width), 3 * spec.curtain_px)
    start = spec.curtain_onset * spec.height * special.ndtr(start / (start.std() + 1e-9))
    rows = np.arange(spec.height, dtype=np.float64)[:, None]
    return np.clip((rows - start[None, :]) / 8 + 0.5, 0, 1)


def slice_gain(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray | None:
    """Per slice, a slow brightness factor of std `gain_jitter` (the beam current);
    None without."""
    if not spec.gain_jitter:
        return None
    walk = ndi.gaussian_filter1d(rng.standard_normal(spec.slices), 2.0)
    return 1 + spec.gain_jitter * walk / (walk.std() + 1e-9)


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
