"""Pore-structure analysis of a segmentation (1 = solid, 0 = pore), in physical units (nm).

What it computes (`analyze`):
- porosity, overall and as profiles along z, y and x;
- pore-size distribution by local thickness (the diameter of the largest ball that fits in
  the phase and covers the voxel, Hildebrand & Rüegsegger 1997), and the same for the solid;
- specific surface area: the marching-cubes mesh area of the pore-solid interface per volume;
- connectivity: the fraction of the pore volume in the largest cluster, the fraction in
  clusters that touch each face, whether some cluster spans each axis (percolation);
- tortuosity along each axis: geometric (the shortest path through the pore space from the
  inlet face to each outlet-face voxel, over the straight distance) and diffusive
  (τ = ε·D0/D_eff, the definition of PoreSpy's `tortuosity_fd`).

How anisotropic voxels are handled: RESAMPLING to (near-)isotropic voxels. FIB-SEM voxels are
50 nm in z against 10 nm in x-y. Porosity and its profiles are counted on the native voxels
(exact). Everything else runs on an analysis grid of cubic voxels of side h, with per-axis
spacing extent / voxels (isotropic up to rounding; every function here takes that per-axis
spacing: scipy's EDT `sampling=`, MCP_Geometric's `sampling=`, the solver's face areas).
The grid is made by shape-based interpolation (Raya & Udupa 1990): each native slice's
signed distance to the interface (a 2-D EDT in nm, clipped at ± the native z step so that a
slice with no interface nearby cannot drag the next one's) is resampled bilinearly in x-y,
linearly between slices, and its sign is the phase. A pore that narrows from slice to slice
thus becomes a slope, not a 50 nm staircase: a ball of radius 25 voxels sampled at 5:1 came
back with its volume within 0.3 % and its area within 0.7 % (measured while writing this);
tests/test_structure.py checks a 45° tube and a cavity sampled at 4:1 against 1:1 (3 %).
Why not anisotropic distance transforms on the native grid alone: a 5:1 voxel turns local
thickness into 50 nm steps in z and the marching-cubes area of binary slices into
staircases (+18 % on a ball), and the native paper volume does not fit (next point).

Memory, and the full paper volume (200 × 2247 × 3372 voxels, 1.5e9): h is the finest side,
not finer than the finest native voxel, for which the analysis grid has at most
`max_voxels` voxels (or `voxel_nm` if set). Only the segmentation (1 byte per native voxel),
its pore mask and one slice at a time are held at native size; the analysis steps cost
about 300 bytes per analysis voxel at their peak (305 measured at 1.6e7 voxels by
`benchmarks/structure.py`), so the volume is analysed by DOWNSAMPLING it to a grid that fits
the job: 6e7 voxels of ~50 nm for a full paper volume in about 20 GiB (config/paper.yaml).
The price is resolution: a feature thinner than about 2 h is lost, diameters come in steps
of at least 2 h, and transport metrics drift when pores are a few voxels wide (docs/methods.md). The
grid's spacing and porosity are written beside the results.

Why not PoreSpy (3.2.0): it pulls in VTK, PyVista, numba and dask, its
`tortuosity_fd` needs OpenPNM on top, and its local thickness and tortuosity assume cubic
voxels of side 1. The algorithms here are the same (local thickness by repeated distance
transforms as `local_thickness_dt`; the finite-volume diffusion of `tortuosity_fd`, with
Dirichlet layers at the first and last voxel planes and L - 1 spacings between them), written
with scipy and scikit-image for per-axis spacing, plus PyAMG (~9 MB, numpy and scipy only):
its Ruge-Stüben multigrid preconditions conjugate gradients, as in `tortuosity_fd`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse

AXES = ("z", "y", "x")


@dataclass(frozen=True)
class StructureSettings:
    """The config section `structure` (workflow/schemas/config.schema.yaml)."""

    voxel_nm: float | None = None  # side of the analysis grid's voxels; None: from max_voxels
    max_voxels: int = 2_000_000  # the analysis grid's size bound when voxel_nm is None
    max_radii: int = 40  # at most this many ball radii in the local thickness
    tolerance: float = 1e-6  # relative residual of the diffusion solve

    @classmethod
    def from_config(cls, section: dict) -> StructureSettings:
        keys = ("voxel_nm", "max_voxels", "max_radii", "tolerance")
        return cls(**{key: section[key] for key in keys if key in section})


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


FACES = ("z0", "z1", "y0", "y1", "x0", "x1")


def face(array: np.ndarray, name: str) -> np.ndarray:
    """The first (`z0`) or last (`z1`) plane of an axis."""
    axis = AXES.index(name[0])
    return array.take(0 if name[1] == "0" else -1, axis=axis)


def clusters(pore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-connected (6-neighbour) pore clusters: labels (0 = solid) and voxels per label."""
    labels, _ = ndimage.label(pore)
    return labels, np.bincount(labels.ravel())


