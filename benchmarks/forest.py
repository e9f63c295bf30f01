"""The random-forest baseline against the U-Net on full 2247 x 3372 slices, in the same run:
what rule predict_forest_slices does (fibseg.inference.ensemble.score_chunk with the saved
forest: read the slices, compute each slice's features once, the forest's votes, write the
chunk) per slice and at its peak memory, the U-Net's engine on one slice
(benchmarks/inference.py's child process), and what the forest's full-volume row costs at
200 slices, whole and as the block of forest.volume_slices that the workflow scores by
default.

The forest is trained as rule train_forest trains it (the config's defaults: 200 trees,
sigma_max 16, n_z 3, balanced classes) on the film of benchmarks/scale.py: 1 % of the voxels of
40 regions of 96 x 96 labelled from the truth. Tree depth, and so the time per voxel, depends
on the data; this film is easy.

    python benchmarks/forest.py [--rule-slices 4]
    python benchmarks/forest.py --slice 512,1024       # a quick check
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.inference import run_child  # noqa: E402
from benchmarks.scale import REGION, film_slices  # noqa: E402
from fibseg.pipeline.dag import centre_chunks  # noqa: E402
from fibseg.runtime.job import peak_rss_mb  # noqa: E402

TREES, SIGMA_MAX, N_Z = 200, 16.0, 3
DEPTH, VOLUME_SLICES, SLICES_PER_JOB = 200, 32, 16


def train(images: np.ndarray, truths: np.ndarray, seed: int = 0):
    """A forest as rule train_forest makes it, on 1 % of the voxels of 40 regions."""
    from fibseg.baselines.forest import forest_features, train_forest

    rng = np.random.default_rng(seed)
    features = forest_features(images[:N_Z], SIGMA_MAX)
    truth = truths[N_Z // 2]
    rows, labels = [], []
    for _ in range(40):
        y = int(rng.integers(0, truth.shape[0] - REGION))
        x = int(rng.integers(0, truth.shape[1] - REGION))
        picked = rng.random((REGION, REGION)) < 0.01
        rows.append(features[y : y + REGION, x : x + REGION][picked])
        labels.append(truth[y : y + REGION, x : x + REGION][picked])
    return train_forest(
        np.concatenate(rows), np.concatenate(labels), TREES, seed, threads=os.cpu_count() or 1
    )


def rule_path(folder: str, slices: int) -> None:
    """Child process: rule predict_forest_slices on the saved forest and volume; prints
    seconds per slice and the peak RSS."""
    from fibseg.inference.ensemble import score_chunk
    from fibseg.runtime.settings import InferenceSettings

    start = time.perf_counter()
    score_chunk(
        f"{folder}/preprocessed.h5",
        "bench",
        [f"{folder}/forest.joblib"],
        (0, slices),
        InferenceSettings(),
        os.cpu_count() or 1,
        True,
        f"{folder}/chunk.h5",
    )
    seconds = (time.perf_counter() - start) / slices
    print(f"FULL {seconds:.2f} {peak_rss_mb():.0f} forest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice", default="2247,3372", help="height,width")
    parser.add_argument("--rule-slices", type=int, default=4, help="slices of the forest's job")
    parser.add_argument("--child-rule", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rule:
        rule_path(args.child_rule, args.rule_slices)
        return
    from fibseg.baselines.forest import save_forest
    from fibseg.io.writers import write_h5

    height, width = (int(side) for side in args.slice.split(","))
    film = list(film_slices((args.rule_slices + N_Z, height, width)))
    images = np.stack([image for image, _ in film]).astype(np.float32) / 65535
    truths = np.stack([truth for _, truth in film])
    del film
    start = time.perf_counter()
    forest = train(images[-N_Z:], truths[-N_Z:])
    fit_seconds = time.perf_counter() - start
    depth = np.mean([tree.tree_.max_depth for tree in forest.estimators_])
    with tempfile.TemporaryDirectory() as folder:
        save_forest(forest, f"{folder}/forest.joblib", {"n_z": N_Z, "sigma_max": SIGMA_MAX})
        write_h5(f"{folder}/preprocessed.h5", {"volume": images[: args.rule_slices]})
        del images
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child-rule",
                folder,
                "--rule-slices",
                str(args.rule_slices),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(x for x in child.stdout.splitlines() if x.startswith("FULL"))
        forest_seconds, forest_mb = (float(value) for value in line.split()[1:3])
    unet_seconds, unet_mb, _ = run_child("--child-unet-slice", "--tile", "1024")
    block = len(centre_chunks(DEPTH, SLICES_PER_JOB, VOLUME_SLICES)) * SLICES_PER_JOB
    print(
        f"{os.cpu_count()} CPUs; forest of {TREES} trees (mean depth {depth:.1f}), fitted in "
        f"{fit_seconds:.1f} s; slices of {height} x {width}:"
    )
    print(
        f"forest  : {forest_seconds:6.1f} s per slice over a {args.rule_slices}-slice "
        f"predict_forest_slices job ({height * width / forest_seconds:,.0f} voxels/s), peak "
        f"RSS {forest_mb / 1024:.2f} GB"
    )
    print(
        f"U-Net   : {unet_seconds:6.1f} s (its engine, random weights, tile 1024), peak RSS "
        f"{unet_mb / 1024:.2f} GB"
    )
    print(f"ratio   : {forest_seconds / unet_seconds:6.1f} x the U-Net's time")
    print(
        f"at {DEPTH} slices: U-Net {DEPTH * unet_seconds / 60:.0f} min; forest whole "
        f"{DEPTH * forest_seconds / 60:.0f} min, its default block of {block} slices "
        f"(forest.volume_slices {VOLUME_SLICES} in jobs of {SLICES_PER_JOB}) "
        f"{block * forest_seconds / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
