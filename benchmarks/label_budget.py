"""Label-budget study: how segmentation quality grows with the number of labelled voxels.

For every data kind and label budget the script builds two synthetic data sets (porosity 0.22
and 0.45) in a temporary directory, runs them through the library as the workflow would
(gradient correction, context crops, a 60/20/20 region split, stratified sampling) and
scores each method on the FULL volume against its ground truth:

- otsu: one global Otsu threshold of the preprocessed volume (the floor);
- rf: `fibseg.baselines.forest` (200 trees, balanced classes) on the train samples, sigma and T
  of the post-processing chosen on the validation regions
  (`fibseg.evaluation.postprocess.optimize`);
- cnn_patches: `fibseg.training.train.train_run` in patches mode (81 x 3, 'valid', the demo's 6
  epochs), the epoch of lowest validation loss, the dense engine, sigma and T on val;
- cnn_dense: the same network trained densely (`TrainingSettings(mode="dense")`: every
  labelled voxel of the train regions, 40 epochs as the default `config/config.yaml`);
- variants of dense training (`VARIANTS`): cnn_dense_steps (`--steps-per-epoch` steps every
  epoch, 25 by default, whatever the number of tiles), cnn_dense_steps_m09 (momentum 0.9),
  cnn_dense_steps_k20 (the learning rate drops every 20 epochs), cnn_dense_steps_adam (Adam,
  10^-3, dropping every 20 epochs: `training.optimizer: adam`), cnn_dense_steps_adam_forest
  (Adam plus volume tiles labelled by the forest where its votes reach 0.9:
  `training.unlabelled: {method: pseudo, confidence: 0.9}`, fibseg/training/unlabelled.py;
  the forest is trained and scores both volumes first, within the method's time),
  cnn_dense_steps_adam_forest_soft (the same from votes of 0.6, the workflow's default), and
  cnn_dense_steps_adam_unregularised / _regularised (Adam with dropout and L2 pinned at the
  bottom / top of the random search's ranges instead of drawn). Not run by default: m09,
  k20, the Adam ones. The variants of options since removed from the library (the network's
  own pseudo-labels, blind-spot pretraining, a second network taught by the forest-taught
  one) are gone from the script; their measured rows stay in docs/label_budget.md.

`--n-xy` and `--n-z` change the input context (81 x 81 x 3): the CNN's neighbourhood, and the
slices the forest's features are computed on (`--forest-n-z` sets those apart).
`--first-seed` and `--seeds` pick the CNN seeds (each seed also draws the search's
hyperparameters); `--forest-seed` the forest's (also the one whose scores label the tiles).

Each CNN run's learning curve (history.csv, per epoch) goes to `<out>_histories.csv`.
`--threads` sets the CPU threads (2); under `KERAS_BACKEND=torch` the CNNs run on a GPU.

Columns: labelled voxels per data set, full-volume mIoU (mean of the pore and solid IoU),
porosity error (automatic - truth, percentage points) and wall time (training + scoring of
both data sets, data synthesis excluded).

Budgets (labelled voxels per data set; the first three on volumes of 48 x 384 x 384 voxels,
so each of them is scored on the same two volumes of each kind):

- small: 5 regions of 48 x 48 = 11,520;
- medium: 40 regions of 48 x 48 = 92,160;
- large: 100 regions of 96 x 96 = 921,600 (13 % of the volume; regions may overlap);
- demo and demo_large: 20 regions of 48 x 48 (the workflow demo's 46,080) and 100 of 96 x 96
  on volumes of 32 x 256 x 256, the workflow demo's size (demo_large labels about 40 % of
  the volume: its `mIoU_outside_train` column scores the voxels of no train region).

Data kinds: `demo` is `fibseg.demo.synth` (a thresholded Gaussian random field, shine-through,
rims, curtaining, an x gradient), without drift so that alignment is skipped; `spheres`
(alias `second`) is this file's own Boolean model of particles with another contrast model
(see `synthesize_spheres`), so that no conclusion rests on one simulator alone;
`demo_drift` (alias `workflow`) is `fibseg.demo.synth` with its drift, as rule synthesize_demo
makes it: aligned as rule align does, truth and labels as seen on the aligned volume. With
the demo budgets its two data sets are the workflow demo's HPC22 and HPC45 (same spec and
seed, so the same volume, truth and regions). Its rows also score only the voxels where the
aligned volume shows the sample (`mIoU_sampled`): the aligned slices' borders repeat their
edge where the drift moved the sample out of view, and no method can segment them.
`demo_drift_true` (alias `true_alignment`) is the same volume aligned with the simulator's
own drift instead of registration, its truth and labels those of the reference slice's
frame: it removes the registration's error and keeps the resampling.
`demo_drift_previous` (alias `previous_alignment`) is `demo_drift` registered as the paper
does (config/paper.yaml: each slice to the previous one, StackReg rigid body), rule align's
default before its joint solve; `demo_drift_translation` (alias `translation_alignment`) is
that chain for translation only, its truth and labels as seen on that alignment.
`demo_drift_offset` (alias `offset_alignment`) is `demo_drift_true` with every aligned slice,
its truth and labels moved by the same 0.4 px in x and y: no misregistration between the
slices, but the sample's voxel grid no longer falls on the image's, so voxels on a boundary
are partly pore and partly solid (the truth takes the nearest voxel), as in a real scan.

The patch CNN and the forest train on `sampling.fraction` of the labelled train voxels,
50/50 pore/solid as in the workflow; the fraction is derived per budget so that they see at
most `--max-train-samples` (20,000) samples, and is printed. Dense training uses every
labelled voxel. `--seeds N` trains N seeds per CNN method (seed s also draws the random
search's hyperparameters, as in the workflow); the table shows their mean and spread.

    python benchmarks/label_budget.py                                  # everything
    python benchmarks/label_budget.py --budgets large --data spheres --methods rf,cnn_dense
    python benchmarks/label_budget.py --quick                          # a tiny smoke run

The script prints its own run-time estimate first (`--dry-run` prints only that), on 2 CPU
cores and one seed, per data kind and budget.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.transform import AffineTransform

from fibseg.annotation.regions import RegionSet, extract_regions
from fibseg.annotation.sampling import labelled_voxels, regions_in, sample_split, split_regions
from fibseg.baselines.forest import forest_scorer, forest_training_data, train_forest
from fibseg.demo.films import FAMILIES, hard_film_spec, random_film_spec
from fibseg.demo.synth import SynthSpec, random_regions, seen_after_alignment, synthesize
from fibseg.evaluation.evaluate import volume_row
from fibseg.evaluation.metrics import miou
from fibseg.evaluation.postprocess import optimize, segment_as_chosen
from fibseg.inference.ensemble import Member, ensemble_slices, load_member
from fibseg.inference.infer import score_regions
from fibseg.io.volume import Volume, read_volume
from fibseg.io.writers import write_csv, write_h5
from fibseg.pipeline.dag import context_margins
from fibseg.preprocess.alignment import align_labels, align_volume, apply_transform
from fibseg.preprocess.gradient import correct_gradient
from fibseg.runtime.job import configure_threads
from fibseg.runtime.settings import (
    AlignSettings,
    InferenceSettings,
    SearchRanges,
    TrainingSettings,
    UnlabelledSettings,
)
from fibseg.training.train import train_run

THREADS = 2
VOXEL_NM = (50.0, 10.0, 10.0)  # z, y, x
N_XY, N_Z, PADDING = 81, 3, "valid"
SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}
SPLIT_SEED = SAMPLING_SEED = 1
SIGMAS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]  # the schema's postprocess defaults
THRESHOLDS = [0.3, 0.325, 0.35, 0.375, 0.4, 0.425, 0.45, 0.475, 0.5, 0.525, 0.55, 0.575, 0.6]
MIN_OBJECT_VOXELS = 10  # config/demo.yaml: demo pores are ~10 px across
FOREST = {"trees": 200, "sigma_max": 16.0, "n_z": 3, "seed": 0}  # the schema's defaults
MARGINS = context_margins([N_XY], [N_Z, FOREST["n_z"]], SIGMAS)
INFERENCE = InferenceSettings(engine="dense")
POROSITIES = {22: 0.22, 45: 0.45}  # data-set seed -> target porosity
# CNN variants: settings over TrainingSettings(mode, epochs); "steps" marks those that run
# --steps-per-epoch steps every epoch whatever the number of labelled tiles.
ADAM = {
    "mode": "dense",
    "steps": True,
    "optimizer": "adam",
    "search": SearchRanges(log10_lr0=(-3.0,), k=(20,)),
}
ADAM_FOREST_SOFT = {
    **ADAM,
    "unlabelled": UnlabelledSettings(method="pseudo", start_epoch=0, confidence=0.6),
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
    "cnn_dense_steps_adam_forest_soft": ADAM_FOREST_SOFT,
}
# The U-Net (model.architecture: unet) as config/config.yaml trains it: tiles of 96 x 96 x 3,
# 16 a step, Adam at 10^-3, 25 steps an epoch (--epochs-unet epochs), labelled voxels only.
UNET_N_XY = 96
UNET_EPOCHS = 12
UNET = {
    "mode": "dense",
    "steps": True,
    "optimizer": "adam",
    "tiles_per_batch": 16,
    "search": SearchRanges(log10_lr0=(-3.0,), k=(20,)),
}
NETWORKS = (*VARIANTS, "unet")
METHODS = ("otsu", "rf", *NETWORKS)
DEFAULT_METHODS = ("otsu", "rf", "cnn_patches", "cnn_dense", "cnn_dense_steps")
KINDS = (
    "demo",
    "spheres",
    "demo_drift",
    "demo_drift_previous",
    "demo_drift_true",
    "demo_drift_translation",
    "demo_drift_offset",
    "hard",
    "calibration",
    "held_out",
)
KIND_ALIASES = {
    "second": "spheres",
    "workflow": "demo_drift",
    "previous_alignment": "demo_drift_previous",
    "true_alignment": "demo_drift_true",
    "translation_alignment": "demo_drift_translation",
    "offset_alignment": "demo_drift_offset",
}
# demo_drift_true and demo_drift_offset: aligned by the drift's inverse, then moved by this
EXACT_ALIGNMENT_OFFSET = {
    "demo_drift_true": np.eye(3),
    "demo_drift_offset": AffineTransform(translation=(0.4, 0.4)).params,
}
REGISTRATION = {
    "demo_drift": AlignSettings(),  # rule align's default
    "demo_drift_previous": AlignSettings(method="previous", model="rigid"),
    "demo_drift_translation": AlignSettings(method="previous", model="translation"),
}


@dataclass(frozen=True)
class Budget:
    """Annotated regions per data set and the volume they are drawn from."""

    name: str
    n_regions: int
    region_size: int
    slices: int = 48
    side: int = 384

    @property
    def labelled(self) -> int:
        return self.n_regions * self.region_size**2

    @property
    def voxels(self) -> int:
        return self.slices * self.side**2


BUDGETS = {
    "small": Budget("small", 5, 48),
    "medium": Budget("medium", 40, 48),
    "large": Budget("large", 100, 96),
    # the workflow demo's volumes (config/demo.yaml: 32 x 256 x 256, 20 regions of 48^2)
    "demo": Budget("demo", 20, 48, slices=32, side=256),
    "demo_large": Budget("demo_large", 100, 96, slices=32, side=256),
    "demo_small": Budget("demo_small", 5, 48, slices=32, side=256),
}
QUICK = Budget("quick", 6, 32, slices=8, side=128)


# --- the second kind of data: a Boolean model of particles ----------------------------------


@dataclass(frozen=True)
class SphereSpec:
    """A particle packing imaged by FIB-SEM. Lengths in nm unless named px; voxels 10 x 10 x
    50 nm (x, y, z) as in the demo."""

    porosity: float
    slices: int = 48
    height: int = 384
    width: int = 384
    n_regions: int = 20
    region_size: int = 48
    seed: int = 0
    radii_nm: tuple[float, ...] = (40.0, 60.0, 90.0)  # radius classes of the particles
    radius_shares: tuple[float, ...] = (0.5, 0.3, 0.2)  # share of the particles per class
    solid_level: float = 0.55
    pore_level: float = 0.12
    particle_contrast: float = 0.08  # std of the particles' relative brightness
    shine: float = 0.9  # fraction of a solid's brightness that shines through at depth 0
    attenuation_nm: float = 100.0  # shine-through fades as exp(-depth_nm / this)
    edge_contrast: float = 0.35  # topographic edge brightening (both phases)
    blur_px: float = 0.9  # the SEM's point spread
    electrons: float = 40.0  # detected electrons at intensity 1 (Poisson noise)
    beam_drift: float = 0.05  # amplitude of the slow beam-current drift along z


SHINE_SLICES = 6  # slices behind the face that can shine through (300 nm)


def particle_surface_distance(
    spec: SphereSpec, shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (nm, < 0 inside) to the union of Poisson-placed spheres, and the
    index of the sphere that gives it (the particle a voxel belongs to or faces)."""
    voxel = np.asarray(VOXEL_NM)
    radii, shares = np.asarray(spec.radii_nm), np.asarray(spec.radius_shares)
    shares = shares / shares.sum()
    mean_volume = float(np.sum(shares * 4 / 3 * np.pi * radii**3))
    # Boolean model: P(pore) = exp(-intensity * E[V]); centres also fall in a margin of the
    # largest radius, so the edges are not depleted.
    reach = np.ceil(radii.max() / voxel).astype(int)
    box_nm = (np.asarray(shape) + 2 * reach) * voxel
    count = rng.poisson(-np.log(spec.porosity) / mean_volume * np.prod(box_nm))
    centres = rng.uniform(0, 1, (count, 3)) * box_nm - reach * voxel  # nm, array frame
    radius = rng.choice(radii, count, p=shares)
    distance = np.full(shape, np.inf, np.float32)
    owner = np.zeros(shape, np.int32)
    for index, (centre, r) in enumerate(zip(centres, radius, strict=True)):
        low = np.maximum(np.floor((centre - r) / voxel).astype(int), 0)
        high = np.minimum(np.ceil((centre + r) / voxel).astype(int) + 1, shape)
        if np.any(high <= low):
            continue
        axes = [
            np.arange(lo, hi) * v - c for lo, hi, v, c in zip(low, high, voxel, centre, strict=True)
        ]
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
        d = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][:, None] ** 2 + axes[2] ** 2) - r
        closer = d < distance[box]
        distance[box] = np.where(closer, d, distance[box])
        owner[box] = np.where(closer, index, owner[box])
    return distance, owner