def connectivity(labels: np.ndarray, sizes: np.ndarray) -> dict:
    """Largest-cluster fraction, fraction connected to each face, percolation per axis."""
    pore_voxels = int(sizes[1:].sum())
    if pore_voxels == 0:
        return (
            {"largest_cluster_fraction": float("nan"), "clusters": 0}
            | {f"connected_to_{f}": float("nan") for f in FACES}
            | {f"percolates_{a}": False for a in AXES}
        )
    result = {
        "largest_cluster_fraction": float(sizes[1:].max() / pore_voxels),
        "clusters": len(sizes) - 1,
    }
    touching = {f: np.setdiff1d(np.unique(face(labels, f)), [0]) for f in FACES}
    for name in FACES:
        result[f"connected_to_{name}"] = float(sizes[touching[name]].sum() / pore_voxels)
    for axis in AXES:
        spanning = np.intersect1d(touching[axis + "0"], touching[axis + "1"])
        result[f"percolates_{axis}"] = bool(spanning.size)
    return result


def percolating(labels: np.ndarray, axis: int) -> np.ndarray:
    """The pore voxels of the clusters that touch both faces of `axis`."""
    ends = [np.unique(labels.take(i, axis=axis)) for i in (0, -1)]
    keep = np.zeros(labels.max() + 1, bool)
    keep[np.intersect1d(*ends)] = True
    keep[0] = False
    return keep[labels]


def geometric_tortuosity(mask: np.ndarray, axis: int, spacing: tuple[float, ...]) -> float:
    """Mean over the outlet face's pore voxels that the inlet face reaches of the shortest
    path through `mask` (26-neighbour steps of their physical length), over the straight
    distance between the two faces' voxel centres. NaN when nothing connects them."""
    from skimage.graph import MCP_Geometric

    length = (mask.shape[axis] - 1) * spacing[axis]
    if length <= 0 or not face(mask, AXES[axis] + "1").any():
        return float("nan")
    costs = np.where(mask, 1.0, np.inf)
    inlet = np.argwhere(mask.take(0, axis=axis))
    starts = np.insert(inlet, axis, 0, axis=1)
    paths, _ = MCP_Geometric(costs, fully_connected=True, sampling=spacing).find_costs(
        starts.tolist()
    )
    arrived = face(paths, AXES[axis] + "1")[face(mask, AXES[axis] + "1")]
    arrived = arrived[np.isfinite(arrived)]
    return float(arrived.mean() / length) if arrived.size else float("nan")


