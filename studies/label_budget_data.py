"""The label-budget study's data: its budgets, its kinds of synthetic data, and the data sets
prepared as the workflow prepares them (studies/common.py), split and sampled."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.transform import AffineTransform

from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import labelled_voxels
from fibseg.demo.films import FAMILIES, hard_film_spec, random_film_spec
from fibseg.demo.spheres import SphereSpec, synthesize_spheres
from fibseg.demo.synth import SynthSpec, seen_after_alignment, synthesize
from fibseg.io.volume import read_volume
from fibseg.io.writers import write_csv
from fibseg.preprocess.alignment import align_labels
from fibseg.runtime.settings import AlignSettings
from studies.common import Workflow, prepare_dataset, sample_datasets, split_datasets

N_XY, N_Z = 81, 3  # the patch CNN's input: 81 x 81 x 3, 'valid'
POROSITIES = {22: 0.22, 45: 0.45}  # data-set seed -> target porosity
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
REGISTRATION = {  # kinds registered as rule align registers them
    "demo_drift": None,  # rule align's settings of the demo's config
    "demo_drift_previous": AlignSettings(method="previous", model="rigid"),  # config/paper.yaml
    "demo_drift_translation": AlignSettings(method="previous", model="translation"),
}
# demo_drift_true and demo_drift_offset: aligned by the drift's inverse, then moved by this
EXACT_ALIGNMENT_OFFSET = {
    "demo_drift_true": np.eye(3),
    "demo_drift_offset": AffineTransform(translation=(0.4, 0.4)).params,
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


@dataclass(frozen=True)
class Context:
    """What every data set and method of a run shares: the workflow demo's settings (with the
    forest's n_z and seed as asked), the patch CNN's input, the CPU threads and the prior."""

    workflow: Workflow
    n_xy: int = N_XY
    n_z: int = N_Z
    threads: int = 2
    prior: str | None = None  # the FIB-SEM prior's bundle (methods prior, unet_prior)

    @property
    def margins(self) -> dict[str, int]:
        """The regions' context for the CNN's input, the forest and the smoothing."""
        return self.workflow.margins(self.n_xy, self.n_z)


def registration(kind: str, workflow: Workflow) -> AlignSettings:
    """How rule align registers a kind of REGISTRATION."""
    return REGISTRATION[kind] or workflow.align


def make_data(
    kind: str, porosity: float, seed: int, budget: Budget, workflow: Workflow
) -> dict[str, object]:
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
        return seen_after_alignment(synthesize(spec), registration(kind, workflow))
    if kind in EXACT_ALIGNMENT_OFFSET:
        # truth and labels in the reference frame: an offset under half a voxel leaves every
        # voxel's nearest voxel of the sample where it was
        return synthesize(SynthSpec(porosity, seed=seed, **size, **regions))
    return synthesize_spheres(SphereSpec(porosity, seed=seed, **size, **regions))


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
    context: Context
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


def prepare(
    kind: str, porosity: float, seed: int, budget: Budget, workdir: Path, context: Context
) -> DataSet:
    """Synthesise, align (the REGISTRATION kinds as rule align, the EXACT_ALIGNMENT_OFFSET
    kinds by the drift's inverse, the others not at all), correct the x gradient and cut the
    regions' crops with the context the CNN, the forest and the smoothing need."""
    name = f"{kind}{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    data = make_data(kind, porosity, seed, budget, context.workflow)
    alignment = None
    if kind in REGISTRATION:
        alignment = registration(kind, context.workflow)
    elif kind in EXACT_ALIGNMENT_OFFSET:  # aligned slice z at p reads drift[z]^-1 @ offset p
        alignment = np.linalg.inv(data["drift"]) @ EXACT_ALIGNMENT_OFFSET[kind]
    made = prepare_dataset(name, data, workdir, context.workflow, context.margins, alignment)
    sampled = None
    if made.transforms is not None:
        # not the aligned slices' borders, which repeat their edge
        sampled = align_labels(np.ones(data["truth"].shape, np.uint8), made.transforms) == 1
    volume = read_volume(str(made.preprocessed), name)
    return DataSet(name, porosity, volume, made.truth, made.regions, str(made.region_file), sampled)


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
    kind: str,
    budget: Budget,
    porosities: dict[int, float],
    workdir: Path,
    max_samples: int,
    context: Context,
) -> Study:
    """Data sets, the region split and the train/val samples (at most `max_samples` train
    samples), as files the library's training reads."""
    started = time.perf_counter()
    datasets = [prepare(kind, p, seed, budget, workdir, context) for seed, p in porosities.items()]
    region_sets = {d.name: d.regions for d in datasets}
    split = split_datasets(region_sets, context.workflow)
    split_csv = str(workdir / "split.csv")
    write_csv(split_csv, split)
    train_voxels = labelled_voxels(region_sets, split, "train")
    fraction = sampling_fraction(train_voxels, max_samples)
    drawn = sample_datasets(region_sets, split, context.workflow, fraction)
    paths, counts = {}, {}
    for name in ("train", "val"):
        samples = drawn[name][0]
        paths[name], counts[name] = str(workdir / f"{name}.csv"), len(samples)
        write_csv(paths[name], samples)
    return Study(
        kind,
        budget,
        context,
        workdir,
        datasets,
        split,
        split_csv,
        paths["train"],
        paths["val"],
        fraction,
        len(train_voxels),
        counts["train"],
        counts["val"],
        time.perf_counter() - started,
    )


def describe(study: Study) -> str:
    """What was built: regions per split, labelled voxels, samples and the fraction."""
    counts = study.split.groupby("split").size().to_dict()
    per_split = "/".join(str(counts.get(split, 0)) for split in study.context.workflow.split)
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
