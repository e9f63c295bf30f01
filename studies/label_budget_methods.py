"""The label-budget study's methods: Otsu, the forest, the patch CNN's variants, the U-Net
from scratch, the FIB-SEM prior alone (`prior`: its own sigma and T, no label used) and the
U-Net fine-tuned from it (`unet_prior`, training.init; `unet_prior_slow` at a tenth of the
learning rate), each trained and scored as the workflow does it, one row per data set, with
the pore structure's agreement with the truth (largest cluster, percolating axes)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.filters import threshold_otsu

from fibseg.annotation.sampling import regions_in
from fibseg.evaluation.evaluate import volume_row
from fibseg.evaluation.metrics import miou
from fibseg.evaluation.postprocess import segment_as_chosen
from fibseg.inference.bundle import read_bundle
from fibseg.inference.ensemble import Member, load_member
from fibseg.io.writers import write_h5
from fibseg.networks.registry import architecture
from fibseg.runtime.settings import (
    InferenceSettings,
    SearchRanges,
    TrainingSettings,
    UnlabelledSettings,
)
from fibseg.structure.grid import AXES
from fibseg.structure.transport import clusters, connectivity
from fibseg.training.train import RunFiles, TrainingRun, train_run
from studies.common import choose_postprocess, forest_member, score_volume
from studies.label_budget_data import Study, region_mask

PADDING = "valid"
INFERENCE = InferenceSettings(engine="dense")
# CNN variants: settings over TrainingSettings(mode, epochs); "steps" marks those that run
# --steps-per-epoch steps every epoch whatever the number of labelled tiles.
ADAM = {
    "mode": "dense",
    "steps": True,
    "optimizer": "adam",
    "search": SearchRanges(log10_lr0=(-3.0,), k=(20,)),
}
VARIANTS = {
    "cnn_patches": {"mode": "patches"},
    "cnn_dense": {"mode": "dense"},
    "cnn_dense_steps": {"mode": "dense", "steps": True},
    "cnn_dense_steps_m09": {"mode": "dense", "steps": True, "momentum": 0.9},
    # the learning rate drops every 20 epochs, the slowest of the search's k (4-20)
    "cnn_dense_steps_k20": {"mode": "dense", "steps": True, "search": SearchRanges(k=(20,))},
    # Adam at its usual scale (10^-3), the same slow schedule
    "cnn_dense_steps_adam": ADAM,
    # the same with the regularisation pinned instead of drawn: none (no dropout, L2 at the
    # bottom of the search's range) and strong (dropout and L2 at the top of it)
    "cnn_dense_steps_adam_unregularised": {
        **ADAM,
        "search": replace(ADAM["search"], p_d=(0.0, 0.0), p_sd=(0.0, 0.0), log10_c=(-7.0, -7.0)),
    },
    "cnn_dense_steps_adam_regularised": {
        **ADAM,
        "search": replace(ADAM["search"], p_d=(0.6, 0.6), p_sd=(0.6, 0.6), log10_c=(-5.0, -5.0)),
    },
    # Adam as above, plus volume tiles labelled by the forest where its votes are confident
    # (the forest trained and scored first, its time included): distilling the forest
    "cnn_dense_steps_adam_forest": {
        **ADAM,
        "unlabelled": UnlabelledSettings(method="pseudo", start_epoch=0, confidence=0.9),
    },
    "cnn_dense_steps_adam_forest_soft": {
        **ADAM,
        "unlabelled": UnlabelledSettings(method="pseudo", start_epoch=0, confidence=0.6),
    },
}
# The U-Net (model.architecture: unet) as config/config.yaml trains it: tiles of 96 x 96 x 3,
# 16 a step, Adam at 10^-3, 25 steps an epoch (--epochs-unet epochs), labelled voxels only;
# `unet` from scratch, `unet_prior` from the prior as config/config.yaml (training.init).
UNET_N_XY = 96
UNET = {
    "mode": "dense",
    "steps": True,
    "optimizer": "adam",
    "tiles_per_batch": 16,
    "search": SearchRanges(log10_lr0=(-3.0,), k=(20,)),
}
# The U-Net from scratch, and fine-tuned from the prior (--prior) at its rate and at a tenth
# of it (the schedule's measurement).
UNET_VARIANTS = {
    "unet": UNET,
    "unet_prior": UNET,
    "unet_prior_slow": {**UNET, "search": SearchRanges(log10_lr0=(-4.0,), k=(20,))},
}
UNETS = tuple(UNET_VARIANTS)
FINE_TUNED = ("unet_prior", "unet_prior_slow")
NETWORKS = (*VARIANTS, *UNETS)
METHODS = ("otsu", "rf", "prior", *NETWORKS)
DEFAULT_METHODS = ("otsu", "rf", "cnn_patches", "cnn_dense", "cnn_dense_steps")


@dataclass(frozen=True)
class Schedule:
    """Epochs of each kind of network, and the steps of an epoch of *_steps and unet."""

    patches: int = 6
    dense: int = 40
    unet: int = 12  # the demo's training.epochs, config/demo.yaml (tests/test_label_budget.py)
    steps_per_epoch: int = 25  # the U-Net's: config/config.yaml's
    patience: int | None = None  # the U-Net's training.patience (None: all `unet` epochs)


def cnn_settings(method: str, schedule: Schedule) -> TrainingSettings:
    """The training settings of a CNN variant or of the U-Net."""
    variant = dict(UNET_VARIANTS.get(method) or VARIANTS[method])
    steps = schedule.steps_per_epoch if variant.pop("steps", False) else None
    epochs = schedule.patches if variant["mode"] == "patches" else schedule.dense
    if method in UNETS:
        epochs = schedule.unet
        variant["patience"] = schedule.patience
    return TrainingSettings(epochs=epochs, steps_per_epoch=steps, **variant)


def scored_method(study: Study, member: Member) -> tuple[dict[str, np.ndarray], dict]:
    """Post-processing chosen on val (rule optimize_postprocess), then every data set's whole
    volume scored by the member and post-processed with it."""
    smooth = study.context.margins["smooth"]
    chosen = choose_postprocess(
        study.region_sets, study.split, member, study.context.workflow, smooth
    )
    return {
        d.name: segment_as_chosen(score_volume(d.volume, member), chosen) for d in study.datasets
    }, chosen


def prior_model(study: Study) -> str:
    """The prior's model file (the bundle of --prior, its SHA-256 checked)."""
    if study.context.prior is None:
        raise SystemExit("the methods prior and unet_prior need --prior BUNDLE")
    return read_bundle(study.context.prior).models[0]


