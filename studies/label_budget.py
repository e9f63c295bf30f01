"""Label-budget study: how segmentation quality grows with the number of labelled voxels.

For every data kind (`--data`) and label budget (`--budgets`) the script synthesises two data
sets (porosity 0.22 and 0.45, seeds 22 and 45), prepares them as the workflow does
(studies/common.py: alignment where the kind drifts, gradient correction, context crops, the
region split, stratified samples, at most `--max-train-samples` of them) and scores each
method (`--methods`) on the FULL volume against its truth: `otsu` (one global threshold),
`rf` (the forest; sigma and T of the post-processing chosen on the validation regions), the
patch CNN's variants `cnn_*` (studies/label_budget_methods.py: 81 x 81 x 3 'valid', scored by
the dense engine) and `unet` (config/config.yaml's U-Net).

Data kinds: `demo` (fibseg.demo.synth without drift), `spheres` (fibseg.demo.spheres, the
held-out simulator), `demo_drift` (with drift, aligned as rule align), `demo_drift_previous`
and `demo_drift_translation` (registered by the paper's chain, rigid or translation only),
`demo_drift_true` (aligned by the drift's inverse), `demo_drift_offset` (that moved by 0.4
px), `hard` (the default demo's films without drift), `calibration` and `held_out` (draws of
the families of fibseg.demo.films). The drifting kinds' rows also score only the voxels where
the aligned volume shows the sample (`mIoU_sampled`).

Rows per data set, method and seed go to `--out`, the CNNs' learning curves to
`*_histories.csv`, the table (mean ± std over seeds) to `*_summary.csv`. The set-up in full,
every result and the study's history: studies/label_budget.md.

    python studies/label_budget.py --dry-run     # the run-time estimate on 2 cores, only
    python studies/label_budget.py --quick       # a tiny smoke run
    python studies/label_budget.py --budgets large --data spheres --methods rf,cnn_dense
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __package__ in (None, ""):  # run as `python studies/label_budget.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from fibseg.io.writers import write_csv
from fibseg.runtime.job import configure_threads
from studies.common import demo_workflow
from studies.label_budget_data import (
    BUDGETS,
    KINDS,
    N_XY,
    N_Z,
    POROSITIES,
    QUICK,
    Budget,
    Context,
    build_study,
    describe,
)
from studies.label_budget_methods import (
    DEFAULT_METHODS,
    METHODS,
    NETWORKS,
    Schedule,
    run_method,
)

# Rates on 2 CPU cores (TensorFlow 2.21 CPU), measured with this script's building blocks
# while another workflow shared the cores (so about 1.5x slower than an idle machine).
RATES = {
    "build_voxels": 2.0e6,  # voxels synthesised, corrected and read per second
    "patch_train": 300.0,  # patch samples trained per second (81 x 3, batch 128)
    "patch_val": 900.0,  # patch samples evaluated per second
    "dense_train_px": 1.5e5,  # input pixels of training tiles per second (81 x 3 twin)
    "dense_val_px": 4.5e5,  # input pixels of validation tiles per second
    "cnn_score": 3.0e5,  # voxels scored per second by the dense engine
    "rf_fit": 850.0,  # train samples per second, 200 trees
    "rf_score": 8.5e4,  # voxels (features + prediction) per second
    "rf_features": 7.0e5,  # crop pixels per second (features of the train regions' crops)
    "optimize_px": 2.0e7,  # validation-window pixels x (sigma, T) trials per second
    "segment_voxels": 2.0e6,  # voxels post-processed per second (whole volumes)
    "unet_step_s": 0.6,  # seconds per U-Net step of 16 tiles of 96 x 96 x 3 (idle machine)
    "unet_val_tile_s": 0.03,  # seconds per validation tile of the U-Net
}
EPOCH_OVERHEAD_S = 1.0  # checkpoints written per epoch
RUN_OVERHEAD_S = 15.0  # building, tracing and loading a network
TWIN_FIELD = 76  # receptive field of the 81 x 3 'valid' twin: a tile's halo is 75 px
STEPPED = (
    "cnn_dense_steps",
    "cnn_dense_steps_m09",
    "cnn_dense_steps_k20",
    "cnn_dense_steps_adam",
    "cnn_dense_steps_adam_unregularised",
    "cnn_dense_steps_adam_regularised",
)


def estimate_seconds(
    budget: Budget,
    methods: list[str],
    datasets: int,
    schedule: Schedule,
    max_samples: int,
    context: Context,
) -> dict[str, float]:
    """Rough seconds per method (and for building the data) of one data kind and budget."""
    workflow, margins = context.workflow, context.margins
    voxels = datasets * budget.voxels
    counts = {s: datasets * round(budget.n_regions * workflow.split[s]) for s in ("train", "val")}
    train_voxels = counts["train"] * budget.region_size**2
    samples = min(max_samples, 0.6 * train_voxels)
    val_samples = samples * counts["val"] / max(counts["train"], 1)
    crop = (budget.region_size + 2 * (margins["xy"] + margins["smooth"])) ** 2
    window = (budget.region_size + 2 * margins["smooth"]) ** 2
    trials = len(workflow.sigmas) * len(workflow.thresholds)
    tile = -(-budget.region_size // 16) * 16 + TWIN_FIELD - 1
    post = counts["val"] * window * trials / RATES["optimize_px"]
    post += voxels / RATES["segment_voxels"]
    cnn_score = voxels / RATES["cnn_score"] + post + RUN_OVERHEAD_S
    val_tiles = counts["val"] * tile**2 / RATES["dense_val_px"] + EPOCH_OVERHEAD_S
    seconds = {
        "build": voxels / RATES["build_voxels"],
        "otsu": voxels / 2e7,
        "rf": counts["train"] * 3 * crop / RATES["rf_features"]
        + samples / RATES["rf_fit"]
        + (voxels + counts["val"] * crop) / RATES["rf_score"]
        + post,
        "cnn_patches": schedule.patches
        * (samples / RATES["patch_train"] + val_samples / RATES["patch_val"] + EPOCH_OVERHEAD_S)
        + cnn_score,
        "cnn_dense": schedule.dense
        * (counts["train"] * tile**2 / RATES["dense_train_px"] + val_tiles)
        + cnn_score,
    }
    # fixed steps of 4 tiles
    steps = schedule.steps_per_epoch
    stepped = schedule.dense * (steps * 4 * tile**2 / RATES["dense_train_px"] + val_tiles)
    for name in STEPPED:
        seconds[name] = stepped + cnn_score
    # the forest's tiles double the tiles of a step, and the forest's scores of every
    # volume come first
    forest_taught = 2 * stepped + cnn_score + seconds["rf"]
    seconds["cnn_dense_steps_adam_forest"] = forest_taught
    seconds["cnn_dense_steps_adam_forest_soft"] = forest_taught
    unet_epoch = steps * RATES["unet_step_s"] + counts["val"] * RATES["unet_val_tile_s"]
    seconds["unet"] = schedule.unet * (unet_epoch + EPOCH_OVERHEAD_S) + cnn_score
    seconds["unet_prior"] = seconds["unet_prior_slow"] = seconds["unet"]
    seconds["prior"] = cnn_score
    return {k: v for k, v in seconds.items() if k == "build" or k in methods}


def spread(values: pd.Series, digits: int) -> str:
    """Mean, and with several seeds the standard deviation, as text."""
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f}±{values.std(ddof=1):.{digits}f}"


# row column, summary label per porosity, decimals
SUMMARY_COLUMNS = (
    ("mIoU", "mIoU φ{:.2f}", 3),
    ("porosity_error_pp", "Δφ{:.2f} pp", 1),
    ("mIoU_outside_train", "outside train φ{:.2f}", 3),
    ("mIoU_sampled", "sampled φ{:.2f}", 3),
)


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Method x data kind x budget: labelled voxels per data set, each porosity's mIoU and
    porosity error (mean ± std over seeds), and the method's wall time."""
    records = []
    keys = ["data", "budget", "method"]
    for (kind, budget, method), group in rows.groupby(keys, sort=False):
        record = {
            "data": kind,
            "budget": budget,
            "method": method,
            "labelled/ds": int(group["labelled_voxels"].iloc[0]),
            "trained on": int(group["trained_on"].iloc[0]),
            "seeds": group["seed"].nunique(),
        }
        for column, label, digits in SUMMARY_COLUMNS:
            for porosity, part in group.groupby("porosity_target"):
                record[label.format(porosity)] = spread(part[column], digits)
        per_seed = group.groupby("seed")["seconds"].first()
        record["seconds"] = spread(per_seed, 0)
        records.append(record)
    return pd.DataFrame(records)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    schedule = Schedule()
    parser.add_argument(
        "--budgets", default="small,medium,large", help=",".join(BUDGETS) + " (demo*: 32 x 256^2)"
    )
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=",".join(METHODS))
    parser.add_argument("--data", default="demo,spheres", help=",".join(KINDS))
    parser.add_argument("--epochs-patches", type=int, default=schedule.patches)
    parser.add_argument("--epochs-dense", type=int, default=schedule.dense)
    parser.add_argument("--epochs-unet", type=int, default=schedule.unet)
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=schedule.steps_per_epoch,
        help="steps per epoch of *_steps and unet",
    )
    parser.add_argument(
        "--patience",
        type=int,
        help="the U-Net's training.patience: stop once this many epochs brought no lower "
        "val loss (--epochs-unet is then the cap)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per CNN method")
    parser.add_argument("--first-seed", type=int, default=0, help="the CNN seeds' first")
    parser.add_argument("--n-xy", type=int, default=N_XY, help="the CNN's input side")
    parser.add_argument("--n-z", type=int, default=N_Z, help="slices the CNN and the forest see")
    parser.add_argument("--forest-n-z", type=int, help="the forest's slices (as --n-z)")
    parser.add_argument("--forest-seed", type=int, help="the forest's seed (the config's)")
    parser.add_argument("--prior", help="the FIB-SEM prior's bundle (methods prior, unet_prior*)")
    parser.add_argument(
        "--porosities",
        dest="volumes",
        help="the volumes' porosities, comma-separated (0.22,0.45); a volume's seed is its "
        "porosity in percent",
    )
    parser.add_argument("--max-train-samples", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--verbose", action="store_true", help="log every training epoch")
    parser.add_argument("--dry-run", action="store_true", help="print the estimate, run nothing")
    parser.add_argument("--out", default="results/label_budget.csv")
    args = parser.parse_args(argv)
    args.methods = choices(args.methods, METHODS, "method")
    args.data = choices(args.data, KINDS, "data kind")
    args.budgets = [BUDGETS[b] for b in choices(args.budgets, tuple(BUDGETS), "budget")]
    args.porosities = POROSITIES
    if args.volumes:
        porosities = [float(text) for text in args.volumes.split(",")]
        args.porosities = {round(100 * porosity): porosity for porosity in porosities}
    if args.quick:  # one tiny budget, one data set per kind, short training
        args.budgets, args.porosities = [QUICK], {45: 0.45}
        args.epochs_patches, args.epochs_dense, args.epochs_unet = 1, 6, 2
        args.max_train_samples = min(args.max_train_samples, 2000)
    args.schedule = Schedule(
        args.epochs_patches,
        args.epochs_dense,
        args.epochs_unet,
        args.steps_per_epoch,
        args.patience,
    )
    return args


def choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """The comma-separated names of `text`, each checked against `allowed`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return names


def run_context(args: argparse.Namespace) -> Context:
    """The demo's workflow settings with the forest's slices and seed as asked."""
    workflow = demo_workflow()
    forest = replace(
        workflow.forest,
        n_z=args.forest_n_z or args.n_z,
        seed=workflow.forest.seed if args.forest_seed is None else args.forest_seed,
    )
    return Context(replace(workflow, forest=forest), args.n_xy, args.n_z, args.threads, args.prior)


def print_estimate(args: argparse.Namespace, context: Context) -> None:
    """The expected wall time per data kind and budget, before anything runs."""
    total = 0.0
    for budget in args.budgets:
        seconds = estimate_seconds(
            budget,
            args.methods,
            len(args.porosities),
            args.schedule,
            args.max_train_samples,
            context,
        )
        cnn = sum(v for k, v in seconds.items() if k in NETWORKS)
        one_kind = sum(seconds.values()) + (args.seeds - 1) * cnn
        total += one_kind * len(args.data)
        parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items())
        print(
            f"estimate {budget.name}: {one_kind / 60:.0f} min per data kind ({parts} min; "
            f"{budget.labelled:,} labelled voxels per data set)"
        )
    print(
        f"estimate in all: {total / 60:.0f} min on {context.threads} cores ({len(args.data)} kinds)"
    )


def progress(rows: list[dict]) -> str:
    """One line per finished method and seed."""
    scores = ", ".join(f"{r['dataset']} {r['mIoU']:.3f}" for r in rows)
    first = rows[0]
    seed = first["forest_seed"] if first["method"] == "rf" else first["seed"]
    return f"  {first['method']} seed {seed}: mIoU {scores}; {first['seconds']:.0f} s"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    context = run_context(args)
    configure_threads(context.threads)
    log = None
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        log = logging.getLogger("label_budget")
    print_estimate(args, context)
    if args.dry_run:
        return
    out = Path(args.out)
    rows, curves = [], []
    for kind in args.data:
        for budget in args.budgets:
            with tempfile.TemporaryDirectory(prefix="label_budget_") as tmp:
                study = build_study(
                    kind, budget, args.porosities, Path(tmp), args.max_train_samples, context
                )
                print(describe(study), flush=True)
                for method in args.methods:
                    cnn_seeds = range(args.first_seed, args.first_seed + args.seeds)
                    for seed in cnn_seeds if method in NETWORKS else [0]:
                        new, curve = run_method(study, method, seed, args.schedule, log)
                        print(progress(new), flush=True)
                        rows += new
                        write_csv(out, pd.DataFrame(rows))  # a crash keeps what is done
                        if curve is not None:  # the learning curves of the CNN runs
                            curves.append(curve)
                            write_csv(out.with_name(out.stem + "_histories.csv"), pd.concat(curves))
    table = summary(pd.DataFrame(rows))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    summary_csv = out.with_name(out.stem + "_summary.csv")
    write_csv(summary_csv, table)
    print(f"rows per data set and seed: {out}; the table: {summary_csv}")


if __name__ == "__main__":
    main()