def render_spheres(
    solid: np.ndarray, brightness: np.ndarray, spec: SphereSpec, rng: np.random.Generator
) -> np.ndarray:
    """Intensities (about [0, 1]) of the first len - SHINE_SLICES milled faces."""
    depth = solid.shape[0] - SHINE_SLICES
    level = spec.solid_level * brightness
    image = np.where(solid[:depth], level[:depth], spec.pore_level).astype(np.float32)
    # shine-through: a pore shows the first solid behind it along z, attenuated with depth
    open_so_far = ~solid[:depth]
    for step in range(1, SHINE_SLICES + 1):
        behind = solid[step : step + depth]
        first = open_so_far & behind
        weight = spec.shine * np.exp(-(step - 0.5) * VOXEL_NM[0] / spec.attenuation_nm)
        image[first] += weight * (level[step : step + depth][first] - spec.pore_level)
        open_so_far &= ~behind
    # topographic edge contrast, on both sides of every pore edge
    edges = ndi.gaussian_gradient_magnitude(solid[:depth].astype(np.float32), (0, 1.0, 1.0))
    image += spec.edge_contrast * edges
    image = ndi.gaussian_filter(image, (0, spec.blur_px, spec.blur_px))
    phase = rng.uniform(0, 2 * np.pi)
    drift = 1 + spec.beam_drift * np.sin(np.arange(depth) / 7 + phase)
    image *= drift[:, None, None].astype(np.float32)
    counts = rng.poisson(np.clip(image, 0, None) * spec.electrons)
    return counts / spec.electrons


