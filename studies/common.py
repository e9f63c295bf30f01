"""What the studies (and benchmarks/calibrate_demo.py) share: the workflow's settings, read
from its config files and schema, and its chain from a synthetic volume to samples and a
segmentation, run in-process with fibseg's public functions as the rules call them:

- rule align (`align_volume`), correct_gradient (`correct_gradient`) and extract_regions
  (`extract_regions`): `prepare_dataset`;
- rule split (`split_regions`) and sample (`sample_splits`): `split_datasets`, `sample_datasets`;
- rule train_forest, optimize_postprocess and postprocess: `forest_member`,
  `choose_postprocess`, `score_volume` and `segment_as_chosen`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import sample_splits, split_regions
from fibseg.baselines.forest import forest_scorer, forest_training_data, train_forest
from fibseg.inference.ensemble import Member, ensemble_slices
from fibseg.pipeline.dag import context_margins
from fibseg.pipeline.films import Prepared
from fibseg.pipeline.films import choose_postprocess as choose
from fibseg.pipeline.films import prepare_dataset as prepare
from fibseg.runtime.settings import AlignSettings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
DEMO_CONFIG = (REPO / "config/config.yaml", REPO / "config/demo.yaml")


def demo_config() -> dict:
    """The demo's config as `snakemake --cores all` sees it: config/config.yaml, then
    config/demo.yaml merged on top, validated against the schema, which fills its defaults."""
    from snakemake.utils import update_config, validate

    config: dict = {}
    for path in DEMO_CONFIG:
        update_config(config, yaml.safe_load(path.read_text()))
    validate(config, str(SCHEMA))
    return config


@dataclass(frozen=True)
class Forest:
    """The random forest's settings (config section `forest`)."""

    trees: int
    sigma_max: float
    n_z: int
    seed: int


@dataclass(frozen=True)
class Workflow:
    """The settings of the workflow's rules that preparing, sampling and scoring read."""

    voxel_nm: tuple[float, float, float]  # z, y, x
    align: AlignSettings
    split: dict[str, float]  # train, val, test
    split_seed: int
    sampling_fraction: float
    sampling_seed: int
    forest: Forest
    sigmas: list[float]  # postprocess.sigma_grid
    thresholds: list[float]  # postprocess.threshold_grid
    min_object_voxels: int

    @classmethod
    def from_config(cls, config: dict) -> Workflow:
        """From a validated config (`demo_config`)."""
        forest, post = config["forest"], config["postprocess"]
        return cls(
            voxel_nm=tuple(float(v) for v in config["voxel_size_nm"]),
            align=AlignSettings.from_config(config["align"]),
            split={k: config["split"][k] for k in ("train", "val", "test")},
            split_seed=config["split"]["seed"],
            sampling_fraction=config["sampling"]["fraction"],
            sampling_seed=config["sampling"]["seed"],
            forest=Forest(
                forest["trees"], float(forest["sigma_max"]), forest["n_z"], forest["seed"]
            ),
            sigmas=[float(s) for s in post["sigma_grid"]],
            thresholds=[float(t) for t in post["threshold_grid"]],
            min_object_voxels=post["min_object_voxels"],
        )

    def margins(self, n_xy: int, n_z: int) -> dict[str, int]:
        """The context rule extract_regions keeps for a CNN of n_xy x n_xy x n_z and the
        forest (pipeline.dag.context_margins)."""
        return context_margins([n_xy], [n_z, self.forest.n_z], self.sigmas)


def demo_workflow() -> Workflow:
    """The demo's settings (`demo_config`)."""
    return Workflow.from_config(demo_config())


def prepare_dataset(
    name: str,
    data: dict,
    workdir: Path,
    workflow: Workflow,
    margins: dict[str, int],
    alignment: AlignSettings | np.ndarray | None,
) -> Prepared:
    """A synthetic data set through rule align, correct_gradient and extract_regions
    (fibseg.pipeline.films.prepare_dataset) at the workflow's voxel size. `margins`:
    `Workflow.margins`."""
    return prepare(name, data, workdir, workflow.voxel_nm, margins, alignment)


def split_datasets(region_sets: dict[str, RegionSet], workflow: Workflow) -> pd.DataFrame:
    """Rule split: the regions of every data set into train, val and test."""
    tables = {name: regions.table for name, regions in region_sets.items()}
    return split_regions(tables, workflow.split, workflow.split_seed)


def sample_datasets(
    region_sets: dict[str, RegionSet],
    split: pd.DataFrame,
    workflow: Workflow,
    fraction: float | None = None,
) -> dict[str, tuple[pd.DataFrame, int]]:
    """Rule sample: each split's samples and labelled voxels (`sample_splits`), at
    `fraction` or the config's."""
    fraction = workflow.sampling_fraction if fraction is None else fraction
    return sample_splits(region_sets, split, fraction, workflow.sampling_seed)


def forest_member(
    region_sets: dict[str, RegionSet], samples: pd.DataFrame, forest: Forest, threads: int
) -> Member:
    """Rule train_forest on the train samples, as a member that scores slices."""
    features, labels = forest_training_data(region_sets, samples, forest.n_z, forest.sigma_max)
    model = train_forest(features, labels, forest.trees, forest.seed, threads)
    return Member("rf", forest.n_z, forest_scorer(model, forest.sigma_max))


def choose_postprocess(
    region_sets: dict[str, RegionSet],
    split: pd.DataFrame,
    member: Member,
    workflow: Workflow,
    smooth: int,
) -> dict:
    """Rule optimize_postprocess on the validation regions (fibseg.pipeline.films), with the
    workflow's grids of sigma and T."""
    return choose(
        region_sets,
        split,
        member.scorer,
        member.n_z,
        smooth,
        workflow.sigmas,
        workflow.thresholds,
        workflow.min_object_voxels,
    )


def score_volume(volume: np.ndarray, member: Member) -> np.ndarray:
    """Every slice of a preprocessed volume scored by the member (rule predict_slices)."""
    depth = volume.shape[0]
    scores, _, _ = ensemble_slices(lambda z: volume[z], depth, range(depth), [member])
    return scores
