"""The workflow through a live SLURM (started by tests/slurm/start.sh; .ci/run does that).

Deselect locally with `-m "not slurm"`. Where no SLURM answers the test is skipped, unless
FIBSEG_REQUIRE_SLURM=1 (set by .ci/run) makes that a failure.
"""

import os
import shutil
import subprocess
import time

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import REPO, TINY_DEMO, demo_sheet_rows, run_snakemake, write_project

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

CONFIG = {
    "datasets": "config/datasets.tsv",
    "demo": {"T22": TINY_DEMO["T22"]},
    "grid": {"n_xy": [17], "n_z": [1], "seeds": 1},
    "sampling": {"fraction": 0.1, "seed": 1},
    "training": {"epochs": 1, "batch_size": 64},
    "inference": {"engine": "sliding", "slices_per_job": 3},
    "postprocess": {"sigma_grid": [0.0, 1.0], "threshold_grid": [0.4, 0.5]},
    # The forest, the structure analysis and the OME-Zarr export have their own workflow
    # tests; here each rule costs a SLURM round trip (about 20 s on the one-node cluster).
    "forest": {"enabled": False},
    "structure": {"enabled": False},
    "outputs": {"ome_zarr": False},
}
# The default profile as shipped, with no partition or account: the plugin takes the
# cluster's default partition and guesses the account. The test node has no GPU: gpu=0
# replaces the profile's GPU request (the dry-run test checks that request).
OVERRIDES = [
    "--set-resources",
    "train:gpu=0",
    "predict_slices:gpu=0",
    "--slurm-init-seconds-before-status-checks",
    "5",
    "--jobs",
    "4",
]


def slurm_answers() -> bool:
    if not shutil.which("sbatch"):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return ping.returncode == 0 and "UP" in ping.stdout


@pytest.fixture(scope="module")
def slurm():
    if not slurm_answers():
        if os.environ.get("FIBSEG_REQUIRE_SLURM") == "1":
            pytest.fail("SLURM does not answer; start it with tests/slurm/start.sh")
        pytest.skip("no SLURM here (start one with tests/slurm/start.sh, as root)")


def sacct_jobs() -> set[str]:
    """'jobid|comment|state' of recent jobs; the plugin puts the rule in the comment."""
    listing = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-S", "now-2hours", "-o", "JobID,Comment,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line for line in listing.splitlines() if line}


def test_workflow_through_slurm_matches_a_local_run(slurm, tmp_path):
    local = write_project(tmp_path / "local", CONFIG, demo_sheet_rows(["T22"]))
    cluster = write_project(tmp_path / "cluster", CONFIG, demo_sheet_rows(["T22"]))
    run_snakemake(local)
    before = sacct_jobs()
    run_snakemake(cluster, "--profile", str(REPO / "profiles/slurm"), *OVERRIDES, timeout=1500)
    # Every non-local rule ran as a SLURM job, as SLURM's own accounting shows (slurmdbd
    # records the jobs' comments, which name the rule, a little after they end).
    expected = {
        "rule_align",
        "rule_correct_gradient",
        "rule_extract_regions",
        "rule_train",
        "rule_predict_regions",
        "rule_predict_slices",
        "rule_stitch",
        "rule_postprocess",
    }
    for _ in range(60):
        new_jobs = sacct_jobs() - before
        rules = {
            line.split("|")[1].split("_wildcards")[0]
            for line in new_jobs
            if line.endswith("|COMPLETED")
        }
        if expected <= rules:
            break
        time.sleep(1)
    assert expected <= rules, new_jobs
    assert not any(line.endswith("|FAILED") for line in new_jobs), new_jobs
    # Identical results: deterministic rules and seeded, deterministic training.
    for path in (
        "results/split.csv",
        "results/samples/train.csv",
        "results/train/nxy17_nz1/seed0/history.csv",
        "results/tables/table3.csv",
    ):
        a = pd.read_csv(local / path).drop(columns=["seconds"], errors="ignore")
        b = pd.read_csv(cluster / path).drop(columns=["seconds"], errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    for path, key in (
        ("results/T22/preprocessed.h5", "volume"),
        ("results/T22/regions.h5", "crops"),
        ("results/T22/scores.h5", "scores"),
        ("results/T22/segmentation.h5", "segmentation"),
    ):
        with h5py.File(local / path) as a, h5py.File(cluster / path) as b:
            np.testing.assert_array_equal(a[key][:], b[key][:])
