"""Input checks of one data set's files (rule check_dataset) and the config checks across
keys; messages name the data set, the file or the config key, what was found and the fix."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..annotation.labels import painted_labels
from ..annotation.sampling import SPLITS
from ..io.errors import InputError, LimitError
from ..io.formats import split_spec
from ..io.volume import Volume

REGION_COLUMNS = ("z", "y", "x", "height", "width")
# a painted label volume: 0 unlabelled, 1 pore, 2 solid (napari Labels, ilastik export)
PAINTED = {0: "unlabelled", 1: "pore", 2: "solid"}


def read_regions(path: str, dataset: str) -> pd.DataFrame:
    """The regions CSV with integer z, y, x, height, width and an optional split column."""
    if not Path(path).is_file():
        raise InputError(
            "the regions CSV does not exist.",
            dataset=dataset,
            file=path,
            fix="correct the 'regions' column of the data set sheet.",
        )
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise InputError(
            f"is not a readable CSV ({error}).",
            dataset=dataset,
            file=path,
            fix="write a CSV with columns z,y,x,height,width[,split].",
        ) from error
    missing = [c for c in REGION_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"lacks the column(s) {', '.join(missing)} (found: "
            f"{', '.join(map(str, table.columns))}).",
            dataset=dataset,
            file=path,
            fix="write a header line z,y,x,height,width[,split].",
        )
    if table.empty:
        raise InputError(
            "has no regions.", dataset=dataset, file=path, fix="list at least one annotated region."
        )
    for column in REGION_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or (values % 1 != 0).any() or (values < 0).any():
            bad = table.index[values.isna() | (values % 1 != 0) | (values < 0)][0]
            raise InputError(
                f"column '{column}' row {bad + 2} holds '{table[column][bad]}'; a "
                "non-negative integer is expected.",
                dataset=dataset,
                file=path,
                fix="write pixel indices as whole numbers.",
            )
        table[column] = values.astype(np.int64)
    if "split" in table.columns:
        wrong = sorted(set(table["split"].astype(str)) - set(SPLITS))
        if wrong:
            raise InputError(
                f"column 'split' holds {', '.join(wrong)}; only train, val and test are allowed.",
                dataset=dataset,
                file=path,
                fix="correct the split column or delete it to split at random.",
            )
    return table


def check_regions_in_volume(
    table: pd.DataFrame, shape: tuple[int, ...], dataset: str, path: str
) -> None:
    """Every region lies inside the (z, y, x) volume."""
    outside = (
        (table.z >= shape[0])
        | (table.y + table.height > shape[1])
        | (table.x + table.width > shape[2])
        | (table.height < 1)
        | (table.width < 1)
    )
    if outside.any():
        row = table[outside].iloc[0]
        raise InputError(
            f"region in CSV row {int(table.index[outside][0]) + 2} (z={row.z}, "
            f"y={row.y}, x={row.x}, {row.height} x {row.width}) lies outside the "
            f"volume of shape {tuple(shape)} (z, y, x).",
            dataset=dataset,
            file=path,
            fix="use 0-based top-left corners in the aligned frame.",
        )


def check_labels(labels: np.ndarray, table: pd.DataFrame, dataset: str, path: str) -> None:
    """Label stack (n, h, w) of 0/1 that agrees with the regions table."""
    if labels.ndim != 3:
        raise InputError(
            f"the label stack is {labels.ndim}-D; (regions, height, width) is expected.",
            dataset=dataset,
            file=path,
            fix="save one 2-D mask per region as pages of one stack.",
        )
    if labels.shape[0] != len(table):
        raise InputError(
            f"holds {labels.shape[0]} masks but the regions CSV lists {len(table)} regions.",
            dataset=dataset,
            file=path,
            fix="give one mask per CSV row, in row order.",
        )
    sizes = set(zip(table.height, table.width, strict=True))
    largest = (int(table.height.max()), int(table.width.max()))
    if labels.shape[1:] != largest:
        raise InputError(
            f"masks are {labels.shape[1]} x {labels.shape[2]} but the regions CSV "
            f"gives sizes {sorted(sizes)}.",
            dataset=dataset,
            file=path,
            fix="make height and width in the CSV match the masks (regions of different "
            "sizes: pages of the largest size, each mask in the top-left corner of its page).",
        )
    values = np.unique(
        np.concatenate(
            [
                labels[i, :h, :w].ravel()
                for i, (h, w) in enumerate(zip(table.height, table.width, strict=True))
            ]
        )
    )
    if not set(values.tolist()) <= {0, 1}:
        raise InputError(
            f"labels must be 0 (pore) or 1 (solid); found values {values[:10].tolist()}.",
            dataset=dataset,
            file=path,
            fix="binarise the masks: 1 = solid, 0 = pore.",
        )


def check_annotation(
    annotation: np.ndarray, shape: tuple[int, ...], dataset: str, path: str
) -> dict[str, int]:
    """A painted label volume of the volume's shape, values 0-2, with both classes painted;
    returns the voxel count of each class."""
    if annotation.shape != tuple(shape):
        raise InputError(
            f"the annotation has shape {annotation.shape} but the volume {tuple(shape)} (z, y, x).",
            dataset=dataset,
            file=path,
            fix="paint the labels on the sheet's volume itself (same slices, same size), "
            "in its unaligned frame, and export the whole label layer.",
        )
    values = np.unique(annotation)
    wrong = [v for v in values.tolist() if v not in PAINTED]
    if wrong:
        raise InputError(
            f"the annotation holds values {wrong[:10]}; only 0 (unlabelled), 1 (pore) and 2 "
            "(solid) are allowed.",
            dataset=dataset,
            file=path,
            fix="paint with label 1 for pore and 2 for solid only, and leave the rest 0.",
        )
    counts = {name: int(np.count_nonzero(annotation == v)) for v, name in PAINTED.items()}
    missing = [name for name in ("pore", "solid") if counts[name] == 0]
    if missing:
        problem = (
            "the annotation has no labelled voxel."
            if len(missing) == 2
            else f"the annotation labels only one class: no voxel is {missing[0]} "
            f"({2 if missing[0] == 'solid' else 1})."
        )
        raise InputError(
            problem,
            dataset=dataset,
            file=path,
            fix="paint some voxels of both classes: 1 = pore, 2 = solid.",
        )
    return counts


def check_painted_regions(labels: np.ndarray, dataset: str, path: str) -> None:
    """The derived regions (after alignment) still hold pore and solid voxels."""
    if not (labels == 0).any() or not (labels == 1).any():
        raise InputError(
            "after alignment the annotation no longer labels both pore and solid voxels "
            "inside the volume.",
            dataset=dataset,
            file=path,
            fix="paint more voxels of both classes, away from the slices' edges.",
        )


def check_slices(volume: Volume) -> None:
    """Every slice is read once, so a truncated or corrupt file (or slice file) fails here;
    a float volume holds no NaN or Inf."""
    floating = np.issubdtype(volume.dtype, np.floating)
    for z in range(len(volume)):
        image = volume.read(z, z + 1)
        if floating and not np.isfinite(image).all():
            raise InputError(
                f"slice {z} holds NaN or Inf values.",
                dataset=volume.dataset_name,
                file=volume.files[z] if volume.format in ("folder", "glob") else volume.path,
                fix="replace them before running fibseg.",
            )


def check_slice_numbers(volume: Volume) -> None:
    """The numbers in the names of a folder's slice files (the last run of digits) rise by
    one step: a gap means a missing slice, a repeat a stray file."""
    if volume.format not in ("folder", "glob") or len(volume.files) < 3:
        return
    found = [re.findall(r"\d+", Path(name).stem) for name in volume.files]
    if not all(found):
        return
    numbers = np.array([int(digits[-1]) for digits in found])
    steps = np.diff(numbers)
    step = int(np.bincount(steps[steps >= 0]).argmax()) if (steps >= 0).any() else 0
    wrong = np.flatnonzero(steps != step)
    if step > 0 and wrong.size:
        first = int(wrong[0])
        raise InputError(
            f"the slice files' numbers go from {numbers[first]} ({volume.files[first]}) to "
            f"{numbers[first + 1]} ({volume.files[first + 1]}) where the others step by "
            f"{step}: a slice is missing or a stray file is in the way.",
            dataset=volume.dataset_name,
            file=volume.path,
            fix="restore the missing slice or remove the extra file, so that every slice "
            "of the stack is there once.",
        )


def check_dataset(
    name: str,
    volume_spec: str,
    regions_csv: str | None = None,
    labels_spec: str | None = None,
    annotation_spec: str | None = None,
    annotation_labels: Mapping[str, Sequence[int]] | None = None,
) -> dict:
    """All checks of one data set; returns a summary for the log. A predict-only data set
    (no regions and labels, no annotation) has its volume checked only; an annotation's values
    are read through `annotation_labels` (the config key; None: 1 pore, 2 solid)."""
    with Volume(volume_spec, name) as volume:
        if min(volume.shape) < 1:
            raise InputError(
                f"the volume is empty, shape {volume.shape}.",
                dataset=name,
                file=volume.path,
                fix="point the sheet at the full stack.",
            )
        check_slice_numbers(volume)
        check_slices(volume)
        shape, dtype = volume.shape, str(volume.dtype)
    if annotation_spec:
        path = split_spec(annotation_spec)[0]
        with Volume(annotation_spec, name) as painted:
            annotation = painted_labels(painted.read(), annotation_labels, name, path)
        counts = check_annotation(annotation, shape, name, path)
        return {"dataset": name, "shape": list(shape), "dtype": dtype, "annotation": counts}
    if not regions_csv and not labels_spec:
        return {"dataset": name, "shape": list(shape), "dtype": dtype, "regions": 0}
    if not regions_csv or not labels_spec:
        raise InputError(
            "has regions or labels but not both.",
            dataset=name,
            file=regions_csv or labels_spec,
            fix="give both columns of the sheet, or neither to only segment the volume.",
        )
    table = read_regions(regions_csv, name)
    check_regions_in_volume(table, shape, name, regions_csv)
    with Volume(labels_spec, name) as label_volume:
        labels = label_volume.read()
    check_labels(labels, table, name, split_spec(labels_spec)[0])
    return {
        "dataset": name,
        "shape": list(shape),
        "dtype": dtype,
        "regions": len(table),
        "labelled_voxels": int(labels.size),
        "solid_fraction": float(labels.mean()),
    }


def check_config(config: dict, config_name: str = "config") -> None:
    """Checks across keys that the JSON schema cannot express, each defined once beside the
    code it protects; the message names the config key."""
    from ..annotation.labels import check_annotation_labels
    from ..annotation.published import check_published_context
    from ..annotation.sampling import check_split_fractions
    from ..networks.architecture import check_slices
    from ..networks.registry import architecture
    from ..training.halving import check_search
    from ..training.selection import check_ensemble_size
    from ..training.unlabelled import check_unlabelled

    grid, inference, model = config["grid"], config["inference"], config["model"]
    try:  # model.architecture names a registered one (the schema takes any name)
        network = architecture(model["architecture"])
    except LimitError as error:
        raise InputError(error.problem, file=f"{config_name}: {error.key}", fix=error.fix) from None
    checks = [
        lambda: network.check_grid(grid["n_xy"], grid["n_z"], model["padding"]),
        lambda: check_split_fractions(config["split"]),
        lambda: check_annotation_labels(config.get("annotation_labels")),
    ]
    runs = len(grid["n_xy"]) * len(grid["n_z"]) * grid["seeds"]
    checks.append(lambda: check_ensemble_size(config["ensemble"]["top_k"], runs))
    checks.append(lambda: check_search(grid["search"], config["training"]["epochs"], grid["seeds"]))
    if config["forest"]["enabled"]:
        checks.append(lambda: check_slices(config["forest"]["n_z"], "forest.n_z"))
    training = config["training"]
    unlabelled = training["unlabelled"]
    checks.append(
        lambda: network.check_training(training["mode"], unlabelled["method"], model["padding"])
    )
    checks.append(
        lambda: check_unlabelled(
            training["mode"], unlabelled["method"], config["forest"]["enabled"]
        )
    )
    pretrained = config.get("pretrained") or {}
    reused = pretrained.get("model") or pretrained.get("bundle")
    if not reused:
        # a pretrained model's own padding is checked when it is loaded (rule check_model)
        checks.append(
            lambda: network.check_engine(
                inference["engine"], inference["allow_approximate_dense"], model["padding"]
            )
        )
    if config["published"]["datasets"]:
        checks.append(
            lambda: check_published_context(
                max(network.context_xy(n_xy) for n_xy in grid["n_xy"]), max(grid["n_z"]) // 2
            )
        )
    for check in checks:
        try:
            check()
        except LimitError as error:
            raise InputError(
                error.problem, file=f"{config_name}: {error.key}", fix=error.fix
            ) from None
