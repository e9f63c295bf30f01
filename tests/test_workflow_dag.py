"""Dry runs of the paper configuration: the DAG of 3,600 training and 600 prediction jobs."""

import re
from collections import Counter

import numpy as np
import pytest
import tifffile
import yaml
from helpers import REPO, run_snakemake, write_project

pytestmark = pytest.mark.workflow


@pytest.fixture
def paper_project(tmp_path):
    """The paper setup over placeholder inputs: 200-slice stacks of 2 x 2 pixels (the DAG
    reads only their depth)."""
    data = tmp_path / "data"
    data.mkdir()
    rows = ["name\tvolume\tregions\tlabels"]
    for name in ("HPC22", "HPC30", "HPC45"):
        tifffile.imwrite(
            data / f"{name}.tif", np.zeros((200, 2, 2), np.uint16), photometric="minisblack"
        )
        for suffix in (".csv", "_labels.tif"):
            (data / f"{name}{suffix}").touch()
        rows.append(f"{name}\tdata/{name}.tif\tdata/{name}.csv\tdata/{name}_labels.tif")
    (tmp_path / "sheet.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump({"datasets": "sheet.tsv"}))
    return write_project(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))


def test_an_overlay_naming_only_a_sheet_plans_the_real_data_defaults(paper_project):
    """`--configfile overlay.yaml` (a sheet, nothing else) on config/config.yaml, with the
    demo's config/demo.yaml beside it: no demo data set, 3 seeds of one cell, 16 slices per
    prediction job (13 jobs per 200 slices). Without the overlay, the demo is planned."""
    for name in ("demo.yaml", "datasets.tsv"):
        (paper_project / "config" / name).write_text((REPO / "config" / name).read_text())
    process = run_snakemake(paper_project, "-n", "--quiet", "rules", "--configfile", "overlay.yaml")
    counts = job_counts(process.stdout + process.stderr)
    assert "synthesize_demo" not in counts
    assert counts["train"] == 3 and counts["predict_slices"] == 3 * 13
    process = run_snakemake(paper_project, "-n", "--quiet", "rules")
    demo = job_counts(process.stdout + process.stderr)
    assert demo["synthesize_demo"] == 3 and demo["train"] == 1


def test_every_local_rule_exists_without_the_forest(paper_project):
    """The rules run on the submitting node are named where they are defined, so a run
    without the forest plans no job for it and Snakemake warns of no missing local rule
    (`planned_counts` checks that for every dry run of the paper too)."""
    (paper_project / "forest.yaml").write_text(yaml.safe_dump({"forest": {"enabled": False}}))
    counts = planned_counts(paper_project, "--configfile", "overlay.yaml", "forest.yaml")
    assert "train_forest" not in counts and "train" in counts


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def planned_counts(project, *arguments, snakefile=REPO / "Snakefile") -> dict[str, int]:
    """Jobs per rule of a dry run; Snakemake must not warn of a missing local rule."""
    process = run_snakemake(project, *arguments, "-n", "--quiet", "rules", snakefile=snakefile)
    output = process.stdout + process.stderr
    assert "not present in the Snakefile" not in output  # every local rule exists
    return job_counts(output)


def dry_run(project, *overlays, targets=(), snakefile=REPO / "Snakefile"):
    paper = str(REPO / "config/paper.yaml")
    return planned_counts(
        project, *targets, "--configfile", paper, "overlay.yaml", *overlays, snakefile=snakefile
    )


# A user's Snakefile that deploys fibseg as a module (as snakedeploy writes one): the
# workflow stays where it is, the working directory holds only config/ and the data.
MODULE_SNAKEFILE = f"""\
configfile: "config/config.yaml"


module fibseg:
    snakefile:
        "{REPO / "Snakefile"}"
    config:
        config


use rule * from fibseg
"""


def test_the_paper_plans_the_same_as_a_module_from_another_directory(paper_project):
    """No symlink, no copy of the workflow: scripts, schemas, envs and the report resolve
    from the module's own folder."""
    (paper_project / "Snakefile").write_text(MODULE_SNAKEFILE)
    module = dry_run(paper_project, snakefile=paper_project / "Snakefile")
    assert module == dry_run(paper_project)
    assert module["train"] == 3600 and module["predict_slices"] == 600
    assert module["export_ome_zarr"] == 3


def test_a_module_without_a_sheet_plans_the_demo_from_the_workflows_own_files(tmp_path):
    """Neither config/demo.yaml nor the demo's sheet is in the working directory: the
    module takes the workflow's own, as the repository's `snakemake --cores all` does. So
    does the repository's Snakefile run in a folder without config/."""
    write_project(tmp_path, yaml.safe_load((REPO / "config/config.yaml").read_text()))
    shows_source = 'import os\n\nprint("FIBSEG_SOURCE=" + os.environ["FIBSEG_SOURCE"])\n'
    (tmp_path / "Snakefile").write_text(MODULE_SNAKEFILE + shows_source)
    process = run_snakemake(tmp_path, "-n", "--quiet", "rules", snakefile=tmp_path / "Snakefile")
    counts = job_counts(process.stdout + process.stderr)
    assert counts["synthesize_demo"] == 3 and counts["train"] == 1
    assert counts["export_ome_zarr"] == 3
    # the conda environments install fibseg from the module's folder (envs/fibseg.yaml)
    assert f"FIBSEG_SOURCE={REPO}\n" in process.stdout
    # an overlay on the demo wins over config/demo.yaml (its 2 seeds of 2 cells, not 1 seed)
    overlay = ("--configfile", str(REPO / "config/demo_patches.yaml"))
    process = run_snakemake(
        tmp_path, "-n", "--quiet", "rules", *overlay, snakefile=tmp_path / "Snakefile"
    )
    assert job_counts(process.stdout + process.stderr)["train"] == 4
    bare = tmp_path / "bare"
    bare.mkdir()
    process = run_snakemake(bare, "-n", "--quiet", "rules")
    assert job_counts(process.stdout + process.stderr)["synthesize_demo"] == 3


