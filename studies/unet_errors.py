"""Where the segmentations of a finished demo run go wrong, against the demo's truth.

For each data set and method (the default network `cnn`, the forest `rf`, the Otsu floor),
the full-volume mIoU and porosity error, the errors in bands of in-plane distance to the
truth's boundary (`errors_by_boundary_distance`), and the mIoU of the first and last slices
against the slices between. With `--flips`, the U-Net of the run
(results/model/best.keras) also scores every slice four times, as it is and flipped in y, in
x and in both, and the mean of the four scores (test-time augmentation) is post-processed
with the run's own sigma, T and minimum object size, beside the run's own single scores
post-processed the same way.

    snakemake --cores all                       # the demo, in the repository
    python studies/unet_errors.py --flips       # 3 minutes on 2 cores with --flips
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import tifffile
from scipy import ndimage

from fibseg.evaluation.evaluate import otsu_volume
from fibseg.evaluation.metrics import miou, porosity
from fibseg.evaluation.postprocess import segment_as_chosen
from fibseg.networks.windows import neighbour_slices

EDGES = (0, 1.5, 3, 6)
FLIPS = ((), (1,), (2,), (1, 2))  # axes of an (n_z, y, x) stack


def boundary_distance(truth: np.ndarray) -> np.ndarray:
    """Per voxel of a (z, y, x) truth, the in-plane distance (px) to the nearest voxel of the
    other class in its slice: 1 next to the boundary, sqrt(2) diagonally next to it."""
    # each transform is 0 on the other class: their sum is every voxel's own distance
    truth = np.asarray(truth).astype(bool)
    return np.stack(
        [ndimage.distance_transform_edt(p) + ndimage.distance_transform_edt(~p) for p in truth]
    )


def errors_by_boundary_distance(
    truth: np.ndarray, segmentation: np.ndarray, edges: tuple[float, ...] = EDGES
) -> list[dict]:
    """Where a segmentation's errors lie, in bands of in-plane distance to the truth's
    boundary (`boundary_distance`): each band (edges[i], edges[i+1]], the last open-ended,
    with its share of the voxels, its error rate, its share of all errors and its pores read
    as solid (as a share of all errors)."""
    truth, segmentation = np.asarray(truth), np.asarray(segmentation)
    if truth.shape != segmentation.shape:
        raise ValueError(f"truth {truth.shape} and segmentation {segmentation.shape} differ")
    solid = truth.astype(bool)
    distance = boundary_distance(solid)
    wrong = solid != segmentation.astype(bool)
    pore_as_solid = wrong & ~solid
    errors = max(int(np.count_nonzero(wrong)), 1)
    rows = []
    for low, high in zip(edges, (*edges[1:], np.inf), strict=True):
        band = (distance > low) & (distance <= high)
        voxels = int(np.count_nonzero(band))
        rows.append(
            {
                "from_px": low,
                "to_px": high,
                "voxel_share": voxels / truth.size,
                "error_rate": np.count_nonzero(wrong & band) / voxels if voxels else 0.0,
                "error_share": np.count_nonzero(wrong & band) / errors,
                "pore_as_solid_share": np.count_nonzero(pore_as_solid & band) / errors,
            }
        )
    return rows


def read(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[key][:]


def flipped_scores(engine, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The U-Net's scores of every slice as they are, and the mean over the four flips."""
    plain, mean = np.empty(volume.shape, np.float32), np.empty(volume.shape, np.float32)
    for z in range(len(volume)):
        stack = volume[neighbour_slices(z, engine.n_z, len(volume))]
        scores = [
            np.flip(
                engine.scores(np.ascontiguousarray(np.flip(stack, axes))), [a - 1 for a in axes]
            )
            for axes in FLIPS
        ]
        plain[z], mean[z] = scores[0], np.mean(scores, axis=0)
    return plain, mean


def summary(name: str, truth: np.ndarray, solid: np.ndarray) -> str:
    """One line: mIoU, porosity error, edge slices and the errors by boundary distance."""
    solid = solid.astype(np.uint8)
    per_slice = [miou(truth[z], solid[z]) for z in range(len(truth))]
    bands = errors_by_boundary_distance(truth, solid, EDGES)
    band_text = "  ".join(
        f"({b['from_px']:g},{b['to_px']:g}] {100 * b['voxel_share']:.0f}% of voxels: "
        f"{100 * b['error_rate']:.1f}% wrong, {100 * b['error_share']:.0f}% of errors "
        f"({100 * b['pore_as_solid_share']:.0f} pore as solid)"
        for b in bands
    )
    return (
        f"  {name:<12} mIoU {miou(truth, solid):.3f}, porosity "
        f"{100 * (porosity(solid) - porosity(truth)):+.1f} points; slices first "
        f"{per_slice[0]:.2f}, last {per_slice[-1]:.2f}, between {np.mean(per_slice[1:-1]):.3f}\n"
        f"  {'':<12} {band_text}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default=".", type=Path, help="a finished demo run")
    parser.add_argument("--flips", action="store_true", help="test-time flips of the U-Net")
    args = parser.parse_args(argv)
    results = args.run / "results"
    datasets = sorted(path.name for path in (results / "demo").iterdir() if path.is_dir())
    chosen = json.loads((results / "postprocess.json").read_text())
    engine = None
    if args.flips:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        from fibseg.inference.unet_engine import UnetEngine

        model = keras.models.load_model(results / "model/best.keras", compile=False)
        engine = UnetEngine(model)
    for name in datasets:
        truth = tifffile.imread(results / "demo" / name / "truth.tif")
        print(f"{name}:")
        print(summary("cnn", truth, read(results / name / "segmentation.h5", "segmentation")))
        forest = results / "forest" / name / "segmentation.h5"
        if forest.exists():
            print(summary("rf", truth, read(forest, "segmentation")))
        print(summary("otsu", truth, otsu_volume(str(results / name / "preprocessed.h5"))))
        if engine is not None:
            start = time.perf_counter()
            plain, mean = flipped_scores(engine, read(results / name / "preprocessed.h5", "volume"))
            seconds = time.perf_counter() - start
            print(summary("unet 1 view", truth, segment_as_chosen(plain, chosen)))
            print(summary("unet 4 flips", truth, segment_as_chosen(mean, chosen)))
            print(f"  (four scorings of {len(truth)} slices in {seconds:.0f} s)")


if __name__ == "__main__":
    main()
