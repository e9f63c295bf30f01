"""The settings a run really gets, read with Snakemake's own argument parser: the workflow
profile (profiles/default, loaded by itself and overriding --profile) must not take the SLURM
profile's latency-wait, retries or executor away from a cluster run."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO
from snakemake.cli import parse_args

SLURM = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
WORKFLOW_PROFILE = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())


def effective(argv: list[str]):
    """What `snakemake ARGV` would run with, profiles applied."""
    return parse_args(argv)[1]


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_readme_slurm_command_keeps_the_slurm_profile(in_repo):
    """`snakemake --profile profiles/slurm` (README): the cluster profile's settings win."""
    args = effective(["--profile", "profiles/slurm"])
    assert args.latency_wait == SLURM["latency-wait"] == 60
    assert args.retries == SLURM["retries"] == 2
    assert args.executor == "slurm"
    assert args.jobs == SLURM["jobs"]
    assert args.keep_going is True
    assert args.rerun_incomplete is True


def test_packaged_slurm_profile_from_another_directory(tmp_path, monkeypatch):
    """`fibseg run --profile slurm` in a project folder: the same settings, found through
    the packaged Snakefile (its profiles/default is still the workflow profile)."""
    monkeypatch.chdir(tmp_path)
    args = effective(
        ["--snakefile", str(REPO / "Snakefile"), "--profile", str(REPO / "profiles/slurm")]
    )
    assert args.latency_wait == 60
    assert args.retries == 2
    assert args.executor == "slurm"


def test_readme_local_command(in_repo):
    """`snakemake --cores all` (README's demo): the local settings of the workflow profile."""
    args = effective(["--cores", "all"])
    assert args.executor in (None, "local")
    assert args.rerun_incomplete is True
    assert args.printshellcmds is True
    assert args.show_failed_logs is True
    assert args.retries == 0


def test_workflow_profile_sets_nothing_the_slurm_profile_sets_otherwise():
    """Every key of the workflow profile is absent from the SLURM profile or has its value,
    so that its precedence over --profile can change nothing there."""
    conflicts = {
        key: (value, SLURM[key])
        for key, value in WORKFLOW_PROFILE.items()
        if key in SLURM and SLURM[key] != value
    }
    assert conflicts == {}
    assert "latency-wait" not in WORKFLOW_PROFILE
    assert "retries" not in WORKFLOW_PROFILE
    assert "executor" not in WORKFLOW_PROFILE