def test_paper_plans_3600_training_and_600_prediction_jobs(paper_project):
    counts = dry_run(paper_project)
    assert counts["train"] == 3600
    assert counts["select_model"] == 1
    assert counts["predict_slices"] == 600
    assert counts["stitch"] == counts["postprocess"] == counts["predict_regions"] == 3
    # The random-forest baseline runs beside it on the CPU: one forest, and for its
    # full-volume row the 32 slices around each volume's centre (forest.volume_slices)
    assert counts["train_forest"] == 1 and counts["predict_forest_slices"] == 3 * 32
    assert counts["stitch_forest"] == counts["postprocess_forest"] == 3


def test_an_ensemble_adds_members_not_jobs(paper_project):
    (paper_project / "top5.yaml").write_text(yaml.safe_dump({"ensemble": {"top_k": 5}}))
    counts = dry_run(paper_project, "top5.yaml")
    assert counts["train"] == 3600 and counts["predict_slices"] == 600


def test_halving_plans_each_rung_of_the_paper_grid(paper_project):
    """config/halving.yaml: per cell 100 seeds to epoch 4, 25 to epoch 12, 7 to epoch 40."""
    process = run_snakemake(
        paper_project,
        "-n",
        "--configfile",
        str(REPO / "config/paper.yaml"),
        "overlay.yaml",
        str(REPO / "config/halving.yaml"),
    )
    output = process.stdout + process.stderr
    counts = job_counts(output)
    assert counts["train"] == 3600 and counts["select_model"] == 1
    assert counts["promote"] == 36 * 2
    assert counts["train_rung"] == 36 * (25 + 7)
    rungs = re.findall(r"wildcards: nxy=\d+, nz=\d+, rung=(\d+), slot=\d+", output)
    assert Counter(rungs) == {"1": 36 * 25, "2": 36 * 7}
    assert (
        "successive halving, per cell: rung 0: 100 run(s) to epoch 4; rung 1: 25 run(s) to "
        "epoch 12; rung 2: 7 run(s) to epoch 40; 36 cell(s)"
    ) in output
    assert counts["predict_slices"] == 600  # prediction is untouched


def test_three_slices_per_job_gives_201_prediction_jobs(paper_project):
    (paper_project / "three.yaml").write_text(yaml.safe_dump({"inference": {"slices_per_job": 3}}))
    counts = dry_run(paper_project, "three.yaml")
    assert counts["predict_slices"] == 201  # 67 per data set: 66 of 3 slices and 1 of 2


def planned_resources(output: str) -> dict[str, set[str]]:
    """Rule -> the set of resource lines of its planned jobs, from a verbose dry run."""
    found: dict[str, set[str]] = {}
    rule = None
    for line in output.splitlines():
        match = re.match(r"^\s*(?:local)?rule (\w+):", line)
        if match:
            rule = match[1]
            found.setdefault(rule, set())
        elif rule and line.strip().startswith("resources:"):
            found[rule].add(line.strip())
    return found


def test_slurm_profile_gives_gpus_to_train_and_predict_slices_only(paper_project):
    process = run_snakemake(
        paper_project,
        "-n",
        "--profile",
        str(REPO / "profiles/slurm"),
        "--configfile",
        str(REPO / "config/paper.yaml"),
        "overlay.yaml",
    )
    output = process.stdout + process.stderr
    counts = job_counts(output)
    assert counts["train"] == 3600 and counts["predict_slices"] == 600
    resources = planned_resources(output)
    for rule in ("train", "predict_slices"):
        assert resources[rule] and all("gpu=1" in line for line in resources[rule]), rule
    for rule, lines in resources.items():
        if rule not in ("train", "predict_slices"):
            assert not any("gpu=" in line for line in lines), (rule, lines)
    # memory derived from the slice size and the model, not the profile's default
    assert any("mem_mb=" in line for line in resources["predict_slices"])
    # as shipped, no partition or account: the plugin's own defaults apply
    lines = [line for rule_lines in resources.values() for line in rule_lines]
    assert not any("slurm_partition" in line or "slurm_account" in line for line in lines)
    assert all("mem_mb=16000" in line and "runtime=480" in line for line in resources["train"])


@pytest.mark.parametrize("method", ["pseudo", "none"])
def test_pseudo_labels_make_training_wait_for_the_forests_volume_scores(paper_project, method):
    """training.unlabelled.method: pseudo feeds every data set's forest score volume to each
    train job: the job then needs the forest's slices, which it never does otherwise."""
    overlay = {
        "model": {"padding": "valid"},
        "grid": {"n_xy": [81], "n_z": [1], "seeds": 1},
        "training": {"mode": "dense", "unlabelled": {"method": method}},
    }
    (paper_project / "unlabelled.yaml").write_text(yaml.safe_dump(overlay))
    counts = dry_run(
        paper_project, "unlabelled.yaml", targets=["results/train/nxy81_nz1/seed0/model.keras"]
    )
    assert counts["train"] == 1
    if method == "pseudo":
        assert counts["train_forest"] == 1 and counts["stitch_forest"] == 3
        assert counts["predict_forest_slices"] == 600
    else:
        assert not {"train_forest", "predict_forest_slices", "stitch_forest"} & set(counts)
