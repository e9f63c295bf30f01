"""The `fibseg` command without a workflow run: help, the model bundle (reading, checking, the
voxel-size check, export), `to-annotation`, `check`, and clear errors (exit code 2, one message,
no traceback) for bad input. tests/test_workflow_bundle.py runs the commands on a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import REPO, imwrite
from snakemake.utils import validate

from fibseg.annotation.corrected import chosen_slices, to_annotation
from fibseg.cli import main
from fibseg.inference.bundle import (
    METADATA,
    check_voxel_size,
    describe_model,
    export_bundle,
    read_bundle,
)
from fibseg.inference.pretrained import Pretrained
from fibseg.io.errors import InputError
from fibseg.io.volume import metadata_voxel_size_nm
from fibseg.pipeline.project import snakemake_command
from fibseg.runtime.settings import InferenceSettings

CONFIG_SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
POSTPROCESS = {"sigma": 1.0, "threshold": 0.5, "min_object_voxels": 10}


def fake_run(results: Path, voxel=(50.0, 10.0, 10.0), engine="sliding") -> Path:
    """A results/ folder as a finished run leaves it, with stand-ins for the model files."""
    (results / "model").mkdir(parents=True)
    models = {}
    for name in ("best.keras", "member1.keras"):
        (results / "model" / name).write_bytes(name.encode())
        models[name] = str(results / "model" / name)
    (results / "postprocess.json").write_text(json.dumps(POSTPROCESS))
    description = describe_model(
        models,
        {"n_xy": 17, "n_z": 1, "seed": 0, "run_dir": "results/train/x", "ensemble": []},
        str(results / "postprocess.json"),
        [{"name": "A", "voxel_size_nm": list(voxel)}],
        asdict(InferenceSettings(engine=engine, tile=64)),
        {"method": "joint"},
        [{"file": "best.keras", "n_xy": 17, "n_z": 1, "padding": "same"}],
        {"keras": "3"},
    )
    (results / "model" / METADATA).write_text(json.dumps(description))
    return results


@pytest.fixture
def bundle(tmp_path) -> Path:
    return export_bundle(fake_run(tmp_path / "results"), tmp_path / "bundle").path


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["run"], ["predict"], ["check"], ["export-model"], ["to-annotation"]]
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: fibseg" in capsys.readouterr().out


def test_a_missing_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "model"])
    assert exit_.value.code == 2 and "required: INPUT, OUTPUT" in capsys.readouterr().err


# --- the bundle ----------------------------------------------------------------------------------


def test_export_copies_the_run_into_a_bundle(tmp_path, bundle):
    found = read_bundle(bundle)
    assert sorted(p.name for p in bundle.iterdir()) == [
        "best.keras",
        METADATA,
        "member1.keras",
        "postprocess.json",
    ]
    assert found.models == (str(bundle / "best.keras"), str(bundle / "member1.keras"))
    assert json.loads(Path(found.postprocess).read_text()) == POSTPROCESS
    assert found.training_voxel_sizes == {"A": (50.0, 10.0, 10.0)}
    assert set(found.metadata["versions"]) == {"trained_with", "described_with", "exported_with"}
    # the bundle fixes the engine and score dtype; tiles and batches stay the config's
    settings = found.inference(InferenceSettings(engine="dense", tile=512, slices_per_job=3))
    assert (settings.engine, settings.tile, settings.slices_per_job) == ("sliding", 512, 3)


def test_export_refuses_an_unfinished_or_changed_run(tmp_path):
    results = fake_run(tmp_path / "results")
    (results / "model/best.keras").write_bytes(b"retrained")
    with pytest.raises(InputError, match=r"best.keras.*description is out of date"):
        export_bundle(results, tmp_path / "b1")
    (results / "model" / METADATA).unlink()
    with pytest.raises(InputError) as error:
        export_bundle(results, tmp_path / "b2")
    assert "fibseg run results/model/fibseg-model.json" in str(error.value)
    with pytest.raises(InputError, match="results folder does not exist"):
        export_bundle(tmp_path / "nowhere", tmp_path / "b3")
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


def test_a_broken_bundle_is_named(tmp_path, bundle):
    with pytest.raises(InputError, match=r"bundle folder does not exist.*Fix: point"):
        read_bundle(tmp_path / "missing")
    with pytest.raises(InputError, match=r"holds no fibseg-model.json"):
        read_bundle(tmp_path)
    (bundle / "member1.keras").write_bytes(b"half a fil")
    with pytest.raises(InputError, match=r"member1.keras.*SHA-256 differs"):
        read_bundle(bundle)
    (bundle / "member1.keras").unlink()
    with pytest.raises(InputError, match=r"file 'member1.keras' is missing"):
        read_bundle(bundle)
    (bundle / METADATA).write_text("{")
    with pytest.raises(InputError, match=r"fibseg-model.json.*is not JSON"):
        read_bundle(bundle)


def test_the_voxel_size_must_match_the_training_data(bundle):
    found = read_bundle(bundle)
    check_voxel_size(found, (54.0, 10.5, 9.2), "NEW")  # within 10 % on every axis
    with pytest.raises(InputError) as error:
        check_voxel_size(found, (50.0, 12.0, 12.0), "NEW")
    message = str(error.value)
    assert message.startswith("data set 'NEW', file '") and "50 x 12 x 12 nm" in message
    assert "A: 50 x 10 x 10 nm" in message and "by 20%" in message and "of 10%" in message
    assert "Fix: resample the volume to 50 x 10 x 10 nm" in message
    assert "allow_voxel_size_mismatch" in message and "--voxel-size" in message
    check_voxel_size(found, (50.0, 12.0, 12.0), "NEW", tolerance=0.25)
    check_voxel_size(found, (50.0, 12.0, 12.0), "NEW", allow_mismatch=True)


def test_pretrained_bundle_in_the_config(bundle):
    config = {"pretrained": {"bundle": str(bundle), "voxel_size_tolerance": 0.3}}
    validate(config, CONFIG_SCHEMA)
    pretrained = Pretrained.from_config(config)
    assert pretrained.models == read_bundle(bundle).models
    assert pretrained.postprocess == str(bundle / "postprocess.json")
    pretrained.check_voxel_size((60.0, 12.0, 12.0), "NEW")  # 20 % < 30 %
    config["pretrained"]["voxel_size_tolerance"] = 0.1
    with pytest.raises(InputError, match="voxel_size_tolerance"):
        Pretrained.from_config(config).check_voxel_size((60.0, 12.0, 12.0), "NEW")
    both = {"pretrained": {"bundle": str(bundle), "model": "m.keras"}}
    with pytest.raises(InputError, match=r"pretrained.*both 'bundle' and 'model'"):
        Pretrained.from_config(both)
    # the two-file form carries no voxel size: nothing to check
    Pretrained(("m.keras",), "p.json").check_voxel_size((1.0, 1.0, 1.0), "NEW")


# --- fibseg predict: errors before any model is loaded --------------------------------------------


def test_predict_errors_exit_2_with_one_message(tmp_path, bundle, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    imwrite(tmp_path / "vol.tif", np.zeros((3, 20, 20), np.uint16))  # no voxel size in it
    code, output = run(capsys, "predict", tmp_path / "nowhere", "vol.tif", "out.tif")
    assert code == 2 and "bundle folder does not exist" in output
    code, output = run(capsys, "predict", bundle, "vol.tif", "out.png")
    assert code == 2 and "file 'out.png': the output is not a TIFF" in output
    code, output = run(capsys, "predict", bundle, "missing.tif", "out.tif")
    assert code == 2 and "file 'missing.tif': the volume file does not exist" in output
    code, output = run(capsys, "predict", bundle, "vol.tif", "out.tif")
    assert code == 2 and "no voxel size for axis z, y, x" in output and "--voxel-size" in output
    code, output = run(capsys, "predict", bundle, "vol.tif", "out.tif", "--voxel-size", "5,1,1")
    assert code == 2 and "data set 'vol.tif'" in output and "5 x 1 x 1 nm" in output
    assert "Traceback" not in output and not Path("out.tif").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(bundle), "vol.tif", "out.tif", "--voxel-size", "a,b"])
    assert exit_.value.code == 2 and "--voxel-size" in capsys.readouterr().err


# --- fibseg to-annotation ------------------------------------------------------------------------


def test_slices_to_label():
    painted = np.zeros((5, 2, 2), np.uint8)
    painted[3, 0, 0] = 2
    assert chosen_slices("all", 5, None).all() and not chosen_slices("none", 5, None).any()
    assert np.flatnonzero(chosen_slices("corrected", 5, painted)).tolist() == [3]
    assert np.flatnonzero(chosen_slices("0, 2-3", 5, None)).tolist() == [0, 2, 3]
    with pytest.raises(InputError, match="slices 4-5, but the segmentation has slices 0-4"):
        chosen_slices("4-5", 5, None)
    with pytest.raises(InputError, match="needs the painted corrections"):
        chosen_slices("corrected", 5, None)
    with pytest.raises(InputError, match=r"--slices is 'some'; all, corrected, none"):
        chosen_slices("some", 5, None)


def test_corrections_override_the_segmentation():
    segmentation = np.zeros((3, 4, 4), np.uint8)
    segmentation[:, :2] = 1  # solid on top
    corrected = np.zeros_like(segmentation)
    corrected[1, 0, 0] = 1  # this solid voxel is pore
    corrected[1, 3, 3] = 2  # this pore voxel is solid
    annotation = to_annotation(segmentation, corrected, "all")
    expected = segmentation + 1
    expected[1, 0, 0], expected[1, 3, 3] = 1, 2
    np.testing.assert_array_equal(annotation, expected)
    only = to_annotation(segmentation, corrected, "none")
    assert only.sum() == 3 and only[1, 0, 0] == 1 and only[1, 3, 3] == 2
    reviewed = to_annotation(segmentation, corrected, "corrected")
    np.testing.assert_array_equal(reviewed[[0, 2]], 0)
    np.testing.assert_array_equal(reviewed[1], expected[1])
    np.testing.assert_array_equal(to_annotation(segmentation), segmentation + 1)


def test_bad_corrections_are_named():
    segmentation = np.zeros((2, 4, 4), np.uint8)
    segmentation[:, :2] = 1
    with pytest.raises(InputError, match=r"file 'seg.tif'.*holds 2: it looks like painted"):
        to_annotation(segmentation * 2, segmentation_file="seg.tif")
    with pytest.raises(InputError, match=r"file 'fix.tif'.*shape \(1, 4, 4\)"):
        to_annotation(segmentation, np.zeros((1, 4, 4), np.uint8), corrected_file="fix.tif")
    with pytest.raises(InputError, match=r"values \[3\]"):
        to_annotation(segmentation, np.full((2, 4, 4), 3, np.uint8))
    with pytest.raises(InputError, match="both pore and solid"):
        to_annotation(np.ones((2, 4, 4), np.uint8))


def test_to_annotation_command(tmp_path, capsys):
    segmentation = np.zeros((2, 8, 8), np.uint8)
    segmentation[:, :4] = 1
    tifffile.imwrite(
        tmp_path / "seg.tif",
        segmentation,
        imagej=True,
        resolution=(100.0, 100.0),
        metadata={"unit": "micron", "spacing": 0.05},
    )
    code, output = run(capsys, "to-annotation", tmp_path / "seg.tif", tmp_path / "ann.tif")
    assert code == 0 and "'pore': 64, 'solid': 64" in output
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "ann.tif"), segmentation + 1)
    assert metadata_voxel_size_nm(str(tmp_path / "ann.tif")) == pytest.approx((50, 10, 10))
    code, output = run(capsys, "to-annotation", tmp_path / "seg.tif", tmp_path / "ann.png")
    assert code == 2 and "not a TIFF file name" in output
    code, output = run(
        capsys, "to-annotation", tmp_path / "seg.tif", tmp_path / "a.tif", "--slices", "7"
    )
    assert code == 2 and "slices 0-1" in output and "Traceback" not in output


# --- fibseg check and fibseg run -----------------------------------------------------------------


def test_check_runs_the_workflow_checks(external, capsys, monkeypatch):
    monkeypatch.chdir(external)
    code, output = run(capsys, "check", "config/datasets.tsv")
    assert code == 0 and "1 data set(s) checked" in output and "'regions': 5" in output
    imwrite(external / "data/labels.tif", np.full((5, 12, 12), 7, np.uint8))
    code, output = run(capsys, "check", "config/datasets.tsv")
    assert code == 2 and "data set 'EXT'" in output and "labels.tif" in output
    code, output = run(capsys, "check", "config/missing.tsv")
    assert code == 2 and "file 'config/missing.tsv': the data set sheet does not exist" in output
    (external / "bad.yaml").write_text("grid: {n_xy: [16]}\n")
    code, output = run(capsys, "check", "config/datasets.tsv", "--config", "bad.yaml")
    assert code == 2 and "n_xy" in output and "Traceback" not in output
    (external / "typo.yaml").write_text("sampling: {fractoin: 0.1}\n")
    code, output = run(capsys, "check", "config/datasets.tsv", "--config", "typo.yaml")
    assert code == 2 and "('fractoin' was unexpected) (on instance['sampling'])" in output


def test_check_loads_a_pretrained_model(external, bundle, capsys, monkeypatch):
    """As rule check_model: the bundle's stand-in model files are no Keras models."""
    monkeypatch.chdir(external)
    (external / "reuse.yaml").write_text(f"pretrained: {{bundle: {bundle}}}\n")
    code, output = run(capsys, "check", "config/datasets.tsv", "--config", "reuse.yaml")
    assert code == 2 and f"file '{bundle / 'best.keras'}'" in output
    assert "is not a Keras model" in output and "Traceback" not in output


