"""Calibration of the demo's simulator against the baselines: the random forest and global Otsu.

Three synthetic data sets of the demo's size and budget (config/demo.yaml: HPC22, HPC30,
HPC45, porosity 0.22 / 0.30 / 0.45, seeds 22 / 30 / 45, 32 x 256 x 256 voxels, 20 regions of
48^2 each) go through the library as the workflow takes them (studies/common.py, with the
settings of the demo's config): rule synthesize_demo (truth and labels as seen on the aligned
volume), rule align (the default joint solve), rule
correct_gradient, rule extract_regions (the context of the demo's 81 x 3 grid and the
post-processing's smoothing), rule split (60/20/20, seed 1) and rule sample (8 % of the
labelled voxels, seed 1, train 50/50 pore/solid). Then:

- rf: rule train_forest (200 trees, n_z 3, sigma_max 16, seed 0, classes balanced) on the
  train samples of all three data sets, sigma and T chosen on the validation regions (rule
  optimize_forest_postprocess, the demo's min_object_voxels 10), every slice of every
  volume scored and post-processed (rules predict_forest_slices, postprocess_forest);
- otsu: one global Otsu threshold of each preprocessed volume (rule evaluate_volume's floor).

Each is scored on the FULL volume against its truth (full_volume.csv's mIoU) with the
porosity error (automatic - truth, percentage points). No CNN is trained: the simulator is
calibrated on the baselines only.

    python benchmarks/calibrate_demo.py                      # the hard films (style hard)
    python benchmarks/calibrate_demo.py --style easy         # today's demo generator
    python benchmarks/calibrate_demo.py --family calibration --draws 12
    python benchmarks/calibrate_demo.py --family held_out --draws 12

`--family` draws `--draws` data sets from a family of `fibseg.demo.films.FAMILIES`
(`random_film_spec`, the generator seeded with `--seed`), each of the demo's size and
budget, in studies of three (one forest per three data sets, as the demo trains one forest
on its three). The family `held_out` was not looked at while the hard preset and the
`calibration` family were chosen; keep it that way.

`--set FIELD=VALUE` (repeatable, YAML values) overrides a SynthSpec field of the style, as
the calibration in docs/simulator.md did. `--out` also writes the rows to a CSV.

On 2 CPU cores one study of three data sets takes about 2 minutes (docs/simulator.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # studies/

import numpy as np
import pandas as pd
import yaml

from fibseg.demo.films import FAMILIES, STYLES, random_film_spec, styled_spec
from fibseg.demo.synth import SynthSpec, seen_after_alignment, synthesize
from fibseg.evaluation.evaluate import otsu_volume, volume_row
from fibseg.evaluation.postprocess import segment_as_chosen
from fibseg.io.volume import read_volume
from fibseg.runtime.job import configure_threads
from studies.common import (
    Workflow,
    choose_postprocess,
    demo_config,
    forest_member,
    prepare_dataset,
    sample_datasets,
    score_volume,
    split_datasets,
)

N_XY, N_Z = 81, 3  # the regions' context: the 81 x 3 grid the calibration was made with
TARGETS = {"rf": (0.70, 0.82), "otsu": (0.55, 0.70)}  # full-volume mIoU of real EC/HPC films


def prepare(name: str, spec: SynthSpec, workdir: Path, workflow: Workflow) -> dict:
    """One data set as the workflow makes it: synthesised with its truth and labels as seen
    on the aligned volume (rule synthesize_demo), then rules align, correct_gradient and
    extract_regions (studies/common.py)."""
    started = time.perf_counter()
    data = seen_after_alignment(synthesize(spec), workflow.align)
    synthesis = time.perf_counter() - started
    margins = workflow.margins(N_XY, N_Z)
    made = prepare_dataset(name, data, workdir, workflow, margins, workflow.align)
    return {
        "name": name,
        "spec": spec,
        "truth": made.truth,
        "regions": made.regions,
        "preprocessed": str(made.preprocessed),
        "synthesis_s": synthesis,
        "prepare_s": time.perf_counter() - started,
    }


def run_study(datasets: list[dict], workflow: Workflow, threads: int) -> list[dict]:
    """The forest and Otsu on a study's data sets: one row per data set and method."""
    region_sets = {d["name"]: d["regions"] for d in datasets}
    split = split_datasets(region_sets, workflow)
    samples = sample_datasets(region_sets, split, workflow)
    started = time.perf_counter()
    member = forest_member(region_sets, samples["train"][0], workflow.forest, threads)
    smooth = workflow.margins(N_XY, N_Z)["smooth"]
    chosen = choose_postprocess(region_sets, split, member, workflow, smooth)
    trained = time.perf_counter() - started
    rows = []
    for data in datasets:
        started = time.perf_counter()
        volume = read_volume(data["preprocessed"], data["name"])
        segmentation = segment_as_chosen(score_volume(volume, member), chosen)
        scored = time.perf_counter() - started
        otsu = otsu_volume(data["preprocessed"])
        spec = data["spec"]
        common = {
            "dataset": data["name"],
            "porosity_target": spec.porosity,
            "seed": spec.seed,
            "synthesis_s": data["synthesis_s"],
            "prepare_s": data["prepare_s"],
        }
        for method, result, seconds in (
            ("rf", segmentation, trained / len(datasets) + scored),
            ("otsu", otsu, 0.0),
        ):
            row = volume_row(data["name"], data["truth"], result)
            rows.append(
                {
                    **common,
                    "method": method,
                    "mIoU": row["mIoU"],
                    "porosity_truth": row["porosity_truth"],
                    "porosity_error_pp": 100 * (row["porosity_automatic"] - row["porosity_truth"]),
                    "sigma": chosen["sigma"] if method == "rf" else None,
                    "threshold": chosen["threshold"] if method == "rf" else None,
                    "method_s": seconds,
                }
            )
    return rows


