"""Time and peak memory of the pore-structure analysis (fibseg.structure.analysis.analyze),
and a plain extrapolation to a full paper volume (200 x 2247 x 3372 voxels of 50 x 10 x 10 nm).

Each case is a synthetic random two-phase volume (a Gaussian random field, smoothed like the
demo's, thresholded at porosity 0.3). A first child process makes it and saves it; a second
loads it and runs the analysis alone, so that the second one's peak RSS
(resource.getrusage ru_maxrss) is Python, the volume and the analysis, nothing else.

Two cases separate the two costs: a large native volume analysed on a small grid measures
what scales with the native voxels (reading, profiles, the slice-by-slice resampling), and a
small native volume analysed on a large grid measures what scales with the analysis grid's
voxels (everything else).

    python benchmarks/structure.py                    # both cases, about 5 minutes on 2 cores
    python benchmarks/structure.py --cases 40,562,843:2e6
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER_SHAPE = (200, 2247, 3372)
VOXEL_NM = (50.0, 10.0, 10.0)
NATIVE_STEPS = ("porosity", "resample")  # the steps whose cost follows the native voxels
DEFAULT_CASES = "100,1124,1686:2e6 50,562,843:16e6"
BASELINE_MB = 32 * 1024


def make_volume(shape: tuple[int, ...], path: str, seed: int = 0) -> None:
    """A solid (1) / pore (0) uint8 volume at porosity 0.3, written with np.save."""
    from scipy import ndimage

    field = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    # the demo's structure: 4 px in x-y, isotropic in nm (0.8 slice of 50 nm)
    field = ndimage.gaussian_filter(field, (0.8, 4, 4), output=np.float32, mode="wrap")
    threshold = np.quantile(field[:: max(1, shape[0] // 10)], 0.3)
    np.save(path, (field > threshold).astype(np.uint8))


def run_case(path: str, max_voxels: int) -> dict:
    """The analysis of one saved volume; its steps' seconds and this process's peak RSS."""
    from fibseg.runtime.settings import StructureSettings
    from fibseg.structure.analysis import analyze, scalar_metrics

    solid = np.load(path)
    start = time.perf_counter()
    result, _ = analyze(solid, VOXEL_NM, StructureSettings(max_voxels=max_voxels))
    total = time.perf_counter() - start
    return {
        "native_shape": list(solid.shape),
        "native_voxels": int(solid.size),
        "grid_shape": result["analysis_grid"]["shape"],
        "grid_voxels": math.prod(result["analysis_grid"]["shape"]),
        "spacing_nm": result["analysis_grid"]["spacing_nm"],
        "seconds": result["seconds"],
        "total_seconds": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metrics": scalar_metrics(result),
    }


def child(*args: str) -> str:
    """Run this script in a fresh process and return its stdout."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def baseline_mb() -> float:
    """Peak RSS of a process that imports the analysis' modules and does nothing else."""
    return float(child("--baseline").strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help="'z,y,x:max_voxels ...'")
    parser.add_argument("--make", nargs=2, help=argparse.SUPPRESS)  # child: shape, path
    parser.add_argument("--run", nargs=2, help=argparse.SUPPRESS)  # child: path, max_voxels
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_volume(tuple(int(n) for n in args.make[0].split(",")), args.make[1])
        return
    if args.run:
        print(json.dumps(run_case(args.run[0], int(float(args.run[1])))))
        return
    if args.baseline:
        import pyamg  # noqa: F401
        import skimage.graph
        import skimage.measure  # noqa: F401

        import fibseg.structure.analysis  # noqa: F401

        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return
    base = baseline_mb()
    print(f"Python with the analysis' imports: {base:.0f} MB peak RSS")
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.cases.split():
            shape, max_voxels = spec.split(":")
            path = str(Path(tmp) / "volume.npy")
            child("--make", shape, path)
            case = json.loads(child("--run", path, max_voxels))
            cases.append(case)
            report(case, base)
    extrapolate(cases, base)