def synthesize_spheres(spec: SphereSpec) -> dict[str, object]:
    """A second, independent kind of synthetic FIB-SEM data; the dict of `synthesize`.

    Structure: solid = the union of spheres at Poisson-random centres (a Boolean model), radii
    of 40, 60 and 90 nm, isotropic in nm, so on 10 x 10 x 50 nm voxels a particle spans 1-4
    slices. The intensity of centres follows the Boolean model's porosity formula; a final
    shift of every sphere's radius by the same few nm makes the porosity exact. Unlike the
    demo's Gaussian random field the pores are the concave gaps between convex particles.

    Contrast: every particle has its own brightness (8 % spread). A pore shows the first
    solid behind it along z, its own brightness times 0.9 exp(-depth / 100 nm), with no extra
    blur with depth (the demo blurs and uses a fixed level). Edges are brightened on both
    sides by the gradient of the phase map (the demo brightens solid rims only). Then a
    Gaussian point spread, a slow beam-current drift along z, and Poisson (shot) noise whose
    variance grows with the signal (the demo adds Gaussian noise). No curtaining, no x
    gradient, no drift between slices.
    """
    rng = np.random.default_rng(spec.seed)
    shape = (spec.slices + SHINE_SLICES, spec.height, spec.width)
    distance, owner = particle_surface_distance(spec, shape, rng)
    shift = np.quantile(distance[: spec.slices], 1 - spec.porosity)
    solid = distance < shift
    brightness = 1 + spec.particle_contrast * rng.standard_normal(int(owner.max()) + 1)
    image = render_spheres(solid, np.clip(brightness, 0.7, 1.3)[owner], spec, rng)
    volume = np.clip(image * 40000 + 5000, 0, 65535).astype(np.uint16)
    truth = solid[: spec.slices].astype(np.uint8)
    regions, labels = random_regions(truth, spec.n_regions, spec.region_size, rng)
    return {"volume": volume, "truth": truth, "regions": regions, "labels": labels}


