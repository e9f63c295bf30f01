"""Transport on the analysis grid: pore clusters and their connectivity to the faces,
percolation, and geometric and diffusive tortuosity."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, sparse

from .grid import AXES

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