def diffusive_tortuosity(
    mask: np.ndarray, axis: int, spacing: tuple[float, ...], tolerance: float = 1e-6
) -> dict:
    """Steady diffusion through the pore mask's clusters that span `axis` (the others are
    dropped, as PoreSpy's `trim_nonpercolating_paths`) between c = 1 on the first and c = 0
    on the last plane: finite volumes with conductance D0·A_face/h between face neighbours.
    D_eff/D0 = flux · (n - 1) h / (A · Δc) with A the cross-section; τ = ε·D0/D_eff with ε
    the spanning clusters' volume fraction (PoreSpy's `tortuosity_fd`)."""
    import pyamg

    nan = {"tortuosity": float("nan"), "formation_factor": float("nan")}
    mask = percolating(ndimage.label(mask)[0], axis)
    n = mask.shape[axis]
    porosity = float(np.count_nonzero(mask) / mask.size)
    if n < 2 or porosity == 0:
        return nan | {"effective_porosity": porosity, "flux_mismatch": float("nan")}
    position = np.indices(mask.shape, sparse=True)[axis]
    concentration = np.zeros(mask.shape)  # the Dirichlet planes' values, then the solution
    concentration[(slice(None),) * axis + (0,)] = 1.0
    unknown = mask & (position > 0) & (position < n - 1)
    size = int(np.count_nonzero(unknown))
    index = np.full(mask.shape, -1, np.int64)
    index[unknown] = np.arange(size)
    diagonal, rhs = np.zeros(size), np.zeros(size)
    rows, cols, vals = [np.arange(size)], [np.arange(size)], []
    for b in range(3):
        conductance = math.prod(spacing) / spacing[b] ** 2
        head = (slice(None),) * b + (slice(0, -1),)
        tail = (slice(None),) * b + (slice(1, None),)
        both = mask[head] & mask[tail]
        ends = [(index[head][both], concentration[head][both])]
        ends.append((index[tail][both], concentration[tail][both]))
        for (mine, _), (other, other_value) in (ends, ends[::-1]):
            own = mine >= 0
            diagonal += np.bincount(mine[own], minlength=size) * conductance
            coupled = own & (other >= 0)
            rows.append(mine[coupled])
            cols.append(other[coupled])
            vals.append(np.full(np.count_nonzero(coupled), -conductance))
            fixed = own & (other < 0)  # a Dirichlet neighbour (only along the axis)
            rhs += np.bincount(mine[fixed], conductance * other_value[fixed], minlength=size)
    if size:
        matrix = sparse.csr_array(
            (np.concatenate([diagonal, *vals]), (np.concatenate(rows), np.concatenate(cols))),
            shape=(size, size),
        )
        solver = pyamg.ruge_stuben_solver(matrix)
        concentration[unknown] = solver.solve(rhs, tol=tolerance, accel="cg", maxiter=1000)
    conductance = math.prod(spacing) / spacing[axis] ** 2
    fluxes = []
    for plane in (0, n - 2):
        near = (slice(None),) * axis + (plane,)
        far = (slice(None),) * axis + (plane + 1,)
        both = mask[near] & mask[far]
        fluxes.append(conductance * (concentration[near][both] - concentration[far][both]).sum())
    flux_in, flux_out = fluxes
    area = math.prod(mask.shape[a] * spacing[a] for a in range(3) if a != axis)
    relative = flux_in * (n - 1) * spacing[axis] / area
    if relative <= 0:
        return nan | {"effective_porosity": porosity, "flux_mismatch": float("nan")}
    return {
        "tortuosity": porosity / relative,
        "formation_factor": 1 / relative,
        "effective_porosity": porosity,
        "flux_mismatch": float(abs(flux_in - flux_out) / max(abs(flux_in), abs(flux_out))),
    }


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