def make_data(kind: str, porosity: float, seed: int, budget: Budget) -> dict[str, object]:
    """One synthetic data set of `kind`; the same seed and volume give the same volume and
    truth for every budget (the regions are drawn last)."""
    size = {"slices": budget.slices, "height": budget.side, "width": budget.side}
    regions = {"n_regions": budget.n_regions, "region_size": budget.region_size}
    if kind == "demo":
        spec = SynthSpec(porosity, seed=seed, drift_px=0.0, drift_deg=0.0, **size, **regions)
        return synthesize(spec)
    still = {"drift": "none"}  # the films without drift: segmentation, not alignment
    if kind == "hard":  # the default demo's hard films (config/demo.yaml), without drift
        return synthesize(hard_film_spec(porosity, seed, **still, **size, **regions))
    if kind in FAMILIES:  # one draw of the family per seed, at the study's porosity
        rng = np.random.default_rng(seed)
        spec = random_film_spec(rng, kind, porosity=porosity, **still, **size, **regions)
        return synthesize(spec)
    if kind in REGISTRATION:  # as rule synthesize_demo: truth and labels as aligned
        spec = SynthSpec(porosity, seed=seed, **size, **regions)
        return seen_after_alignment(synthesize(spec), REGISTRATION[kind])
    if kind in EXACT_ALIGNMENT_OFFSET:
        # truth and labels in the reference frame: an offset under half a voxel leaves every
        # voxel's nearest voxel of the sample where it was
        return synthesize(SynthSpec(porosity, seed=seed, **size, **regions))
    return synthesize_spheres(SphereSpec(porosity, seed=seed, **size, **regions))


# --- data sets as the workflow prepares them ------------------------------------------------


@dataclass
class DataSet:
    """One preprocessed volume, its truth and its annotated regions."""

    name: str
    porosity: float
    volume: np.ndarray  # preprocessed, float32 in [0, 1]
    truth: np.ndarray
    regions: RegionSet
    region_file: str
    sampled: np.ndarray | None = None  # where the aligned volume shows the sample (drift)