def demo_specs(
    demo: dict[str, dict], style: str, overrides: dict | None = None
) -> list[tuple[str, SynthSpec]]:
    """The demo's data sets (config key `demo`) in a style, with SynthSpec fields overridden."""
    return [
        (name, styled_spec(style, porosity=e["porosity"], seed=e["seed"], **(overrides or {})))
        for name, e in demo.items()
    ]


def family_specs(family: str, draws: int, seed: int) -> list[tuple[str, SynthSpec]]:
    """`draws` data sets of a family, of the demo's size and budget."""
    rng = np.random.default_rng(seed)
    return [(f"{family}{k}", random_film_spec(rng, family)) for k in range(draws)]


def rounded(value):
    """A spec field as printed: floats (also in tuples) to 3 decimals."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, tuple):
        return tuple(rounded(v) for v in value)
    return value


def table(rows: pd.DataFrame) -> str:
    """Per data set: the forest's and Otsu's full-volume mIoU and porosity error."""
    wide = rows.pivot_table(
        index=["dataset", "porosity_target"],
        columns="method",
        values=["mIoU", "porosity_error_pp"],
        sort=False,
    )
    wide.columns = [f"{method} {value}" for value, method in wide.columns]
    wide = wide[["rf mIoU", "rf porosity_error_pp", "otsu mIoU", "otsu porosity_error_pp"]]
    wide = wide.rename(columns=lambda c: c.replace("porosity_error_pp", "Δφ pp"))
    text = wide.to_string(float_format=lambda v: f"{v:.3f}")
    means = rows.groupby("method", sort=False)["mIoU"].agg(["mean", "min", "max"])
    lines = [text, ""]
    for method, (low, high) in TARGETS.items():
        m = means.loc[method]
        lines.append(
            f"{method}: mIoU mean {m['mean']:.3f} (min {m['min']:.3f}, max {m['max']:.3f}); "
            f"target {low:.2f}-{high:.2f}"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--style", default="hard", choices=STYLES, help="the demo's style")
    parser.add_argument("--family", choices=sorted(FAMILIES), help="draw from a family instead")
    parser.add_argument("--draws", type=int, default=3, help="data sets drawn from --family")
    parser.add_argument("--seed", type=int, default=0, help="seed of the family's draws")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (2)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a SynthSpec field of the style (YAML value; repeatable)",
    )
    parser.add_argument("--out", help="also write the rows to this CSV")
    args = parser.parse_args()
    args.overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        value = yaml.safe_load(value)
        args.overrides[key] = tuple(value) if isinstance(value, list) else value
    return args


def main() -> None:
    args = parse_args()
    configure_threads(args.threads)
    config = demo_config()
    workflow = Workflow.from_config(config)
    started = time.perf_counter()
    if args.family:
        specs = family_specs(args.family, args.draws, args.seed)
        what = f"family {args.family}, {args.draws} draws (seed {args.seed})"
    else:
        specs = demo_specs(config["demo"], args.style, args.overrides)
        what = f"style {args.style}" + (f", {args.overrides}" if args.overrides else "")
    print(f"calibrate_demo: {what}")
    rows = []
    for first in range(0, len(specs), 3):
        with tempfile.TemporaryDirectory(prefix="calibrate_demo_") as tmp:
            chunk = specs[first : first + 3]
            datasets = [prepare(name, spec, Path(tmp), workflow) for name, spec in chunk]
            for data in datasets:
                spec = data["spec"]
                drawn = {
                    k: rounded(v)
                    for k, v in asdict(spec).items()
                    if v != getattr(SynthSpec(porosity=spec.porosity), k)
                }
                print(
                    f"  {data['name']}: synthesised in {data['synthesis_s']:.1f} s (with the "
                    f"registration of rule synthesize_demo), prepared in "
                    f"{data['prepare_s']:.0f} s; fields other than the easy defaults: {drawn}",
                    flush=True,
                )
            new = run_study(datasets, workflow, args.threads)
            for row in new:
                if row["method"] == "rf":
                    print(f"  {row['dataset']} rf {row['mIoU']:.3f}", flush=True)
            rows += new
    frame = pd.DataFrame(rows)
    if args.out:
        frame.to_csv(args.out, index=False)
    print(table(frame))
    seconds = time.perf_counter() - started
    synthesis = frame.drop_duplicates("dataset")["synthesis_s"]
    print(
        f"wall time {seconds:.0f} s on {args.threads} threads (synthesis {synthesis.mean():.1f} s "
        f"per data set, the forest {frame[frame.method == 'rf']['method_s'].sum():.0f} s)"
    )


if __name__ == "__main__":
    main()