def report(case: dict, base: float) -> None:
    native = sum(case["seconds"][s] for s in NATIVE_STEPS)
    print(
        f"\nnative {tuple(case['native_shape'])} ({case['native_voxels'] / 1e6:.1f} M voxels) "
        f"-> analysis grid {tuple(case['grid_shape'])} ({case['grid_voxels'] / 1e6:.2f} M "
        f"voxels of {case['spacing_nm'][0]:.1f} nm)"
    )
    steps = ", ".join(f"{k} {v:.1f}" for k, v in case["seconds"].items())
    print(f"  seconds: {steps}")
    print(
        f"  total {case['total_seconds']:.1f} s: native steps {native:.1f} s, "
        f"grid steps {case['total_seconds'] - native:.1f} s; peak RSS "
        f"{case['peak_rss_mb']:.0f} MB ({case['peak_rss_mb'] - base:.0f} MB above the imports)"
    )
    metrics = case["metrics"]
    print(
        f"  porosity {metrics['porosity']:.3f}, pore d50 {metrics['pore_diameter_d50_nm']:.0f} "
        f"nm, tortuosity z geometric {metrics['tortuosity_geometric_z']:.3f} / diffusive "
        f"{metrics['tortuosity_diffusive_z']:.3f}"
    )


def extrapolate(cases: list[dict], base: float) -> None:
    """Per-voxel rates of the largest native case and the largest grid case, scaled
    linearly (an assumption: EDTs and the multigrid solve are linear, the geodesic's heap
    n log n) to the paper volume."""
    native_case = max(cases, key=lambda c: c["native_voxels"])
    grid_case = max(cases, key=lambda c: c["grid_voxels"])
    native_seconds = sum(native_case["seconds"][s] for s in NATIVE_STEPS)
    per_native = native_seconds / native_case["native_voxels"]
    grid_seconds = grid_case["total_seconds"] - sum(grid_case["seconds"][s] for s in NATIVE_STEPS)
    per_grid = grid_seconds / grid_case["grid_voxels"]
    # memory: the native arrays (segmentation + pore mask, 1 byte each) are held throughout;
    # what is above them and the imports is charged to the analysis grid
    grid_bytes = (grid_case["peak_rss_mb"] - base) * 2**20 - 2 * grid_case["native_voxels"]
    per_grid_bytes = grid_bytes / grid_case["grid_voxels"]
    paper_native = math.prod(PAPER_SHAPE)
    print("\nEXTRAPOLATION (linear in voxels, not measured) to the paper volume", PAPER_SHAPE)
    print(
        f"  native steps: {per_native * 1e9:.1f} s per 1e9 native voxels (measured on "
        f"{native_case['native_voxels'] / 1e6:.0f} M) -> {per_native * paper_native / 60:.1f}"
        " min"
    )
    print(
        f"  grid steps: {per_grid * 1e6:.2f} s per 1e6 grid voxels, {per_grid_bytes:.0f} bytes"
        f" per grid voxel at the peak (measured on {grid_case['grid_voxels'] / 1e6:.1f} M)"
    )
    budget = BASELINE_MB * 2**20 * 0.8 - base * 2**20 - 2 * paper_native
    fit = int(budget / per_grid_bytes)
    print(
        f"  a 32 GB job with 20 % headroom holds {fit / 1e6:.0f} M grid voxels "
        f"(native arrays {2 * paper_native / 2**30:.1f} GiB)"
    )
    extent = math.prod(n * v for n, v in zip(PAPER_SHAPE, VOXEL_NM, strict=True))
    for grid in sorted({4_000_000, 16_000_000, 64_000_000, fit}):
        side = (extent / grid) ** (1 / 3)
        minutes = (per_native * paper_native + per_grid * grid) / 60
        memory = (base * 2**20 + 2 * paper_native + per_grid_bytes * grid) / 2**30
        print(
            f"  structure.max_voxels {grid / 1e6:6.0f} M: voxels of {side:5.1f} nm, "
            f"{minutes:6.1f} min, {memory:5.1f} GiB"
        )


if __name__ == "__main__":
    main()
