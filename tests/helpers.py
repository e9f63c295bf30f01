"""Helpers the tests import: tiny synthetic projects and a real `snakemake` runner.

Fixtures and hooks stay in conftest.py; everything a test imports by name lives here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

TINY_DEMO = {
    "T22": {
        "porosity": 0.22,
        "slices": 6,
        "height": 96,
        "width": 96,
        "n_regions": 10,
        "region_size": 24,
        "seed": 22,
    },
    "T45": {
        "porosity": 0.45,
        "slices": 6,
        "height": 96,
        "width": 96,
        "n_regions": 10,
        "region_size": 24,
        "seed": 45,
    },
}


def demo_sheet_rows(names: list[str]) -> str:
    header = "name\tvolume\tregions\tlabels\taligned\ttruth\n"
    rows = "".join(
        f"{n}\tresults/demo/{n}/volume.tif\tresults/demo/{n}/regions.csv\t"
        f"results/demo/{n}/labels.tif\tfalse\tresults/demo/{n}/truth.tif\n"
        for n in names
    )
    return header + rows


def demo_config() -> dict:
    """The demo's config as `snakemake --cores all` builds it: config/config.yaml with
    config/demo.yaml merged on top (the Snakefile adds it when no file names a sheet)."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/demo.yaml").read_text()))
    return config


def write_project(directory: Path, config: dict, sheet: str | None = None) -> Path:
    """A working directory with config/config.yaml (and a sheet) like a user's."""
    (directory / "config").mkdir(parents=True, exist_ok=True)
    if sheet is not None:
        (directory / "config" / "datasets.tsv").write_text(sheet)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return directory


def imwrite(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array, photometric="minisblack")


EXTERNAL_SHEET = (
    "name\tvolume\tregions\tlabels\nEXT\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif\n"
)
EXTERNAL_CONFIG = {
    "datasets": "config/datasets.tsv",
    "grid": {"n_xy": [17], "n_z": [1], "seeds": 1},
    "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 1},
}


def write_external_project(directory: Path) -> Path:
    """A valid external data set 'EXT' (4 slices of 48 x 48, 5 regions of 12 x 12) and a
    small grid, as a user would bring their own data."""
    rng = np.random.default_rng(0)
    data = directory / "data"
    data.mkdir(parents=True)
    imwrite(data / "vol.tif", rng.integers(1000, 50000, (4, 48, 48)).astype(np.uint16))
    pd.DataFrame(
        {
            "z": [0, 1, 2, 3, 1],
            "y": [0, 10, 20, 30, 5],
            "x": [0, 10, 20, 30, 25],
            "height": 12,
            "width": 12,
        }
    ).to_csv(data / "regions.csv", index=False)
    imwrite(data / "labels.tif", (rng.random((5, 12, 12)) < 0.5).astype(np.uint8))
    return write_project(directory, EXTERNAL_CONFIG, EXTERNAL_SHEET)


def edit_config(project: Path, **changes) -> None:
    """Set `section.key` (or a whole `section`) in the project's config/config.yaml."""
    path = project / "config/config.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            config.setdefault(section, {})[name] = value
        else:
            config[section] = value
    path.write_text(yaml.safe_dump(config))