def test_run_calls_snakemake_on_the_packaged_workflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no config/config.yaml, and no --configfile"):
        snakemake_command(["-n"])
    command = snakemake_command(["-n", "--configfile", "my.yaml", "--profile", "slurm"])
    assert command == [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "-n",
        "--configfile",
        str(REPO / "config/config.yaml"),  # the packaged defaults under the run's overlay
        "my.yaml",
        "--profile",
        str(REPO / "profiles/slurm"),  # a packaged profile by its name
    ]
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text("datasets: sheet.tsv\n")
    (tmp_path / "slurm").mkdir()  # a profile of the working directory's own wins
    command = snakemake_command(["--configfile=my.yaml", "--profile=slurm"])
    assert command[-2:] == ["--configfile=my.yaml", "--profile=slurm"]


@pytest.mark.workflow
def test_run_plans_the_workflow(external):
    """`fibseg run -n` is a dry run of the packaged workflow in the working directory."""
    process = subprocess.run(
        [sys.executable, "-m", "fibseg.cli", "run", "-n", "--quiet", "rules"],
        cwd=external,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert "profiles/default" in output  # the packaged local profile applied by itself
    for rule in ("check_dataset", "train", "describe_model", "postprocess"):
        assert rule in output
    assert not (external / "results").exists()
