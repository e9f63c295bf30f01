"""The FIB-SEM prior's recipe: fibseg's default U-Net (n_z 3) trained on simulated films with
exact truth, drawn from the simulator's family `prior` (fibseg.demo.films), so that a run can
fine-tune a network that has seen FIB-SEM (config key training.init) instead of one that has
seen nothing.

`make_prior(recipe, folder)` reproduces it from `recipe.seed`:

1. `films` draws of the family, each `slices` x `side` x `side`, registered as rule align
   does (the truth moved into the aligned frame, as the demo's), gradient-corrected and cut
   into `regions_per_film` regions of `region_size` px, every voxel labelled from the truth
   (fibseg.pipeline.films, the workflow's functions);
2. whole films split into train and validation (every `val_every`-th film validates);
3. one run of rule train's `train_run`: the U-Net, Adam at 10^`log10_lr`, `epochs` x
   `steps_per_epoch` steps of `tiles_per_batch` tiles of `n_xy` px, the epoch of lowest
   validation loss kept;
4. sigma and T chosen on the validation regions (rule optimize_postprocess);
5. a bundle folder as `fibseg export-model` writes it (fibseg.inference.bundle): the model,
   postprocess.json and fibseg-model.json, which also records the recipe, the simulator's
   version and the SHA-256 of every file, so that `pretrained: {bundle}`, `fibseg predict`
   and `training.init` read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..annotation.regions import RegionSet
from ..demo.films import FAMILIES, random_film_spec
from ..demo.synth import SynthSpec, seen_after_alignment, synthesize
from ..io.atomic import atomic_directory
from ..networks.registry import architecture
from ..runtime.settings import (
    AlignSettings,
    InferenceSettings,
    PriorRecipe,
    SearchRanges,
    TrainingSettings,
)
from ..training.train import RunFiles, TrainingRun, train_run
from .dag import context_margins, keras_input_geometry, smoothing_margin
from .films import choose_postprocess, prepare_dataset

FAMILY = "prior"
VOXEL_NM = SynthSpec.voxel_nm  # the simulator's voxel (z, y, x), nm
# the simulator's source files: their digest is the simulator's version in the description
SIMULATOR_FILES = ("synth.py", "films.py")


def simulator_version() -> str:
    """SHA-256 of the simulator's source (fibseg.demo's synth.py and films.py), shortened."""
    digest = hashlib.sha256()
    folder = Path(__file__).resolve().parents[1] / "demo"
    for name in SIMULATOR_FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


def training_settings(recipe: PriorRecipe) -> TrainingSettings:
    """Rule train's settings for the prior's run: Adam at one rate, no step drop."""
    return TrainingSettings(
        epochs=recipe.epochs,
        optimizer="adam",
        steps_per_epoch=recipe.steps_per_epoch,
        tiles_per_batch=recipe.tiles_per_batch,
        search=SearchRanges(log10_lr0=(recipe.log10_lr,), k=(recipe.epochs + 1,)),
    )


def film_names(recipe: PriorRecipe) -> list[str]:
    return [f"film{k:03d}" for k in range(recipe.films)]


def prepare_films(recipe: PriorRecipe, workdir: Path, log: logging.Logger) -> dict[str, Path]:
    """Every film drawn, simulated and prepared as the workflow prepares a data set; returns
    each film's regions.h5."""
    rng = np.random.default_rng([recipe.seed, 0])
    margins = context_margins(
        [recipe.n_xy], [recipe.n_z], list(recipe.sigmas), architecture("unet")
    )
    size = {"slices": recipe.slices, "height": recipe.side, "width": recipe.side}
    regions = {"n_regions": recipe.regions_per_film, "region_size": recipe.region_size}
    files = {}
    for name in film_names(recipe):
        spec = random_film_spec(rng, FAMILY, **size, **regions)
        data = seen_after_alignment(synthesize(spec), AlignSettings())
        made = prepare_dataset(name, data, workdir, VOXEL_NM, margins, AlignSettings())
        made.preprocessed.unlink()  # the regions hold what training reads
        for stage in ("raw", "aligned"):
            (workdir / f"{name}_{stage}.h5").unlink(missing_ok=True)
        files[name] = made.region_file
        log.info("%s: porosity %.2f, %s", name, spec.porosity, made.region_file.name)
    return files


