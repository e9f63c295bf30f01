"""Fault injection: bad input gets a clear error, and no failure loses finished work."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import REPO, SNAKEMAKE, TINY_DEMO, demo_sheet_rows, run_snakemake, write_project

pytestmark = pytest.mark.workflow


def imwrite(path, array):
    tifffile.imwrite(path, array, photometric="minisblack")


# --- bad input: at least 20 cases, each a real snakemake run ------------------------------------


@pytest.fixture
def external(tmp_path):
    """A valid external data set 'EXT' (4 slices of 48 x 48) and a small grid."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
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
    sheet = "name\tvolume\tregions\tlabels\nEXT\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif\n"
    config = {
        "datasets": "config/datasets.tsv",
        "grid": {"n_xy": [17], "n_z": [1], "seeds": 1},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 1},
    }
    return write_project(tmp_path, config, sheet)


def edit_config(project: Path, **changes) -> None:
    path = project / "config/config.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            config.setdefault(section, {})[name] = value
        else:
            config[section] = value
    path.write_text(yaml.safe_dump(config))


def h5_volume(project, data, path="/raw"):
    with h5py.File(project / "data/vol.h5", "w") as handle:
        handle[path] = data
    sheet = project / "config/datasets.tsv"
    sheet.write_text(sheet.read_text().replace("data/vol.tif", "data/vol.h5:/volume"))


BAD_INPUTS = {
    # configuration, caught when the workflow loads
    "misspelled key": (
        lambda p: edit_config(p, **{"sampling.fractoin": 0.1}),
        "'fractoin' was unexpected",
        "-n",
    ),
    "even n_xy": (
        lambda p: edit_config(p, **{"grid.n_xy": [32]}),
        "grid.n_xy': holds even sizes [32]",
        "-n",
    ),
    "n_z below 1": (
        lambda p: edit_config(p, **{"grid.n_z": [0]}),
        "0 is less than the minimum of 1",
        "-n",
    ),
    "even n_z": (lambda p: edit_config(p, **{"grid.n_z": [2]}), "grid.n_z': holds even", "-n"),
    "valid with small n_xy": (
        lambda p: edit_config(p, **{"model.padding": "valid"}),
        "holds [17], too small for model.padding 'valid'",
        "-n",
    ),
    "fractions do not sum to 1": (
        lambda p: edit_config(p, split={"train": 0.7, "val": 0.2, "test": 0.2, "seed": 1}),
        "train + val + test = 1.1, not 1",
        "-n",
    ),
    "threshold outside (0, 1)": (
        lambda p: edit_config(p, **{"postprocess.threshold_grid": [1.2]}),
        "1.2 is greater than or equal to the maximum of 1",
        "-n",
    ),
    "dense on a same model": (
        lambda p: edit_config(p, **{"inference.engine": "dense"}),
        "exact only for 'valid' models",
        "-n",
    ),
    "duplicate data set names": (
        lambda p: (p / "config/datasets.tsv").write_text(
            (p / "config/datasets.tsv").read_text()
            + "EXT\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif\n"
        ),
        "more than once: EXT",
        "-n",
    ),
    "missing volume": (
        lambda p: (p / "data/vol.tif").unlink(),
        "data set 'EXT', file 'data/vol.tif': the 'volume' file does not exist",
        "-n",
    ),
    "sheet does not exist": (
        lambda p: edit_config(p, datasets="config/nothere.tsv"),
        "config/nothere.tsv': the data set sheet does not exist",
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


def test_there_are_at_least_20_bad_input_cases():
    assert len(BAD_INPUTS) >= 20


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


def start_snakemake(project: Path, *args: str, **kwargs) -> subprocess.Popen:
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
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(poll)
    raise TimeoutError("condition not met")


def job_pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.fixture
def train_project(tmp_path):
    project = write_project(tmp_path, TRAIN_CONFIG, demo_sheet_rows(list(TINY_DEMO)))
    run_snakemake(project, "results/samples/train.csv")
    return project


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
    for pid in job_pids(r"\.train\.py"):
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
    process = start_snakemake(train_project, "results/T22/scores.h5", "--cores", "1")
    # chunk 0001 has started, so snakemake has recorded chunk 0000 as finished
    wait_for(lambda: (train_project / "logs/predict_slices/T22_0001.log").exists())
    first = (chunks / "0000.h5").stat().st_mtime_ns
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for chunk in chunks.iterdir():  # what is there is complete, never a partial file
        assert chunk.suffix == ".h5" or chunk.name.endswith(".partial")
        if chunk.suffix == ".h5":
            with h5py.File(chunk) as handle:
                assert handle["scores"].shape[0] == 2
    run_snakemake(train_project, "--unlock")
    run_snakemake(train_project, "results/T22/scores.h5", "--rerun-incomplete")
    assert (chunks / "0000.h5").stat().st_mtime_ns == first  # the finished chunk was kept
    with h5py.File(train_project / "results/T22/scores.h5") as handle:
        assert handle["scores"].shape == (6, 96, 96)


def test_full_disk_loses_no_finished_output(train_project):
    """A file-size limit makes every large write fail, as a full disk would."""
    finished = train_project / "results/T22/regions.h5"
    content = finished.read_bytes()
    target = train_project / "results/T45/preprocessed.h5"
    target.unlink()
    limit = 200_000  # bytes: the logs and metadata fit, the volume does not

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
