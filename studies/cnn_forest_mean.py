"""Are the CNN's and the forest's errors on the demo complementary? Full-volume mIoU of the
CNN's scores, the forest's and their mean, after the two-pass post-processing at sigma 0.5,
at the best T of a grid chosen on the truth itself: an upper bound for all three alike, a
diagnostic, not a method (the workflow chooses T on the validation regions).

Reads a finished demo run: results/{ds}/scores.h5, results/forest/{ds}/scores.h5 and
results/demo/{ds}/truth.tif for the demo data sets of config/demo.yaml.

    snakemake --cores all && python studies/cnn_forest_mean.py     # the check: 10 s
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import tifffile
import yaml

from fibseg.evaluation.metrics import miou
from fibseg.evaluation.postprocess import segment

THRESHOLDS = np.round(np.arange(0.15, 0.66, 0.05), 2)


def best_miou(scores: np.ndarray, truth: np.ndarray, min_size: int) -> tuple[float, float]:
    """Highest full-volume mIoU over THRESHOLDS at sigma 0.5, and its T."""
    return max((miou(truth, segment(scores, 0.5, t, min_size)), t) for t in THRESHOLDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="the run's directory")
    args = parser.parse_args()
    config = yaml.safe_load((args.project / "config/demo.yaml").read_text())
    min_size = config.get("postprocess", {}).get("min_object_voxels", 10)
    results = args.project / "results"
    for name in config["demo"]:
        truth = tifffile.imread(results / f"demo/{name}/truth.tif")
        with h5py.File(results / f"{name}/scores.h5") as cnn_file:
            cnn = cnn_file["scores"][:]
        with h5py.File(results / f"forest/{name}/scores.h5") as forest_file:
            forest = forest_file["scores"][:]
        cells = []
        for label, scores in (("CNN", cnn), ("forest", forest), ("mean", (cnn + forest) / 2)):
            value, threshold = best_miou(scores, truth, min_size)
            cells.append(f"{label} {value:.3f} (T {threshold:.2f})")
        print(f"{name}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
