"""Time of rule align's registration (fibseg.preprocess.registration.estimate_alignment) on
full-size slices, against the same registration as it ran before (the reference): each pair's
two slices transformed again for every pair, the drift test's two halves read in two passes,
one thread. Both give the same transforms (compared here).

The slices are one smooth random texture (Gaussian, 3 px) drifting by a random walk of
0.7 px per slice, with noise, uint16.

    python benchmarks/align.py                      # 8 slices of 2247 x 3372, 1 and 2 threads
    python benchmarks/align.py --slices 4 --shape 1024,1024
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fibseg.preprocess import registration  # noqa: E402
from fibseg.runtime.settings import AlignSettings  # noqa: E402


def drifting_stack(slices: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(slices, height, width) uint16 views of one texture along a random walk."""
    rng = np.random.default_rng(seed)
    margin = 32
    base = ndi.gaussian_filter(
        rng.standard_normal((height + 2 * margin, width + 2 * margin), np.float32), 3
    )
    base = base / base.std()
    walk = np.cumsum(rng.normal(0, 0.7, (slices, 2)), axis=0)
    walk[0] = 0
    planes = []
    for dy, dx in walk:
        moved = ndi.shift(base, (dy, dx), order=1, mode="reflect")[
            margin : margin + height, margin : margin + width
        ]
        noisy = moved * 8000 + 30000 + rng.normal(0, 2000, moved.shape)
        planes.append(np.clip(noisy, 0, 65535).astype(np.uint16))
    return np.stack(planes)


def reference_pairs(stack: np.ndarray, settings: AlignSettings) -> pd.DataFrame:
    """The pairs as measured before: every pair transformed from the slices' signals again."""
    rows = []
    signals = {}
    for z in range(len(stack)):
        signals[z] = registration.tracking_signal(stack[z], settings.band_px, settings.roi)
        for lag in range(1, settings.lags + 1):
            if z - lag < 0:
                continue
            shift = phase_cross_correlation(
                signals[z - lag], signals[z], upsample_factor=settings.upsample, normalization=None
            )[0]
            dx, dy = -shift[::-1]
            rows.append({"z": z, "ref": z - lag, "dx": dx, "dy": dy, "dangle": 0.0})
    return pd.DataFrame(rows)


def reference_halves(stack: np.ndarray, settings: AlignSettings):
    """The drift test's halves as measured before: one pass per half, real-space pairs."""
    height, width = stack.shape[1:]
    halves = [(0, 0, height, width // 2), (0, width // 2, height, width - width // 2)]
    steps = np.zeros((2, len(stack) - 1, 2))
    for h, half in enumerate(halves):
        previous = None
        for z in range(len(stack)):
            current = registration.tracking_signal(stack[z], settings.band_px, half)
            if previous is not None:
                steps[h, z - 1] = registration.pair_shift(previous, current, settings.upsample)
            previous = current
    return steps[0], steps[1]


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--shape", default="2247,3372", help="height,width")
    args = parser.parse_args()
    height, width = map(int, args.shape.split(","))
    stack = drifting_stack(args.slices, height, width)
    settings = AlignSettings()
    print(f"{args.slices} slices of {height} x {width}, {os.cpu_count()} cores")

    def reference() -> tuple[pd.DataFrame, tuple]:
        return reference_pairs(stack, settings), reference_halves(stack, settings)

    ref_s, (ref_pairs, ref_halves) = timed(reference)
    print(f"reference (before): {ref_s / args.slices:.2f} s per slice")
    for threads in (1, 2):
        seconds, _ = timed(registration.estimate_alignment, stack, settings, threads)
        pairs = registration.measure_pairs(stack, settings, threads)
        halves = registration.split_halves(stack, settings, threads)
        difference = max(
            np.abs(pairs[["dx", "dy"]].to_numpy() - ref_pairs[["dx", "dy"]].to_numpy()).max(),
            *(np.abs(a - b).max() for a, b in zip(halves, ref_halves, strict=True)),
        )
        print(
            f"estimate_alignment, {threads} thread(s): {seconds / args.slices:.2f} s per slice, "
            f"{ref_s / seconds:.2f} x the reference's rate; largest difference of a "
            f"measured step {difference:.1e} px"
        )


if __name__ == "__main__":
    main()