def film_split(recipe: PriorRecipe, region_files: dict[str, Path]) -> pd.DataFrame:
    """split.csv of whole films: every `val_every`-th film validates, the rest train."""
    rows = []
    for index, name in enumerate(region_files):
        split = "val" if index % recipe.val_every == recipe.val_every - 1 else "train"
        rows += [(name, region, split) for region in range(recipe.regions_per_film)]
    return pd.DataFrame(rows, columns=["dataset", "region", "split"])


def describe_prior(recipe: PriorRecipe, folder: Path, history: pd.DataFrame) -> dict:
    """fibseg-model.json of the prior's bundle: the bundle format's keys, and the recipe,
    the simulator's version and the training's outcome."""
    from ..inference.bundle import describe_model
    from ..runtime.job import versions

    model = folder / "model.keras"
    geometry = keras_input_geometry(str(model))
    best = history.loc[history["val_loss"].idxmin()]
    description = describe_model(
        {"model.keras": str(model)},
        {"architecture": "unet", "n_z": recipe.n_z, "epoch": int(best["epoch"])},
        str(folder / "postprocess.json"),
        [{"name": "simulated films (family prior)", "voxel_size_nm": list(VOXEL_NM)}],
        dataclasses.asdict(InferenceSettings()),
        dataclasses.asdict(AlignSettings()),
        [{"file": "model.keras", **geometry.architecture.describe(geometry)}],
        versions(),
    )
    description["prior"] = {
        "recipe": dataclasses.asdict(recipe),
        "family": {key: list(bounds) for key, bounds in FAMILIES[FAMILY].items()},
        "simulator_version": simulator_version(),
        "best_val_loss": float(best["val_loss"]),
        "best_val_mIoU": float(best["val_mIoU"]),
        "steps": int(len(history) * recipe.steps_per_epoch),
        "train_seconds": float(history["seconds"].sum()),
    }
    return description


def make_prior(recipe: PriorRecipe, folder: str | Path, log: logging.Logger | None = None) -> Path:
    """Reproduce the prior from `recipe` into the new bundle folder `folder` (written
    atomically; its films and run are made in a scratch folder beside it and removed)."""
    from ..inference.ensemble import load_member

    log = log or logging.getLogger("fibseg.prior")
    folder = Path(folder)
    workdir = folder.with_name(folder.name + ".work")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    region_files = prepare_films(recipe, workdir, log)
    split = film_split(recipe, region_files)
    split.to_csv(workdir / "split.csv", index=False)
    run = TrainingRun(
        workdir / "run",
        architecture("unet"),
        recipe.n_xy,
        recipe.n_z,
        recipe.seed,
        training_settings(recipe),
        RunFiles([str(p) for p in region_files.values()], split_csv=str(workdir / "split.csv")),
    )
    history = train_run(run, log)
    member = load_member(str(workdir / "run/model.keras"), InferenceSettings())
    region_sets = {name: RegionSet.read(path) for name, path in region_files.items()}
    smooth = smoothing_margin(list(recipe.sigmas))
    chosen = choose_postprocess(
        region_sets,
        split,
        member.scorer,
        member.n_z,
        smooth,
        recipe.sigmas,
        recipe.thresholds,
        recipe.min_object_voxels,
    )
    log.info("post-processing chosen on the validation films: %s", chosen)
    with atomic_directory(folder) as tmp:
        # the weights alone (no optimiser state): a third of the trained file's size
        member.model.save(tmp / "model.keras")
        (tmp / "postprocess.json").write_text(json.dumps(chosen, indent=2) + "\n")
        description = describe_prior(recipe, tmp, history)
        (tmp / "fibseg-model.json").write_text(json.dumps(description, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return folder