def run_prior(study: Study) -> tuple[dict[str, np.ndarray], dict]:
    """The prior alone: every volume scored by it and post-processed with its own sigma and
    T (postprocess.json of the bundle), as `fibseg predict` does; no label is used."""
    bundle = read_bundle(study.context.prior)
    member = load_member(prior_model(study), INFERENCE, threads=study.context.threads)
    chosen = json.loads(Path(bundle.postprocess).read_text())
    return {
        d.name: segment_as_chosen(score_volume(d.volume, member), chosen) for d in study.datasets
    }, chosen


def run_otsu(study: Study) -> tuple[dict[str, np.ndarray], dict]:
    """One global Otsu threshold per preprocessed volume, no post-processing."""
    return {d.name: d.volume > threshold_otsu(d.volume) for d in study.datasets}, {}


def study_forest(study: Study) -> Member:
    """The forest (rule train_forest) on the study's train samples."""
    samples = pd.read_csv(study.train_csv)
    forest = study.context.workflow.forest
    return forest_member(study.region_sets, samples, forest, study.context.threads)


def forest_score_files(study: Study) -> list[str]:
    """The forest's score volumes (HDF5 /scores, as rule stitch_forest writes them), one per
    data set in the order of the preprocessed volumes: what labels the tiles of `pseudo`."""
    member, paths = study_forest(study), []
    for data in study.datasets:
        paths.append(str(study.workdir / f"{data.name}_forest_scores.h5"))
        write_h5(paths[-1], {"scores": score_volume(data.volume, member).astype(np.float32)})
    return paths


