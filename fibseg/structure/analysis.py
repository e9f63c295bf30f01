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

Why not PoreSpy (3.2.0): it pulls in VTK, PyVista, numba and dask, its
`tortuosity_fd` needs OpenPNM on top, and its local thickness and tortuosity assume cubic
voxels of side 1. The algorithms here are the same (local thickness by repeated distance
transforms as `local_thickness_dt`; the finite-volume diffusion of `tortuosity_fd`, with
Dirichlet layers at the first and last voxel planes and L - 1 spacings between them), written
with scipy and scikit-image for per-axis spacing, plus PyAMG (~9 MB, numpy and scipy only):
its Ruge-Stüben multigrid preconditions conjugate gradients, as in `tortuosity_fd`.

The grid it runs on, and how anisotropic voxels and memory are handled: `fibseg.structure.grid`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..runtime.settings import StructureSettings
from .grid import AXES, analysis_shape, porosity_profiles, resample
from .sizes import local_thickness, size_distribution, surface_area
from .transport import clusters, connectivity, diffusive_tortuosity, geometric_tortuosity


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
