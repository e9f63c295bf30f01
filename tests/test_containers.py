"""The Apptainer images (containers/*.def) and the container directive. No image is built
here (that needs the network); what can be checked without one is: each definition installs
the environment of envs/ it names (the same file, so the same pinned versions) with fibseg
in it, the environments pin every package and agree with each other, and with
`--sdm apptainer` every job runs in the image the config's `container` names (a stand-in
`apptainer` that runs the job on the host records how it was called)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml
from helpers import REPO, TINY_DEMO, demo_sheet_rows, run_snakemake, write_project

IMAGES = {"cpu": "envs/fibseg.yaml", "gpu": "envs/fibseg-gpu.yaml"}
FIBSEG_LINE = "-e ${FIBSEG_SOURCE}"


def sections(definition: str) -> dict[str, list[str]]:
    """An Apptainer definition file's header (key: value) and sections, as stripped lines
    without comments."""
    found: dict[str, list[str]] = {"header": []}
    current = "header"
    for line in definition.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("%"):
            current = line[1:].split()[0]
            found[current] = []
        else:
            found[current].append(line)
    return found


def environment(path: str) -> tuple[dict[str, str], list[str]]:
    """An environment file's conda packages (name -> pin) and its pip lines."""
    dependencies = yaml.safe_load((REPO / path).read_text())["dependencies"]
    conda = dict(
        entry.split("=", 1) if "=" in entry else (entry, "")
        for entry in dependencies
        if isinstance(entry, str)
    )
    pip = next(entry["pip"] for entry in dependencies if isinstance(entry, dict))
    return conda, pip


@pytest.mark.parametrize("kind", IMAGES)
def test_each_image_installs_its_environment_with_fibseg(kind):
    parts = sections((REPO / f"containers/fibseg-{kind}.def").read_text())
    header = dict(line.split(":", 1) for line in parts["header"])
    assert header["Bootstrap"].strip() == "docker"
    assert re.fullmatch(r"\S+:\d[\w.-]*", header["From"].strip()), "a pinned base image"
    copies = dict(line.split() for line in parts["files"])
    for source in copies:
        assert (REPO / source).exists(), source
    # the environment of envs/, installed from the file itself: the same pinned versions
    env_file = copies[IMAGES[kind]]
    post = " ".join(parts["post"])
    create = re.search(r"conda env create .*--prefix (\S+) --file (\S+)", post)
    assert create and create[2] == env_file
    # its last pip line installs fibseg from the copy of the package beside it
    source = re.search(r"export FIBSEG_SOURCE=(\S+)", post)[1]
    for name in ("fibseg", "pyproject.toml", "README.md"):
        assert copies[name] == f"{source}/{name}"
    assert environment(IMAGES[kind])[1][-1] == FIBSEG_LINE
    assert parts["environment"] == [f"export PATH={create[1]}/bin:$PATH"]


def test_the_environments_pin_every_package_and_agree():
    (cpu_conda, cpu_pip), (gpu_conda, gpu_pip) = (environment(path) for path in IMAGES.values())
    assert cpu_conda == gpu_conda
    for conda in (cpu_conda, gpu_conda):
        assert all(pin for name, pin in conda.items() if name != "pip"), conda
    pins = [dict(line.split("==") for line in pip[:-1]) for pip in (cpu_pip, gpu_pip)]
    for pip in pins:
        assert all(version for version in pip.values())
    (cpu, gpu) = pins
    shared = set(cpu) & set(gpu)
    assert {name: cpu[name] for name in shared} == {name: gpu[name] for name in shared}
    assert cpu["tensorflow-cpu"] == gpu["tensorflow[and-cuda]"]
    assert shared == set(cpu) - {"tensorflow-cpu"} == set(gpu) - {"tensorflow[and-cuda]"}


def test_the_fibseg_line_installs_the_package_from_the_workflows_folder(tmp_path):
    """pip expands ${FIBSEG_SOURCE} (set by the Snakefile) in the requirements that conda
    hands it; from the repository it installs fibseg, editable."""
    pytest.importorskip("setuptools")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(FIBSEG_LINE + "\n")
    process = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps"]
        + ["--no-build-isolation", "--no-index", "-r", str(requirements)],
        capture_output=True,
        text=True,
        env={**os.environ, "FIBSEG_SOURCE": str(REPO)},
        cwd=tmp_path,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert "Would install fibseg-" in process.stdout


FAKE_APPTAINER = """\
#!{python}
# A stand-in for apptainer: answers the version check, records each call and runs the
# job's command on the host.
import json, os, subprocess, sys

args = sys.argv[1:]
if args == ["--version"]:
    print("apptainer version 1.3.4")
    sys.exit(0)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"args": args, "FIBSEG_SOURCE": os.environ.get("FIBSEG_SOURCE")}}))
    log.write("\\n")
assert args[0] == "exec" and args[-2] == "-c", args
path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
sys.exit(subprocess.call([args[-3], "-c", args[-1]], env={{**os.environ, "PATH": path}}))
"""


@pytest.mark.workflow
def test_with_sdm_apptainer_jobs_run_in_the_configured_image(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "apptainer.log"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text(FAKE_APPTAINER.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    project = write_project(
        tmp_path / "project",
        {"datasets": "config/datasets.tsv", "demo": TINY_DEMO},
        demo_sheet_rows(list(TINY_DEMO)),
    )
    path = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    apptainer = ("--sdm", "apptainer", "--apptainer-args=--nv")

    # the whole plan builds with the container directive (the default image, fibseg.sif)
    plan = run_snakemake(project, "-n", *apptainer, env=path)
    assert "export_ome_zarr" in plan.stdout + plan.stderr

    run_snakemake(
        project,
        "results/demo/T22/volume.tif",
        *apptainer,
        "--config",
        "container=images/test.sif",
        env=path,
    )
    assert (project / "results/demo/T22/volume.tif").exists()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 1, calls  # synthesize_demo, in the image
    args = calls[0]["args"]
    assert args[-4] == "images/test.sif" and "--nv" in args
    assert "synthesize_demo" in shlex.join(args)
    assert calls[0]["FIBSEG_SOURCE"] == str(REPO)
