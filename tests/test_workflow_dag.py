"""Dry runs of the paper configuration: the DAG of 3,600 training and 600 prediction jobs."""

import re

import pytest
import yaml
from conftest import REPO, run_snakemake, write_project

pytestmark = pytest.mark.workflow


@pytest.fixture
def paper_project(tmp_path):
    """The paper setup over placeholder inputs (the dry run reads no data)."""
    data = tmp_path / "data"
    data.mkdir()
    rows = ["name\tvolume\tregions\tlabels"]
    for name in ("HPC22", "HPC30", "HPC45"):
        for suffix in (".tif", ".csv", "_labels.tif"):
            (data / f"{name}{suffix}").touch()
        rows.append(f"{name}\tdata/{name}.tif\tdata/{name}.csv\tdata/{name}_labels.tif")
    (tmp_path / "sheet.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump({"datasets": "sheet.tsv"}))
    return write_project(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def dry_run(project, *overlays):
    process = run_snakemake(
        project,
        "-n",
        "--quiet",
        "rules",
        "--configfile",
        str(REPO / "config/paper.yaml"),
        "overlay.yaml",
        *overlays,
    )
    return job_counts(process.stdout + process.stderr)


def test_paper_plans_3600_training_jobs(paper_project):
    counts = dry_run(paper_project)
    assert counts["train"] == 3600
    assert counts["select_model"] == 1