def analyze(
    solid: np.ndarray, voxel_nm: tuple[float, ...], settings: StructureSettings, log=None
) -> tuple[dict, dict[str, np.ndarray]]:
    """Every metric of the module's docstring for one (z, y, x) segmentation (1 = solid),
    with the seconds each step took; and maps for the figures: the analysis grid's middle
    z-plane labelled 0 solid, 1 pore outside the largest cluster, 2 pore of the largest."""
    say = log.info if log else (lambda *args: None)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def done(step: str) -> None:
        nonlocal clock
        seconds[step] = time.perf_counter() - clock
        clock = time.perf_counter()
        say("%s: %.1f s", step, seconds[step])

    voxel_nm = tuple(float(v) for v in voxel_nm)
    pore = np.asarray(solid) == 0
    result = {"shape": list(pore.shape), "voxel_size_nm": list(voxel_nm)}
    result["porosity"] = porosity_profiles(pore, voxel_nm)
    grid, spacing = analysis_shape(pore.shape, voxel_nm, settings)
    say("analysis grid %s of %s nm", grid, tuple(round(s, 3) for s in spacing))
    done("porosity")
    pore = resample(pore, voxel_nm, grid)
    result["analysis_grid"] = {
        "shape": list(grid),
        "spacing_nm": list(spacing),
        "porosity": float(np.count_nonzero(pore) / pore.size),
    }
    done("resample")
    volume = math.prod(n * h for n, h in zip(grid, spacing, strict=True))
    result["specific_surface_area_per_um"] = surface_area(pore, spacing) / volume * 1000
    done("surface")
    for name, phase in (("pore", pore), ("solid", ~pore)):
        thickness = local_thickness(phase, spacing, settings.max_radii)
        result[f"{name}_size"] = size_distribution(thickness, phase)
        del thickness
        done(f"{name}_thickness")
    labels, sizes = clusters(pore)
    result["connectivity"] = connectivity(labels, sizes)
    middle = labels[grid[0] // 2]
    largest = middle == np.argmax(sizes[1:]) + 1 if sizes.size > 1 else np.zeros_like(middle)
    maps = {"clusters": (middle > 0).astype(np.uint8) + largest}
    del labels, middle
    done("connectivity")
    result["tortuosity"] = {}
    for axis, name in enumerate(AXES):
        result["tortuosity"][name] = {"geometric": geometric_tortuosity(pore, axis, spacing)}
        done(f"geometric_{name}")
        result["tortuosity"][name] |= diffusive_tortuosity(pore, axis, spacing, settings.tolerance)
        done(f"diffusive_{name}")
    result["seconds"] = seconds
    return result, maps


def _number(value) -> float:
    """A metric as a float: booleans as 0/1, JSON's null (a NaN written out) as NaN."""
    return float("nan") if value is None else float(value)


def scalar_metrics(result: dict) -> dict[str, float]:
    """The table's metrics of one analysis (as returned, or read back from its JSON): name ->
    value, booleans as 0/1, undefined values (no percolation, no pore) as NaN."""
    row = {
        "porosity": result["porosity"]["overall"],
        "porosity_analysis_grid": result["analysis_grid"]["porosity"],
        "specific_surface_area_per_um": result["specific_surface_area_per_um"],
    }
    for phase in ("pore", "solid"):
        for key in ("mean_nm", "d10_nm", "d50_nm", "d90_nm"):
            row[f"{phase}_diameter_{key}"] = result[f"{phase}_size"][key]
    row |= result["connectivity"]
    for axis, values in result["tortuosity"].items():
        row[f"tortuosity_geometric_{axis}"] = values["geometric"]
        row[f"tortuosity_diffusive_{axis}"] = values["tortuosity"]
        row[f"effective_porosity_{axis}"] = values["effective_porosity"]
    return {key: _number(value) for key, value in row.items()}


def structure_table(results: dict[str, dict]) -> list[dict]:
    """Rows (dataset, metric, segmentation, truth, difference) of structure.csv; `results`
    maps a data set to its structure.json (`segmentation` and, where known, `truth`)."""
    rows = []
    for name, analyses in results.items():
        mine = scalar_metrics(analyses["segmentation"])
        truth = scalar_metrics(analyses["truth"]) if analyses.get("truth") else {}
        for metric, value in mine.items():
            known = truth.get(metric, float("nan"))
            rows.append(
                {
                    "dataset": name,
                    "metric": metric,
                    "segmentation": value,
                    "truth": known,
                    "difference": value - known,
                }
            )
    return rows


def json_safe(value):
    """NaN and infinity as null, so that the JSON is strict."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