@dataclass
class Study:
    """Everything the methods share for one data kind and budget."""

    kind: str
    budget: Budget
    workdir: Path
    datasets: list[DataSet]
    split: pd.DataFrame
    split_csv: str
    train_csv: str
    val_csv: str
    fraction: float
    train_voxels: int
    train_samples: int
    val_samples: int
    build_seconds: float

    @property
    def region_sets(self) -> dict[str, RegionSet]:
        return {d.name: d.regions for d in self.datasets}


def prepare(kind: str, porosity: float, seed: int, budget: Budget, workdir: Path) -> DataSet:
    """Synthesise, align (`demo_drift` as rule align, `demo_drift_previous` and
    `_translation` by the paper's chain, `demo_drift_true` and `_offset` by the drift's
    inverse), correct the x gradient,
    scale to [0, 1] and cut the regions' crops with the context an 81 x 3 network and the
    post-processing's smoothing need."""
    name = f"{kind}{seed}"
    data = make_data(kind, porosity, seed, budget)
    raw, preprocessed = workdir / f"{name}_raw.h5", workdir / f"{name}_preprocessed.h5"
    write_h5(raw, {"volume": data["volume"]})
    aligned, transforms, sampled = workdir / f"{name}_aligned.h5", None, None
    if kind in REGISTRATION:
        with Volume(str(raw), name) as volume:
            transforms = align_volume(volume, aligned, VOXEL_NM, REGISTRATION[kind]).transforms
    elif kind in EXACT_ALIGNMENT_OFFSET:  # aligned slice z at p reads drift[z]^-1 @ offset p
        transforms = np.linalg.inv(data["drift"]) @ EXACT_ALIGNMENT_OFFSET[kind]
        planes = zip(data["volume"], transforms, strict=True)
        write_h5(aligned, {"volume": np.stack([apply_transform(p, m) for p, m in planes])})
    if transforms is not None:
        # not the aligned slices' borders, which repeat their edge
        sampled = align_labels(np.ones(data["truth"].shape, np.uint8), transforms) == 1
        raw = aligned
    with Volume(str(raw), name) as volume:
        correct_gradient(volume, preprocessed, VOXEL_NM)
    with Volume(str(preprocessed), name) as volume:
        regions = extract_regions(
            volume,
            data["regions"],
            data["labels"],
            name,
            MARGINS["xy"] + MARGINS["smooth"],
            MARGINS["z"],
        )
    region_file = str(workdir / f"{name}_regions.h5")
    regions.write(region_file)
    volume = read_volume(str(preprocessed), name)
    return DataSet(name, porosity, volume, data["truth"], regions, region_file, sampled)


def sampling_fraction(voxels: pd.DataFrame, max_samples: int) -> float:
    """The largest fraction that gives at most `max_samples` train samples and that the
    50/50 stratified draw can fill from the rarer class."""
    rarer = int(min(np.count_nonzero(voxels.label == 0), np.count_nonzero(voxels.label == 1)))
    return min(max_samples / len(voxels), 2 * rarer / len(voxels), 1.0)


def region_mask(data: DataSet, indices: list[int]) -> np.ndarray:
    """True on the voxels of the data set's regions numbered in `indices`."""
    mask = np.zeros(data.truth.shape, bool)
    for region in data.regions.table.iloc[indices].itertuples():
        mask[region.z, region.y : region.y + region.height, region.x : region.x + region.width] = (
            True
        )
    return mask


def build_study(
    kind: str, budget: Budget, porosities: dict[int, float], workdir: Path, max_samples: int
) -> Study:
    """Data sets, the 60/20/20 region split and the train/val samples, as files the
    library's training reads."""
    started = time.perf_counter()
    datasets = [prepare(kind, p, seed, budget, workdir) for seed, p in porosities.items()]
    region_sets = {d.name: d.regions for d in datasets}
    split = split_regions({d.name: d.regions.table for d in datasets}, SPLIT, SPLIT_SEED)
    split_csv = str(workdir / "split.csv")
    write_csv(split_csv, split)
    rng = np.random.default_rng(SAMPLING_SEED)
    voxels = {s: labelled_voxels(region_sets, split, s) for s in ("train", "val")}
    fraction = sampling_fraction(voxels["train"], max_samples)
    paths, counts = {}, {}
    for name, part in voxels.items():
        samples = sample_split(part, fraction, name == "train", rng, name)
        paths[name], counts[name] = str(workdir / f"{name}.csv"), len(samples)
        write_csv(paths[name], samples)
    return Study(
        kind,
        budget,
        workdir,
        datasets,
        split,
        split_csv,
        paths["train"],
        paths["val"],
        fraction,
        len(voxels["train"]),
        counts["train"],
        counts["val"],
        time.perf_counter() - started,
    )


