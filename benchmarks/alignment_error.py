"""How far fibseg's registrations leave simulated stacks from the frame of their first
slice, measured against the simulator's known drift: the paper's previous-slice chain
(`align.method: previous`, config/paper.yaml) beside the joint solve (`align.method: joint`,
the default) and variants of it.

Stacks:
- the demo data sets of config/demo.yaml (a random-walk drift with rotation; `--style easy`
  for the easy generator's);
- `--seeds` draws (default 3) of an HPC30-like volume for each kind of drift: none, walk,
  trend (slow drift plus jitter, with rotation), trend-still-angle (the same without
  rotation), and trend-fiducial (a trend of half the speed, without rotation, with a fiducial mark,
  registered through `align.roi` on the mark with `band_px` 0.5-4: a translation measured
  on one mark cannot tell a rotation).

Per stack and registration:
- the residual: per slice, the largest distance (px) over 9 points (corners, edge middles,
  centre) between where the aligned slice shows the sample and where the first slice's frame
  puts it; its mean and maximum over the slices, and the mean over the first and last 8
  slices (how it grows with depth);
- the largest rotation left (degrees) and whether the joint solve found drift above the
  noise (`drift`; `still` when it kept the slices as acquired).
A summary per kind of stack closes: the mean of the stacks' mean residuals and the worst
residual of any slice. For the demo data sets it also prints the ceiling (the full-volume
mIoU of the truth as seen on the aligned volume against the sample's truth: what a perfect
segmentation of the aligned volume scores in the sample's frame), what one pair of
neighbouring slices can tell of a rotation (`pair_rotation_noise_deg`) and, with `--structure`,
the pore structure of the truth as seen on the aligned volume beside the sample's own
(fibseg.structure.analysis.analyze on a grid of 1e6 voxels, as the demo): what the alignment's
shear and twist alone do to tortuosity, connectivity and sizes.

    python benchmarks/alignment_error.py               # about 3 minutes on 2 cores
    python benchmarks/alignment_error.py --kinds demo --structure   # about 4 minutes
    python benchmarks/alignment_error.py --kinds none,walk,trend --size 512
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fibseg.demo.films import STYLES, styled_spec
from fibseg.demo.synth import FIDUCIAL_ROWS, SynthSpec, seen_after_alignment, synthesize
from fibseg.evaluation.metrics import miou
from fibseg.preprocess.registration import estimate_alignment, pair_shift, tracking_signal
from fibseg.runtime.settings import AlignSettings, StructureSettings
from fibseg.structure.analysis import analyze, scalar_metrics

REPO = Path(__file__).resolve().parents[1]
REGISTRATIONS = {
    "previous (paper)": AlignSettings(method="previous", model="rigid"),
    "joint (default)": AlignSettings(),
    "joint, never still": AlignSettings(still=False),
    "joint, lag 1 only": AlignSettings(lags=1, still=False),
    "joint, rigid": AlignSettings(model="rigid", still=False),
    "joint, band 0.7-4": AlignSettings(band_px=(0.7, 4.0), still=False),
    "joint, band 2-16": AlignSettings(band_px=(2.0, 16.0), still=False),
}
KINDS = {
    "none": {"drift": "none"},
    "walk": {"drift": "walk"},
    "trend": {"drift": "trend"},
    "trend-still-angle": {"drift": "trend", "drift_deg": 0.0},
    "trend-fiducial": {"drift": "trend", "drift_px": 0.3, "drift_deg": 0.0, "fiducial": True},
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


def rotation_left_deg(drift: np.ndarray, alignment: np.ndarray) -> float:
    """The largest rotation (degrees) of drift @ alignment over the slices."""
    residual = drift @ alignment
    return float(np.abs(np.degrees(np.arctan2(residual[:, 1, 0], residual[:, 0, 0]))).max())


FIDUCIAL_BAND = (0.5, 4.0)  # a mark's edges are sharper than the structure's


def fiducial_roi(spec: SynthSpec) -> tuple[int, int, int, int]:
    """An alignment region (y, x, height, width) on the simulated fiducial mark."""
    return (4, spec.width // 2 - 64, FIDUCIAL_ROWS - 8, 128)


STRUCTURE_METRICS = (
    "tortuosity_geometric_z",
    "tortuosity_diffusive_z",
    "tortuosity_diffusive_x",
    "connected_to_z0",
    "pore_diameter_mean_nm",
    "specific_surface_area_per_um",
)


def print_structure(truths: dict[str, np.ndarray], voxel_nm: tuple[float, float, float]) -> None:
    """The pore structure of each truth (1 = solid) on the demo's analysis grid."""
    settings = StructureSettings(max_voxels=1_000_000)
    for label, truth in truths.items():
        metrics = scalar_metrics(analyze(truth, voxel_nm, settings)[0])
        values = ", ".join(f"{key} {metrics[key]:.3f}" for key in STRUCTURE_METRICS)
        print(f"  structure of {label}: {values}", flush=True)


