"""Shared fixtures: tiny synthetic projects and a real `snakemake` runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def write_project(directory: Path, config: dict, sheet: str | None = None) -> Path:
    """A working directory with config/config.yaml (and a sheet) like a user's."""
    (directory / "config").mkdir(parents=True, exist_ok=True)
    if sheet is not None:
        (directory / "config" / "datasets.tsv").write_text(sheet)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return directory


def run_snakemake(
    directory: Path, *args: str, check: bool = True, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run the real workflow in `directory`; on failure show its output."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--cores", "2", *args],
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


@pytest.fixture
def tiny_demo(tmp_path: Path) -> Path:
    """Two tiny demo data sets (6 slices of 96 x 96) in a fresh working directory."""
    return write_project(
        tmp_path,
        {"datasets": "config/datasets.tsv", "demo": TINY_DEMO},
        demo_sheet_rows(list(TINY_DEMO)),
    )