def describe(study: Study) -> str:
    """What was built: regions per split, labelled voxels, samples and the fraction."""
    counts = study.split.groupby("split").size().to_dict()
    per_split = "/".join(str(counts.get(split, 0)) for split in SPLIT)
    labelled = study.budget.labelled
    distinct = [
        int(region_mask(d, list(range(len(d.regions.table)))).sum()) for d in study.datasets
    ]
    return (
        f"{study.kind}/{study.budget.name}: {len(study.datasets)} data sets of "
        f"{study.budget.slices} x {study.budget.side} x {study.budget.side}, "
        f"{study.budget.n_regions} regions of {study.budget.region_size}^2 each = {labelled:,} "
        f"labelled voxels per data set ({labelled / study.budget.voxels:.1%} of the volume; "
        f"distinct after overlaps: {', '.join(f'{n:,}' for n in distinct)}); "
        f"regions train/val/test (both data sets) {per_split}; "
        f"sampling fraction {study.fraction:.4f} -> "
        f"{study.train_samples:,} train and {study.val_samples:,} val samples; "
        f"built in {study.build_seconds:.0f} s"
    )


# --- the methods ----------------------------------------------------------------------------


def choose_postprocess(study: Study, member: Member) -> dict:
    """sigma and T of highest pooled mIoU on the validation regions (rule
    optimize_postprocess), from the member's scores of those regions plus a margin."""
    windows, labels = [], []
    for data in study.datasets:
        val = sorted(regions_in(study.split, data.name, "val"))
        windows += list(
            score_regions(data.regions, member.scorer, member.n_z, MARGINS["smooth"], val)
        )
        labels += list(data.regions.labels[val])
    best, _ = optimize(windows, labels, MARGINS["smooth"], SIGMAS, THRESHOLDS, MIN_OBJECT_VOXELS)
    return {**best, "min_object_voxels": MIN_OBJECT_VOXELS}


def score_volumes(study: Study, member: Member) -> dict[str, np.ndarray]:
    """Every data set's whole volume scored by the member, by data-set name."""
    scores = {}
    for data in study.datasets:
        depth = data.volume.shape[0]
        scores[data.name], _, _ = ensemble_slices(
            lambda indices, v=data.volume: v[indices], depth, range(depth), [member]
        )
    return scores


def segment_volumes(study: Study, member: Member, chosen: dict) -> dict[str, np.ndarray]:
    """Every data set's whole volume scored by the member and post-processed."""
    scores = score_volumes(study, member)
    return {name: segment_as_chosen(volume, chosen) for name, volume in scores.items()}


def scored_method(study: Study, member: Member) -> tuple[dict[str, np.ndarray], dict]:
    """Post-processing chosen on val, then the full volumes segmented with it."""
    chosen = choose_postprocess(study, member)
    return segment_volumes(study, member, chosen), chosen


def run_otsu(study: Study) -> tuple[dict[str, np.ndarray], dict]:
    """One global Otsu threshold per preprocessed volume, no post-processing."""
    return {d.name: d.volume > threshold_otsu(d.volume) for d in study.datasets}, {}


def forest_member(study: Study) -> Member:
    """The forest (rule train_forest) on the study's train samples."""
    features, labels = forest_training_data(
        study.region_sets, pd.read_csv(study.train_csv), FOREST["n_z"], FOREST["sigma_max"]
    )
    forest = train_forest(features, labels, FOREST["trees"], FOREST["seed"], THREADS)
    return Member("rf", FOREST["n_z"], forest_scorer(forest, FOREST["sigma_max"]))


def forest_score_files(study: Study) -> list[str]:
    """The forest's score volumes (HDF5 /scores, as rule stitch_forest writes them), one per
    data set in the order of the preprocessed volumes: what labels the tiles of `pseudo`."""
    paths = []
    for name, scores in score_volumes(study, forest_member(study)).items():
        paths.append(str(study.workdir / f"{name}_forest_scores.h5"))
        write_h5(paths[-1], {"scores": scores.astype(np.float32)})
    return paths


def run_forest(study: Study) -> tuple[dict[str, np.ndarray], dict]:
    """The random forest on the train samples (rule train_forest), scored like a CNN."""
    return scored_method(study, forest_member(study))


def run_cnn(
    study: Study, method: str, training: TrainingSettings, seed: int, log: logging.Logger | None
) -> tuple[dict[str, np.ndarray], dict]:
    """One train_run (rule train, the epoch of lowest val loss), scored by the dense
    engine; with pseudo-labels the forest is trained and scores the volumes first."""
    import keras

    run_dir = study.workdir / f"{method}_seed{seed}"
    pseudo = training.unlabelled.method == "pseudo"
    architecture = "unet" if method == "unet" else "patch"
    history = train_run(
        run_dir,
        [d.region_file for d in study.datasets],
        study.train_csv,
        study.val_csv,
        study.split_csv,
        UNET_N_XY if architecture == "unet" else N_XY,
        N_Z,
        seed,
        "same" if architecture == "unet" else PADDING,
        training,
        log,
        [str(study.workdir / f"{d.name}_preprocessed.h5") for d in study.datasets],
        teacher_files=forest_score_files(study) if pseudo else (),
        architecture=architecture,
    )
    member = load_member(str(run_dir / "model.keras"), INFERENCE, threads=THREADS)
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


def trained_on(study: Study, method: str) -> int:
    """Labelled voxels a method learns from: the samples, or every train voxel (dense)."""
    if method.startswith("cnn_dense") or method == "unet":
        return study.train_voxels
    return {"otsu": 0}.get(method, study.train_samples)