def region_tiles(
    regions,
    indices,
    n_xy: int,
    n_z: int,
    padding: str = "valid",
    tile: int | None = None,
    side: int | None = None,
    codes=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles of the regions at `indices`, as DenseTiles cuts them: inputs (B, side + field -
    1, same, n_z), labels and a 0/1 mask (B, side, side), mask 0 where there is no label (the
    padding up to a multiple of 16, and IGNORE voxels: unpainted or padding to the common
    region box). Regions larger than `tile` are cut into several tiles (`tile_origins`
    order); `codes` gives each tile's dihedral transform (identity by default)."""
    from fibseg.training.dense import check_dense_training
    from fibseg.training.tiles import (
        DEFAULT_TILE,
        check_margins,
        cut_tile,
        tile_origins,
        tile_side,
    )

    check_dense_training(padding)
    check_margins(regions, n_xy, n_z)
    side = side or tile_side(regions.labels.shape[1:], tile or DEFAULT_TILE)
    origins = tile_origins(regions, indices, side)
    codes = np.zeros(len(origins), np.int64) if codes is None else np.asarray(codes)
    cut = [
        cut_tile(regions, r, y0, x0, side, n_xy, n_z, int(c))
        for (r, y0, x0), c in zip(origins, codes, strict=True)
    ]
    return tuple(np.stack(parts) for parts in zip(*cut, strict=True))


def run_snakemake(
    directory: Path,
    *args: str,
    check: bool = True,
    timeout: float = 1800,
    snakefile: Path = REPO / "Snakefile",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the real workflow (or a `snakefile` that uses it as a module) in `directory`, with
    `env` added to the environment; on failure show its output."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    process = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(snakefile), "--cores", "2", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and process.returncode != 0:
        pytest.fail(
            f"snakemake {' '.join(args)} failed:\n{process.stdout[-6000:]}\n"
            f"{process.stderr[-8000:]}"
        )
    return process


def planned_jobs(project: Path, *targets: str) -> set[str]:
    """The rules a plain `snakemake` (of `targets`) would run in `project` (from the dry
    run's job stats); empty when nothing is to be done."""
    process = run_snakemake(project, *targets, "-n", "--quiet", "rules")
    output = process.stdout + process.stderr
    if "Job stats:" not in output:
        return set()
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1] for m in re.finditer(r"^(\w+)\s+\d+$", table, re.MULTILINE)}


def start_snakemake(project: Path, *args: str, **kwargs) -> subprocess.Popen:
    """Start the real workflow in its own session (so a test can kill the whole job tree)."""
    return subprocess.Popen(
        [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--cores", "2", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        **kwargs,
    )


def wait_for(condition, timeout=300.0, poll=0.1):
    """Poll `condition` until it is truthy; its value, or TimeoutError."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if result := condition():
            return result
        time.sleep(poll)
    raise TimeoutError("condition not met")


def read_napari_store(store: Path) -> dict:
    """An OME-Zarr store as napari sees it: validated with ome-zarr-models (the image and
    its label image), then read with ome-zarr-py's Reader on parse_url, as napari-ome-zarr
    does. Returns the image's channels by name, the label image, and per layer its scale
    and axis units of the full resolution (z, y, x)."""
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader
    from ome_zarr_models.v04 import Image, ImageLabel

    group = zarr.open_group(str(store), mode="r")
    image = Image.from_zarr(group)
    assert image.labels is not None and image.labels.attributes.labels == ["segmentation"]
    ImageLabel.from_zarr(group["labels/segmentation"])

    nodes = list(Reader(parse_url(str(store)))())
    images = [node for node in nodes if node.data and not node.load(Label)]
    labels = [node for node in nodes if node.load(Label)]
    assert len(images) == 1 and len(labels) == 1, nodes
    (image_node,), (label_node,) = images, labels
    axes = [axis["name"] for axis in image_node.metadata["axes"]]
    assert axes == ["c", "z", "y", "x"], axes
    spatial = {"image": image_node.metadata, "labels": label_node.metadata}
    found = {
        "channels": {
            name: np.asarray(image_node.data[0][index])
            for index, name in enumerate(image_node.metadata["channel_names"])
        },
        "visible": image_node.metadata["visible"],
        "labels": np.asarray(label_node.data[0]),
        "properties": label_node.metadata.get("properties"),
        "levels": {"image": image_node.data, "labels": label_node.data},
    }
    for key, metadata in spatial.items():
        scale = metadata["coordinateTransformations"][0][0]["scale"]
        units = [axis.get("unit") for axis in metadata["axes"] if axis["type"] == "space"]
        found[f"{key}_scale"], found[f"{key}_units"] = scale[-3:], units
    return found


def run_script(script: str, job: dict) -> None:
    """A workflow script of scripts/ with a stand-in `snakemake` object built from `job`
    (wildcards, input, output, params, log), in a child process (scripts log to the rule's
    log and configure threads, which a test process must not)."""
    import json

    runner = (
        "import json, runpy, sys, types\n"
        "job = json.loads(sys.argv[1])\n"
        "class Named(dict):\n"
        "    __getattr__ = dict.get\n"
        "snakemake = types.SimpleNamespace(**{k: Named(v) if isinstance(v, dict) else v "
        "for k, v in job.items()})\n"
        "runpy.run_path(sys.argv[2], init_globals={'snakemake': snakemake})\n"
    )
    subprocess.run(
        [sys.executable, "-c", runner, json.dumps(job), str(REPO / "scripts" / script)],
        check=True,
        cwd=REPO,
    )
