"""Time and peak memory of rule postprocess: streamed slab by slab
(fibseg.evaluation.postprocess.write_segmentation) against the whole volume in memory (the former
script: segment_as_chosen, write_h5, write_tiff), and a plain extrapolation to 200 and 1000
slices of 2247 x 3372.

The scores are synthetic: a smooth random field (Gaussian, 4 px in x-y, correlated over a few
slices in z) squashed to [0, 1] at porosity ~0.3 with pixel noise, stored as float16 in an
HDF5 dataset chunked one slice per chunk, as rule stitch writes it. A first child process
writes them; each case then runs alone in a fresh child, whose peak RSS
(resource.getrusage ru_maxrss) is Python, the imports and that case's work. Both cases write
the segmentation (HDF5 and TIFF) and the two outputs are compared.

    python benchmarks/postprocess.py                          # 64 x 2247 x 3372, both cases
    python benchmarks/postprocess.py --depths 16,32,64        # streamed RSS flat in depth
    python benchmarks/postprocess.py --shape 16,512,512       # a quick check
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHOSEN = {"sigma": 2.0, "threshold": 0.5, "min_object_voxels": 100}
ATTRS = {**CHOSEN, "voxel_size_nm_zyx": [50.0, 10.0, 10.0]}
EXTRAPOLATE_DEPTHS = (200, 1000)
WHOLE_BYTES_PER_VOXEL = 30  # skip the whole-volume case where it would not fit in memory


def make_scores(shape: tuple[int, int, int], path: str, seed: int = 0) -> None:
    """Synthetic float16 scores in [0, 1], written a slice at a time."""
    import h5py
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    memory = 0.8  # correlation of consecutive slices: objects span a few slices
    field = np.zeros(shape[1:], np.float32)
    with h5py.File(path, "w") as handle:
        scores = handle.create_dataset("scores", shape, np.float16, chunks=(1, *shape[1:]))
        for z in range(shape[0]):
            fresh = ndimage.gaussian_filter(rng.standard_normal(shape[1:], np.float32), 4)
            fresh /= fresh.std()
            field = memory * field + math.sqrt(1 - memory**2) * fresh
            noisy = 1 / (1 + np.exp(-3 * (field + 0.52))) + rng.normal(0, 0.15, shape[1:])
            scores[z] = np.clip(noisy, 0, 1).astype(np.float16)


def run_case(mode: str, scores_path: str, out_dir: str, slab_depth: int) -> dict:
    """One case; its seconds and this process's peak RSS."""
    import h5py

    from fibseg.evaluation.metrics import porosity
    from fibseg.evaluation.postprocess import segment_as_chosen, write_segmentation
    from fibseg.io.writers import write_h5, write_tiff

    h5_path, tif_path = Path(out_dir) / "segmentation.h5", Path(out_dir) / "segmentation.tif"
    start = time.perf_counter()
    with h5py.File(scores_path, "r") as handle:
        if mode == "streamed":
            pore = write_segmentation(
                handle["scores"], CHOSEN, h5_path, tif_path, ATTRS, slab_depth
            )
        else:
            solid = segment_as_chosen(handle["scores"][:].astype(np.float32), CHOSEN)
            solid = solid.astype(np.uint8)
            write_h5(h5_path, {"segmentation": solid}, ATTRS)
            write_tiff(tif_path, solid)
            pore = porosity(solid)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "porosity": pore,
    }


def child(*args: str) -> str:
    """Run this script in a fresh process and return its stdout."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"child {args} failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def same_outputs(first: Path, second: Path, slab_depth: int) -> bool:
    """The two cases' TIFFs byte for byte and HDF5 segmentations voxel for voxel."""
    import h5py

    if not filecmp.cmp(first / "segmentation.tif", second / "segmentation.tif", shallow=False):
        return False
    with (
        h5py.File(first / "segmentation.h5") as one,
        h5py.File(second / "segmentation.h5") as two,
    ):
        a, b = one["segmentation"], two["segmentation"]
        return a.shape == b.shape and all(
            np.array_equal(a[z : z + slab_depth], b[z : z + slab_depth])
            for z in range(0, a.shape[0], slab_depth)
        )