def cnn_settings(method: str, args: argparse.Namespace) -> TrainingSettings:
    """The training settings of a CNN variant or of the U-Net."""
    variant = dict(UNET if method == "unet" else VARIANTS[method])
    steps = args.steps_per_epoch if variant.pop("steps", False) else None
    epochs = args.epochs_patches if variant["mode"] == "patches" else args.epochs_dense
    if method == "unet":
        epochs = args.epochs_unet
    return TrainingSettings(epochs=epochs, steps_per_epoch=steps, **variant)


def run_method(
    study: Study, method: str, seed: int, args: argparse.Namespace, log: logging.Logger | None
) -> tuple[list[dict], pd.DataFrame | None]:
    """One method (and seed) on one study: a row per data set, and a CNN's history."""
    started = time.perf_counter()
    if method == "otsu":
        segmentations, chosen = run_otsu(study)
    elif method == "rf":
        segmentations, chosen = run_forest(study)
    else:
        segmentations, chosen = run_cnn(study, method, cnn_settings(method, args), seed, log)
    seconds = time.perf_counter() - started
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
                "n_xy": {"otsu": None, "rf": None, "unet": UNET_N_XY}.get(method, N_XY),
                "n_z": {"otsu": 1, "rf": FOREST["n_z"]}.get(method, N_Z),
                "forest_n_z": FOREST["n_z"],
                "forest_seed": FOREST["seed"],
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
                **{
                    k: chosen.get(k)
                    for k in ("sigma", "threshold", "best_epoch", "val_loss", "steps")
                },
            }
        )
    return rows, chosen.get("history")


# --- run-time estimate ----------------------------------------------------------------------

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


