"""How far fibseg's alignment (rule align: StackReg, each slice registered to the previous
one) leaves the demo volumes from the frame of their first slice, measured against the
simulator's known drift, and what that costs a segmentation scored in the wrong frame.

For each demo data set of config/config.yaml (or --seeds for more draws of HPC30's spec):
- the residual: per slice, the largest distance (px) over 9 points (corners, edge middles,
  centre) between where the aligned slice shows the sample and where the first slice's frame
  puts it; its mean and maximum over the slices, and the mean over the first and last 8;
- the neighbour step: per slice, the largest of the same points' distances between where
  it and the previous aligned slice show the same point of the sample (what blurs a
  next-slice cue once the truth follows the alignment), and the largest rotation left (°);
- the same after registering on filtered slices (high-pass: minus a Gaussian of sigma 8;
  DoG: Gaussian 1 minus Gaussian 8) or for translation only (`StackReg.TRANSLATION`: the
  demo's drift rotates by 0.05° per slice at most in one standard deviation), candidate
  remedies;
- the ceiling: the full-volume mIoU of the truth as seen on the aligned volume
  (fibseg.synth.seen_after_alignment) against the truth in the first slice's frame, i.e. what
  a perfect segmentation of the aligned volume scores against a first-slice truth.

    python benchmarks/alignment_error.py             # about 1 minute on 2 cores
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from pystackreg import StackReg
from scipy import ndimage as ndi

from fibseg.metrics import miou
from fibseg.preprocess import register_to_previous
from fibseg.synth import SynthSpec, seen_after_alignment, synthesize

REPO = Path(__file__).resolve().parents[1]
FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "high-pass": lambda image: image - ndi.gaussian_filter(image, 8),
    "DoG": lambda image: ndi.gaussian_filter(image, 1) - ndi.gaussian_filter(image, 8),
}


def moved_points(drift: np.ndarray, alignment: np.ndarray, shape: tuple[int, int]):
    """9 points (corners, edge middles, centre) and where drift @ alignment sends them."""
    height, width = shape
    points = np.array(
        [(x, y, 1.0) for x in (0, width / 2, width - 1) for y in (0, height / 2, height - 1)]
    ).T
    return points, np.einsum("zij,jp->zip", drift @ alignment, points)


def residual_px(drift: np.ndarray, alignment: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per slice, the largest of 9 points' distances between drift @ alignment and identity."""
    points, moved = moved_points(drift, alignment, shape)
    return np.hypot(*(moved[:, :2] - points[None, :2]).transpose(1, 0, 2)).max(axis=1)


def neighbour_step_px(
    drift: np.ndarray, alignment: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Per slice after the first, the largest of 9 points' distances between where it and the
    previous aligned slice show the same point of the sample."""
    _, moved = moved_points(drift, alignment, shape)
    return np.hypot(*np.diff(moved[:, :2], axis=0).transpose(1, 0, 2)).max(axis=1)


def rotation_left_deg(drift: np.ndarray, alignment: np.ndarray) -> float:
    """The largest rotation (degrees) of drift @ alignment over the slices."""
    residual = drift @ alignment
    return float(np.abs(np.degrees(np.arctan2(residual[:, 1, 0], residual[:, 0, 0]))).max())


def describe(residual: np.ndarray) -> str:
    return (
        f"mean {residual.mean():4.2f} max {residual.max():5.2f} "
        f"(first 8 {residual[:8].mean():4.2f}, last 8 {residual[-8:].mean():4.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=0, help="extra draws of HPC30's spec")
    args = parser.parse_args()
    demo = yaml.safe_load((REPO / "config/config.yaml").read_text())["demo"]
    specs = {name: SynthSpec(**fields) for name, fields in demo.items()}
    specs |= {f"seed{s}": SynthSpec(porosity=0.30, seed=s) for s in range(100, 100 + args.seeds)}
    for name, spec in specs.items():
        data = synthesize(spec)
        shape = data["volume"].shape[1:]
        print(f"{name}: {spec.slices} slices of {shape[0]} x {shape[1]}", flush=True)
        registrations = {"fibseg's alignment": register_to_previous(data["volume"])}
        for label, apply in FILTERS.items():
            filtered = np.stack([apply(plane.astype(np.float64)) for plane in data["volume"]])
            registrations[f"registered on {label}"] = register_to_previous(filtered)
        registrations["translation only"] = register_to_previous(
            data["volume"], StackReg.TRANSLATION
        )
        for label, alignment in registrations.items():
            residual = residual_px(data["drift"], alignment, shape)
            step = neighbour_step_px(data["drift"], alignment, shape)
            print(
                f"  {label + ':':27s} residual (px) {describe(residual)}; neighbour step "
                f"(px) mean {step.mean():4.2f} max {step.max():4.2f}; rotation left "
                f"{rotation_left_deg(data['drift'], alignment):4.2f}°"
            )
        seen = seen_after_alignment(data)["truth"]
        print(f"  ceiling against the first-slice truth: mIoU {miou(data['truth'], seen):.3f}")


if __name__ == "__main__":
    main()