def available_mb() -> float:
    """MemAvailable of this machine (Linux), or infinity where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="64,2247,3372", help="z,y,x of the scores")
    parser.add_argument("--depths", help="several depths z1,z2,... (each with --shape's y,x)")
    parser.add_argument("--slab-depth", type=int, default=16, help="postprocess.slab_depth")
    parser.add_argument("--streamed-only", action="store_true", help="skip the whole volume")
    parser.add_argument("--tmp", default=None, help="folder for the scores and outputs")
    parser.add_argument("--make", nargs=2, help=argparse.SUPPRESS)  # child: shape, path
    parser.add_argument("--run", nargs=4, help=argparse.SUPPRESS)  # child: mode, in, out, slab
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_scores(tuple(int(n) for n in args.make[0].split(",")), args.make[1])
        return
    if args.run:
        mode, scores, out, slab = args.run
        print(json.dumps(run_case(mode, scores, out, int(slab))))
        return
    if args.baseline:
        import h5py  # noqa: F401
        import tifffile  # noqa: F401

        import fibseg.evaluation.postprocess  # noqa: F401

        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return

    from fibseg.pipeline.dag import postprocess_memory_mb

    shape = [int(n) for n in args.shape.split(",")]
    depths = [int(d) for d in args.depths.split(",")] if args.depths else [shape[0]]
    base = float(child("--baseline").strip())
    print(f"Python with post-processing's imports: {base:.0f} MB peak RSS")
    print(
        f"sigma {CHOSEN['sigma']}, T {CHOSEN['threshold']}, min size "
        f"{CHOSEN['min_object_voxels']}; slabs of {args.slab_depth} slices"
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for depth in depths:
            volume = (depth, *shape[1:])
            voxels = math.prod(volume)
            scores = str(Path(tmp) / "scores.h5")
            child("--make", ",".join(map(str, volume)), scores)
            row = {"shape": volume, "voxels": voxels}
            modes = ["streamed"]
            need_mb = voxels * WHOLE_BYTES_PER_VOXEL / 2**20
            if args.streamed_only:
                pass
            elif need_mb < 0.8 * available_mb():
                modes.append("whole")
            else:
                print(f"  whole volume of {volume} skipped: would need ~{need_mb / 1024:.0f} GB")
            for mode in modes:
                out = Path(tmp) / mode
                out.mkdir(exist_ok=True)
                row[mode] = json.loads(child("--run", mode, scores, str(out), str(args.slab_depth)))
            if "whole" in row:
                row["equal"] = same_outputs(
                    Path(tmp) / "streamed", Path(tmp) / "whole", args.slab_depth
                )
            row["requested_mb"] = postprocess_memory_mb(volume, args.slab_depth)
            rows.append(row)
            report(row)
            for path in Path(tmp).glob("*/*"):
                path.unlink()
            os.remove(scores)
    extrapolate(rows, base, args.slab_depth)


def report(row: dict) -> None:
    voxels = row["voxels"]
    print(f"\nscores {tuple(row['shape'])} ({voxels / 1e6:.0f} M voxels, float16)")
    for mode in ("streamed", "whole"):
        if mode in row:
            case = row[mode]
            print(
                f"  {mode:8s} {case['seconds']:7.1f} s  {voxels / case['seconds'] / 1e6:6.2f} M "
                f"voxels/s  peak RSS {case['peak_rss_mb']:7.0f} MB  porosity {case['porosity']:.4f}"
            )
    request = row["requested_mb"]
    print(f"  rule's memory request (fibseg.pipeline.dag.postprocess_memory_mb): {request} MB")
    if "whole" in row:
        streamed, whole = row["streamed"], row["whole"]
        print(
            f"  streamed / whole: time {streamed['seconds'] / whole['seconds']:.2f}, peak RSS "
            f"{streamed['peak_rss_mb'] / whole['peak_rss_mb']:.2f}; outputs identical: "
            f"{row['equal']}"
        )


def extrapolate(rows: list[dict], base: float, slab_depth: int) -> None:
    """Time linear in the voxels (the largest measured case's rate); the streamed peak RSS
    as measured at the largest depth (it holds one slab, whatever the depth); the whole
    volume's peak RSS linear in the voxels above the imports."""
    largest = max(rows, key=lambda r: r["voxels"])
    _, height, width = largest["shape"]
    print(
        f"\nEXTRAPOLATION (not measured; from the {tuple(largest['shape'])} case, time linear "
        "in voxels, streamed RSS flat in depth)"
    )
    for depth in EXTRAPOLATE_DEPTHS:
        voxels = depth * height * width
        scale = voxels / largest["voxels"]
        streamed = largest["streamed"]
        line = (
            f"  {depth} x {height} x {width}: streamed ~{streamed['seconds'] * scale / 60:.1f} min,"
            f" ~{streamed['peak_rss_mb']:.0f} MB"
        )
        if "whole" in largest:
            whole = largest["whole"]
            per_voxel = (whole["peak_rss_mb"] - base) / largest["voxels"]
            line += (
                f"; whole volume ~{whole['seconds'] * scale / 60:.1f} min, "
                f"~{(base + per_voxel * voxels) / 1024:.1f} GB"
            )
        print(line)
    if len(rows) > 1:
        rss = [r["streamed"]["peak_rss_mb"] for r in rows]
        print(
            f"  measured streamed peak RSS over depths {[r['shape'][0] for r in rows]}: "
            f"{', '.join(f'{m:.0f}' for m in rss)} MB (slabs of {slab_depth})"
        )


if __name__ == "__main__":
    main()