def estimate_seconds(
    budget: Budget,
    methods: list[str],
    datasets: int,
    epochs: dict[str, int],
    max_samples: int,
    steps: int = 25,
) -> dict[str, float]:
    """Rough seconds per method (and for building the data) of one data kind and budget."""
    voxels = datasets * budget.voxels
    counts = {s: datasets * round(budget.n_regions * SPLIT[s]) for s in ("train", "val")}
    train_voxels = counts["train"] * budget.region_size**2
    samples = min(max_samples, 0.6 * train_voxels)
    val_samples = samples * counts["val"] / max(counts["train"], 1)
    crop = (budget.region_size + 2 * (MARGINS["xy"] + MARGINS["smooth"])) ** 2
    window = (budget.region_size + 2 * MARGINS["smooth"]) ** 2
    trials = len(SIGMAS) * len(THRESHOLDS)
    tile = -(-budget.region_size // 16) * 16 + TWIN_FIELD - 1
    post = counts["val"] * window * trials / RATES["optimize_px"]
    post += voxels / RATES["segment_voxels"]
    cnn_score = voxels / RATES["cnn_score"] + post + RUN_OVERHEAD_S
    seconds = {
        "build": voxels / RATES["build_voxels"],
        "otsu": voxels / 2e7,
        "rf": counts["train"] * 3 * crop / RATES["rf_features"]
        + samples / RATES["rf_fit"]
        + (voxels + counts["val"] * crop) / RATES["rf_score"]
        + post,
        "cnn_patches": epochs["patches"]
        * (samples / RATES["patch_train"] + val_samples / RATES["patch_val"] + EPOCH_OVERHEAD_S)
        + cnn_score,
        "cnn_dense": epochs["dense"]
        * (
            counts["train"] * tile**2 / RATES["dense_train_px"]
            + counts["val"] * tile**2 / RATES["dense_val_px"]
            + EPOCH_OVERHEAD_S
        )
        + cnn_score,
    }
    # fixed steps of 4 tiles
    stepped = epochs["dense"] * (
        steps * 4 * tile**2 / RATES["dense_train_px"]
        + counts["val"] * tile**2 / RATES["dense_val_px"]
        + EPOCH_OVERHEAD_S
    )
    for name in (
        "cnn_dense_steps",
        "cnn_dense_steps_m09",
        "cnn_dense_steps_k20",
        "cnn_dense_steps_adam",
        "cnn_dense_steps_adam_unregularised",
        "cnn_dense_steps_adam_regularised",
    ):
        seconds[name] = stepped + cnn_score
    # the forest's tiles double the tiles of a step, and the forest's scores of every
    # volume come first
    forest_taught = 2 * stepped + cnn_score + seconds["rf"]
    seconds["cnn_dense_steps_adam_forest"] = forest_taught
    seconds["cnn_dense_steps_adam_forest_soft"] = forest_taught
    unet_epoch = steps * RATES["unet_step_s"] + counts["val"] * RATES["unet_val_tile_s"]
    seconds["unet"] = epochs["unet"] * (unet_epoch + EPOCH_OVERHEAD_S) + cnn_score
    return {k: v for k, v in seconds.items() if k == "build" or k in methods}


# --- the table ------------------------------------------------------------------------------


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


# --- command line ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budgets", default="small,medium,large", help=",".join(BUDGETS) + " (demo*: 32 x 256^2)"
    )
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=",".join(METHODS))
    parser.add_argument(
        "--data",
        default="demo,spheres",
        help="demo,spheres (second),demo_drift (workflow),demo_drift_previous "
        "(previous_alignment),demo_drift_true (true_alignment),"
        "demo_drift_translation (translation_alignment),demo_drift_offset (offset_alignment),"
        "hard,calibration,held_out",
    )
    parser.add_argument("--epochs-patches", type=int, default=6, help="the demo's 6")
    parser.add_argument("--epochs-dense", type=int, default=40, help="the default demo's 40")
    parser.add_argument(
        "--epochs-unet", type=int, default=UNET_EPOCHS, help=f"the default's {UNET_EPOCHS}"
    )
    parser.add_argument(
        "--steps-per-epoch", type=int, default=25, help="steps per epoch of *_steps and unet"
    )
    parser.add_argument("--threads", type=int, default=THREADS, help="CPU threads")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per CNN method")
    parser.add_argument("--first-seed", type=int, default=0, help="the CNN seeds' first")
    parser.add_argument("--n-xy", type=int, default=N_XY, help="the CNN's input side (81)")
    parser.add_argument(
        "--n-z", type=int, default=N_Z, help="slices the CNN and the forest see (3)"
    )
    parser.add_argument("--forest-n-z", type=int, help="the forest's slices (as --n-z)")
    parser.add_argument("--forest-seed", type=int, default=0, help="the forest's seed (0)")
    parser.add_argument("--max-train-samples", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--verbose", action="store_true", help="log every training epoch")
    parser.add_argument("--dry-run", action="store_true", help="print the estimate, run nothing")
    parser.add_argument("--out", default="results/label_budget.csv")
    args = parser.parse_args()
    args.methods = choices(args.methods, METHODS, "method")
    args.data = [KIND_ALIASES.get(k, k) for k in args.data.split(",")]
    args.data = choices(",".join(args.data), KINDS, "data kind")
    args.budgets = [BUDGETS[b] for b in choices(args.budgets, tuple(BUDGETS), "budget")]
    args.porosities = POROSITIES
    if args.quick:  # one tiny budget, one data set per kind, short training
        args.budgets, args.porosities = [QUICK], {45: 0.45}
        args.epochs_patches, args.epochs_dense, args.epochs_unet = 1, 6, 2
        args.max_train_samples = min(args.max_train_samples, 2000)
    return args


def choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """The comma-separated names of `text`, each checked against `allowed`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return names


def print_estimate(args: argparse.Namespace) -> None:
    """The expected wall time per data kind and budget, before anything runs."""
    epochs = {"patches": args.epochs_patches, "dense": args.epochs_dense, "unet": args.epochs_unet}
    total = 0.0
    for budget in args.budgets:
        seconds = estimate_seconds(
            budget,
            args.methods,
            len(args.porosities),
            epochs,
            args.max_train_samples,
            args.steps_per_epoch,
        )
        cnn = sum(v for k, v in seconds.items() if k in NETWORKS)
        one_kind = sum(seconds.values()) + (args.seeds - 1) * cnn
        total += one_kind * len(args.data)
        parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items())
        print(
            f"estimate {budget.name}: {one_kind / 60:.0f} min per data kind ({parts} min; "
            f"{budget.labelled:,} labelled voxels per data set)"
        )
    print(f"estimate in all: {total / 60:.0f} min on {THREADS} cores ({len(args.data)} kinds)")


def set_context(n_xy: int, n_z: int, forest_n_z: int) -> None:
    """The CNN's input (n_xy x n_xy x n_z) and the forest's slices, and the margins the
    regions' crops need for them."""
    global N_XY, N_Z, MARGINS
    N_XY, N_Z = n_xy, n_z
    FOREST["n_z"] = forest_n_z
    MARGINS = context_margins([N_XY], [N_Z, FOREST["n_z"]], SIGMAS)


def main() -> None:
    global THREADS
    args = parse_args()
    THREADS = args.threads
    set_context(args.n_xy, args.n_z, args.forest_n_z or args.n_z)
    FOREST["seed"] = args.forest_seed
    configure_threads(THREADS)
    log = None
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        log = logging.getLogger("label_budget")
    print_estimate(args)
    if args.dry_run:
        return
    out = Path(args.out)
    rows, curves = [], []
    for kind in args.data:
        for budget in args.budgets:
            with tempfile.TemporaryDirectory(prefix="label_budget_") as tmp:
                study = build_study(
                    kind, budget, args.porosities, Path(tmp), args.max_train_samples
                )
                print(describe(study), flush=True)
                for method in args.methods:
                    cnn_seeds = range(args.first_seed, args.first_seed + args.seeds)
                    for seed in cnn_seeds if method in NETWORKS else [0]:
                        new, curve = run_method(study, method, seed, args, log)
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


def progress(rows: list[dict]) -> str:
    """One line per finished method and seed."""
    scores = ", ".join(f"{r['dataset']} {r['mIoU']:.3f}" for r in rows)
    first = rows[0]
    seed = first["forest_seed"] if first["method"] == "rf" else first["seed"]
    return f"  {first['method']} seed {seed}: mIoU {scores}; {first['seconds']:.0f} s"


if __name__ == "__main__":
    main()