def run_cnn(
    study: Study, method: str, training: TrainingSettings, seed: int, log: logging.Logger | None
) -> tuple[dict[str, np.ndarray], dict]:
    """One train_run (rule train, the epoch of lowest val loss), scored by the dense
    engine; with pseudo-labels the forest is trained and scores the volumes first."""
    import keras

    run_dir = study.workdir / f"{method}_seed{seed}"
    unet = method in UNETS
    files = RunFiles(
        [d.region_file for d in study.datasets],
        study.train_csv,
        study.val_csv,
        study.split_csv,
        [str(study.workdir / f"{d.name}_preprocessed.h5") for d in study.datasets],
        forest_score_files(study) if training.unlabelled.method == "pseudo" else (),
    )
    run = TrainingRun(
        run_dir,
        architecture("unet" if unet else "patch"),
        UNET_N_XY if unet else study.context.n_xy,
        study.context.n_z,
        seed,
        training,
        files,
        padding="same" if unet else PADDING,
        init_model=prior_model(study) if method in FINE_TUNED else None,
    )
    history = train_run(run, log)
    threads = study.context.threads
    member = load_member(str(run_dir / "model.keras"), INFERENCE, threads=threads)
    segmentations, chosen = scored_method(study, member)
    keras.backend.clear_session()  # free the graphs before the next run
    best = history.loc[history["val_loss"].idxmin()]
    curve = history.assign(data=study.kind, budget=study.budget.name, method=method, seed=seed)
    return segmentations, {
        **chosen,
        "best_epoch": int(best["epoch"]),
        "val_loss": best["val_loss"],
        "steps": len(history) * (training.steps_per_epoch or 0),
        "history": curve,
    }


def structure_columns(truth: np.ndarray, segmentation: np.ndarray) -> dict:
    """The largest pore cluster's share of the pore space and the axes its pores percolate
    along (6-connected, on the voxel grid; '-' for none), of the truth and the segmentation."""
    columns = {}
    for name, labels in (("truth", truth), ("automatic", segmentation)):
        found = connectivity(*clusters(labels == 0))
        columns[f"largest_cluster_{name}"] = found["largest_cluster_fraction"]
        columns[f"percolates_{name}"] = "".join(a for a in AXES if found[f"percolates_{a}"]) or "-"
    return columns


def trained_on(study: Study, method: str) -> int:
    """Labelled voxels a method learns from: the samples, or every train voxel (dense)."""
    if method.startswith("cnn_dense") or method in UNETS:
        return study.train_voxels
    return {"otsu": 0, "prior": 0}.get(method, study.train_samples)


def run_method(
    study: Study, method: str, seed: int, schedule: Schedule, log: logging.Logger | None
) -> tuple[list[dict], pd.DataFrame | None]:
    """One method (and seed) on one study: a row per data set, and a CNN's history."""
    started = time.perf_counter()
    if method == "otsu":
        segmentations, chosen = run_otsu(study)
    elif method == "rf":
        segmentations, chosen = scored_method(study, study_forest(study))
    elif method == "prior":
        segmentations, chosen = run_prior(study)
    else:
        segmentations, chosen = run_cnn(study, method, cnn_settings(method, schedule), seed, log)
    seconds = time.perf_counter() - started
    context, forest = study.context, study.context.workflow.forest
    n_xy = {"otsu": None, "rf": None, "prior": UNET_N_XY, **dict.fromkeys(UNETS, UNET_N_XY)}
    rows = []
    for data in study.datasets:
        segmentation = segmentations[data.name]
        row = volume_row(data.name, data.truth, segmentation)
        outside = ~region_mask(data, regions_in(study.split, data.name, "train"))
        sampled = np.ones(data.truth.shape, bool) if data.sampled is None else data.sampled
        rows.append(
            {
                "data": study.kind,
                "budget": study.budget.name,
                "method": method,
                "seed": seed,
                "dataset": data.name,
                "porosity_target": data.porosity,
                "labelled_voxels": int(data.regions.labels.size),
                "trained_on": trained_on(study, method),
                "sampling_fraction": study.fraction,
                "n_xy": n_xy.get(method, context.n_xy),
                "n_z": {"otsu": 1, "rf": forest.n_z, "prior": 3}.get(method, context.n_z),
                "forest_n_z": forest.n_z,
                "forest_seed": forest.seed,
                "mIoU": row["mIoU"],
                "mIoU_outside_train": miou(data.truth[outside], segmentation[outside]),
                "mIoU_sampled": miou(data.truth[sampled], segmentation[sampled]),
                "mIoU_sampled_outside_train": miou(
                    data.truth[sampled & outside], segmentation[sampled & outside]
                ),
                "sampled_fraction": sampled.mean(),
                "porosity_truth": row["porosity_truth"],
                "porosity_automatic": row["porosity_automatic"],
                "porosity_error_pp": 100 * (row["porosity_automatic"] - row["porosity_truth"]),
                "seconds": seconds,
                **structure_columns(data.truth, segmentation),
                **{
                    k: chosen.get(k)
                    for k in ("sigma", "threshold", "best_epoch", "val_loss", "steps")
                },
            }
        )
    return rows, chosen.get("history")