def pair_rotation_noise_deg(volume: np.ndarray, drift: np.ndarray, tile: int = 96) -> float:
    """What one pair of neighbouring slices can tell of a rotation: per pair, the rotation
    (degrees) of the least-squares rigid fit to the phase-correlation shifts of a 3 x 3 grid
    of `tile`-pixel tiles (the registration's filtered signal), minus the true rotation step
    of the drift; the standard deviation over the pairs."""
    height, width = volume.shape[1:]
    starts_y, starts_x = (
        (0, (height - tile) // 2, height - tile),
        (0, (width - tile) // 2, width - tile),
    )
    centres = np.array(
        [(x + tile / 2 - width / 2, y + tile / 2 - height / 2) for y in starts_y for x in starts_x]
    )
    design = np.zeros((2 * len(centres), 3))
    design[0::2, 0], design[1::2, 1] = 1.0, 1.0
    design[0::2, 2], design[1::2, 2] = -centres[:, 1], centres[:, 0]  # dx = tx - a y, dy = ty + a x
    true = np.unwrap(np.arctan2(drift[:, 1, 0], drift[:, 0, 0]))
    errors = []
    for z in range(1, len(volume)):
        shifts = [
            pair_shift(
                tracking_signal(volume[z - 1], roi=(y, x, tile, tile)),
                tracking_signal(volume[z], roi=(y, x, tile, tile)),
            )
            for y in starts_y
            for x in starts_x
        ]
        angle = np.linalg.lstsq(design, np.ravel(shifts), rcond=None)[0][2]
        # the registration's shift undoes the drift: its rotation is minus the drift's step
        errors.append(np.degrees(-angle - (true[z] - true[z - 1])))
    return float(np.std(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="draws per kind of drift")
    parser.add_argument("--size", type=int, default=256, help="slice side of the draws (px)")
    parser.add_argument("--slices", type=int, default=32, help="slices of the draws")
    parser.add_argument("--csv", type=Path, help="write every stack's row here")
    parser.add_argument("--structure", action="store_true", help="demo: the pore structure")
    parser.add_argument("--kinds", default=",".join(["demo", *KINDS]), help="stacks to run")
    parser.add_argument("--style", choices=STYLES, help="the demo's style (config/demo.yaml's)")
    args = parser.parse_args()
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())["demo"]
    kinds = args.kinds.split(",")
    style = {"style": args.style} if args.style else {}
    stacks = [("demo", name, styled_spec(**{**fields, **style})) for name, fields in demo.items()]
    stacks = stacks if "demo" in kinds else []
    size = {"height": args.size, "width": args.size, "slices": args.slices}
    for kind, fields in KINDS.items():
        for seed in range(100, 100 + args.seeds) if kind in kinds else []:
            stacks.append((kind, f"seed{seed}", SynthSpec(0.30, seed=seed, **size, **fields)))
    rows = []
    for kind, name, spec in stacks:
        data = synthesize(spec)
        shape = data["volume"].shape[1:]
        print(f"{kind} {name}: {spec.slices} slices of {shape[0]} x {shape[1]}", flush=True)
        for label, settings in REGISTRATIONS.items():
            if spec.fiducial and settings.method == "joint":  # the mark's sharp edges: a finer band
                roi = {"roi": fiducial_roi(spec), "band_px": FIDUCIAL_BAND}
                settings = AlignSettings(**{**settings.__dict__, **roi})
            start = time.perf_counter()
            alignment = estimate_alignment(data["volume"], settings)
            seconds = time.perf_counter() - start
            residual = residual_px(data["drift"], alignment.transforms, shape)
            row = {
                "kind": kind,
                "stack": name,
                "registration": label,
                "mean_px": residual.mean(),
                "max_px": residual.max(),
                "first8_px": residual[:8].mean(),
                "last8_px": residual[-8:].mean(),
                "rotation_left_deg": rotation_left_deg(data["drift"], alignment.transforms),
                "drift_found": alignment.drift_detected,
                "seconds": seconds,
            }
            rows.append(row)
            found = (
                ""
                if settings.method == "previous"
                else (" drift" if alignment.drift_detected else " still")
            )
            print(
                f"  {label + ':':22s} residual (px) mean {row['mean_px']:5.2f} max "
                f"{row['max_px']:5.2f} (first 8 {row['first8_px']:4.2f}, last 8 "
                f"{row['last8_px']:5.2f}); rotation left {row['rotation_left_deg']:4.2f}°; "
                f"{seconds:4.1f} s{found}",
                flush=True,
            )
        if kind == "demo":
            structures = {"the sample": data["truth"]}
            for label in ("previous (paper)", "joint (default)"):
                seen = seen_after_alignment(data, REGISTRATIONS[label])["truth"]
                structures[label] = seen
                print(
                    f"  ceiling of {label} against the sample's truth: mIoU "
                    f"{miou(data['truth'], seen):.3f}"
                )
            steps = np.degrees(np.diff(np.arctan2(data["drift"][:, 1, 0], data["drift"][:, 0, 0])))
            noise = pair_rotation_noise_deg(data["volume"], data["drift"])
            print(
                f"  rotation per pair of neighbouring slices: drift steps std {steps.std():.3f}°, "
                f"error of a 3 x 3 tile fit std {noise:.3f}°",
                flush=True,
            )
            if args.structure:
                print_structure(structures, spec.voxel_nm)
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    summary = table.groupby(["kind", "registration"], sort=False).agg(
        mean_px=("mean_px", "mean"),
        worst_px=("max_px", "max"),
        last8_px=("last8_px", "mean"),
        rotation_left_deg=("rotation_left_deg", "max"),
        drift_found=("drift_found", "sum"),
        stacks=("stack", "count"),
    )
    print("\nsummary (mean of the stacks' mean residuals, worst slice of any stack):")
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()
