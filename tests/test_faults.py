"""Fault injection: bad input gets a clear error, and no failure loses finished work."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import (
    REPO,
    SNAKEMAKE,
    TINY_DEMO,
    demo_sheet_rows,
    edit_config,
    imwrite,
    run_snakemake,
    start_snakemake,
    wait_for,
    write_project,
)

pytestmark = pytest.mark.workflow


# --- bad input: each a real snakemake run ----------------------------------------------------


def h5_volume(project, data, path="/raw"):
    with h5py.File(project / "data/vol.h5", "w") as handle:
        handle[path] = data
    sheet = project / "config/datasets.tsv"
    sheet.write_text(sheet.read_text().replace("data/vol.tif", "data/vol.h5:/volume"))


BAD_INPUTS = {
    # configuration, caught when the workflow loads: one case end to end through snakemake -n
    # (the others are unit tests in test_config.py)
    "even n_xy": (
        lambda p: edit_config(p, **{"grid.n_xy": [32]}),
        "file 'config: grid.n_xy': holds even sizes [32]; the voxel to classify must be the "
        "centre of its neighbourhood. Fix: use odd sizes such as 33, 49, 65, 81, 97, 113.",
        "-n",
    ),
    # data, caught by rule check_dataset before any heavy job
    "2-D TIFF": (
        lambda p: imwrite(p / "data/vol.tif", np.zeros((48, 48), np.uint16)),
        "is 2-D with shape (48, 48)",
        "results/EXT/checked.json",
    ),
    "4-D TIFF": (
        lambda p: imwrite(p / "data/vol.tif", np.zeros((4, 2, 48, 48), np.uint16)),
        "is 4-D with shape",
        "results/EXT/checked.json",
    ),
    "HDF5 path without the dataset": (
        lambda p: h5_volume(p, np.zeros((4, 48, 48), np.uint16)),
        "has no HDF5 dataset '/volume' (it holds: raw)",
        "results/EXT/checked.json",
    ),
    "NaN in a float volume": (
        lambda p: imwrite(
            p / "data/vol.tif",
            np.where(np.arange(48) == 7, np.nan, 0.5) * np.ones((4, 48, 48), np.float32),
        ),
        "slice 0 holds NaN or Inf",
        "results/EXT/checked.json",
    ),
    "labels other than 0/1": (
        lambda p: imwrite(p / "data/labels.tif", np.full((5, 12, 12), 255, np.uint8)),
        "found values [255]",
        "results/EXT/checked.json",
    ),
    "label count disagrees": (
        lambda p: imwrite(p / "data/labels.tif", np.ones((4, 12, 12), np.uint8)),
        "holds 4 masks but the regions CSV lists 5",
        "results/EXT/checked.json",
    ),
    "label shape disagrees": (
        lambda p: imwrite(p / "data/labels.tif", np.ones((5, 12, 13), np.uint8)),
        "masks are 12 x 13 but the regions CSV gives sizes [(12, 12)]",
        "results/EXT/checked.json",
    ),
    "region outside the volume": (
        lambda p: (p / "data/regions.csv").write_text(
            "z,y,x,height,width\n0,0,0,12,12\n1,40,0,12,12\n2,0,0,12,12\n3,0,0,12,12\n"
            "1,5,25,12,12\n"
        ),
        "row 3 (z=1, y=40, x=0, 12 x 12) lies outside the volume",
        "results/EXT/checked.json",
    ),
    "regions CSV without a column": (
        lambda p: (p / "data/regions.csv").write_text("z,y,x,height\n0,0,0,12\n"),
        "lacks the column(s) width",
        "results/EXT/checked.json",
    ),
    "truncated HDF5 volume": (
        lambda p: (
            h5_volume(p, np.zeros((4, 48, 48), np.uint16), "/volume"),
            (p / "data/vol.h5").write_bytes((p / "data/vol.h5").read_bytes()[:900]),
        ),
        "cannot be read",
        "results/EXT/checked.json",
    ),
    # later rules: split, sampling, context
    "split without a val region": (
        lambda p: (p / "data/regions.csv").write_text(
            "z,y,x,height,width,split\n0,0,0,12,12,train\n1,10,10,12,12,train\n"
            "2,20,20,12,12,test\n3,30,30,12,12,train\n1,5,25,12,12,test\n"
        ),
        "data set 'EXT': the split leaves no region for val",
        "results/split.csv",
    ),
    "sampling yields no sample of a class": (
        lambda p: edit_config(p, sampling={"fraction": 0.001, "seed": 1}),
        "train split needs 0 pore samples",
        "results/samples/train.csv",
    ),
    "context larger than the volume": (
        lambda p: edit_config(p, **{"grid.n_xy": [101]}),
        "is larger than the volume (4, 48, 48)",
        "results/EXT/regions.h5",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_with_a_message_that_names_the_culprit(external, case):
    spoil, message, target = BAD_INPUTS[case]
    spoil(external)
    process = run_snakemake(external, target, check=False)
    output = process.stdout + process.stderr
    assert process.returncode != 0
    assert message in output, output[-3000:]


# --- interrupted jobs ---------------------------------------------------------------------------

TRAIN_CONFIG = {
    "datasets": "config/datasets.tsv",
    "demo": TINY_DEMO,
    "grid": {"n_xy": [33], "n_z": [1], "seeds": 1},
    "sampling": {"fraction": 0.5, "seed": 1},
    "training": {"epochs": 4, "batch_size": 64},
    "inference": {"engine": "sliding", "slices_per_job": 2},
}
RUN = "results/train/nxy33_nz1/seed0"


def job_pids(process: subprocess.Popen, pattern: str) -> list[int]:
    """Processes matching `pattern` in the session of the snakemake that this test started
    (never anyone else's)."""
    found = subprocess.run(
        ["pgrep", "-s", str(process.pid), "-f", pattern], capture_output=True, text=True
    )
    return [int(pid) for pid in found.stdout.split()]


@pytest.fixture(scope="module")
def sampled_project(tmp_path_factory):
    """The tiny demo up to the training samples, built once for the module."""
    project = write_project(
        tmp_path_factory.mktemp("sampled"), TRAIN_CONFIG, demo_sheet_rows(list(TINY_DEMO))
    )
    run_snakemake(project, "results/samples/train.csv")
    return project


@pytest.fixture
def train_project(sampled_project, tmp_path):
    """A fresh copy of the sampled project per test (mtimes and .snakemake kept, so
    snakemake sees the same finished work)."""
    return shutil.copytree(sampled_project, tmp_path / "project", symlinks=True)


def finished_inputs(project: Path) -> dict[str, float]:
    files = list((project / "results").glob("*/regions.h5")) + [
        project / "results/samples/train.csv"
    ]
    return {str(f): f.stat().st_mtime_ns for f in files}


def assert_resumed_to_completion(project: Path, before: dict[str, float]) -> None:
    run_snakemake(project, "--unlock")  # a killed snakemake leaves its lock, as after a crash
    run_snakemake(project, f"{RUN}/history.csv", "--rerun-incomplete")
    history = pd.read_csv(project / RUN / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]  # each epoch exactly once
    assert "resuming after epoch" in (project / "logs/train/nxy33_nz1_seed0.log").read_text()
    assert finished_inputs(project) == before  # nothing finished was redone or lost


def test_training_killed_with_sigkill_resumes(train_project):
    before = finished_inputs(train_project)
    process = start_snakemake(train_project, f"{RUN}/history.csv")
    wait_for(lambda: any((train_project / RUN / "checkpoint").glob("epoch_0001")))
    os.killpg(process.pid, signal.SIGKILL)  # the whole job tree, as a node failure would
    process.wait()
    assert not (train_project / RUN / "model.keras").exists()
    assert_resumed_to_completion(train_project, before)


def test_training_stopped_with_sigterm_saves_and_resumes(train_project):
    before = finished_inputs(train_project)
    process = start_snakemake(train_project, f"{RUN}/history.csv")
    wait_for(lambda: any((train_project / RUN / "checkpoint").glob("epoch_0000")))
    for pid in job_pids(process, r"\.train\.py"):
        os.kill(pid, signal.SIGTERM)  # what SLURM sends at the time limit
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    log = (train_project / "logs/train/nxy33_nz1_seed0.log").read_text()
    assert "stopped by SIGTERM after epoch" in log
    assert any((train_project / RUN / "checkpoint").glob("epoch_*"))
    assert_resumed_to_completion(train_project, before)


def test_prediction_killed_mid_run_keeps_finished_chunks(train_project):
    run_snakemake(train_project, "results/model/best.keras")
    chunks = train_project / "results/T22/scores"
    logs = train_project / "logs/predict_slices"
    process = start_snakemake(train_project, "results/T22/scores.h5", "--cores", "1")

    def finished_and_another_started() -> list[Path]:
        """With one core, another chunk starts only once snakemake has recorded the finished
        one; the order of the chunks is the scheduler's."""
        finished = sorted(chunks.glob("*.h5"))
        started = {log.stem.removeprefix("T22_") for log in logs.glob("T22_*.log")}
        return finished if started - {chunk.stem for chunk in finished} else []

    kept = wait_for(finished_and_another_started)[0]
    kept_log = logs / f"T22_{kept.stem}.log"
    first = kept_log.stat().st_mtime_ns
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for chunk in chunks.iterdir():  # what is there is complete, never a partial file
        assert chunk.suffix == ".h5" or chunk.name.endswith(".partial")
        if chunk.suffix == ".h5":
            with h5py.File(chunk) as handle:
                assert handle["scores"].shape[0] == 2
    run_snakemake(train_project, "--unlock")
    run_snakemake(train_project, "results/T22/scores.h5", "--rerun-incomplete")
    assert kept_log.stat().st_mtime_ns == first  # the finished chunk was not predicted again
    assert not kept.exists()  # and, stitched, it was deleted (outputs.keep_score_chunks)
    with h5py.File(train_project / "results/T22/scores.h5") as handle:
        assert handle["scores"].shape == (6, 96, 96)


def test_full_disk_loses_no_finished_output(train_project):
    """A file-size limit makes every large write fail, as a full disk would."""
    finished = train_project / "results/T22/regions.h5"
    content = finished.read_bytes()
    target = train_project / "results/T45/preprocessed.h5"
    target.unlink()
    limit = 100_000  # bytes: the logs and metadata fit, the volume (~200 kB gzipped) does not

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    process = subprocess.run(
        [
            *SNAKEMAKE,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--cores",
            "1",
            str(target.relative_to(train_project)),
        ],
        cwd=train_project,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=300,
    )
    assert process.returncode != 0
    assert not target.exists()  # no partial file that a later rule would take as finished
    assert not list(target.parent.glob("*.partial"))
    assert finished.read_bytes() == content
    run_snakemake(train_project, str(target.relative_to(train_project)))  # room again: redone
    assert target.exists()
