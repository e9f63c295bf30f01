"""The studies (studies/) and the benchmarks: apart from the product, small, importing only
fibseg's public names, preparing data with the workflow's settings; the z-window and the
where-the-errors-are studies on tiny runs."""

import ast
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from fibseg.runtime.settings import AlignSettings
from studies import unet_errors, z_window
from studies.common import demo_config, demo_workflow

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("benchmarks", "studies")
MAX_LINES = 400


def scripts() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).glob("*.py"))


@pytest.mark.parametrize("path", scripts(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_benchmark_or_study_is_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)}: {lines} lines"


def fibseg_imports(path: Path) -> list[str]:
    """'module.name' of every fibseg name a file imports, and 'importlib' where it loads
    modules by hand."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in ("fibseg", "importlib")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in ("fibseg", "importlib"):
                found += [f"{node.module}.{a.name}" for a in node.names]
    return found


@pytest.mark.parametrize("path", scripts(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_studies_and_benchmarks_import_only_public_fibseg_names(path):
    """No `fibseg.x._private`, no private name, no script loaded through importlib."""
    wrong = [
        name
        for name in fibseg_imports(path)
        if name.startswith("importlib") or any(part.startswith("_") for part in name.split("."))
    ]
    assert not wrong, f"{path.relative_to(REPO)}: {wrong}"


def test_tests_load_no_script_through_importlib():
    """The tests import studies and benchmarks as packages (pytest's pythonpath)."""
    loaders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "tests").glob("*.py"))
        if "spec_from_file_location" in path.read_text() and path.name != "test_studies.py"
    ]
    assert not loaders, loaders


def test_studies_prepare_with_the_demos_settings():
    """The workflow's settings the studies read (studies/common.py): the schema's defaults
    under config/config.yaml and config/demo.yaml, as `snakemake --cores all` merges them."""
    config = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    schema = config["properties"]
    workflow = demo_workflow()
    assert workflow.voxel_nm == tuple(float(v) for v in schema["voxel_size_nm"]["default"])
    assert workflow.align == AlignSettings()
    forest = schema["forest"]["properties"]
    assert (workflow.forest.trees, workflow.forest.n_z, workflow.forest.seed) == (
        forest["trees"]["default"],
        forest["n_z"]["default"],
        forest["seed"]["default"],
    )
    post = schema["postprocess"]["properties"]
    assert workflow.sigmas == post["sigma_grid"]["default"]
    assert workflow.thresholds == post["threshold_grid"]["default"]
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    assert workflow.min_object_voxels == demo["postprocess"]["min_object_voxels"]
    assert workflow.sampling_fraction == demo["sampling"]["fraction"]
    assert list(demo_config()["demo"]) == list(demo["demo"])
    margins = workflow.margins(81, 3)
    assert (margins["xy"], margins["z"]) == (40, 1)


def test_z_window_study_shifts_the_volume_and_keeps_the_labels_frame(tmp_path):
    """studies/z_window.py: slice z of the prepared volume is the demo's slice z + shift
    (mirrored at the ends), so the symmetric window of 3 around z sees z-2..z at shift -1;
    the sheet keeps the demo's labels and truth, and the overlay trains only the U-Net."""
    names = list(yaml.safe_load((z_window.REPO / "config/demo.yaml").read_text())["demo"])
    depth = 6
    for index, name in enumerate(names):
        (tmp_path / "run/results" / name).mkdir(parents=True)
        volume = np.arange(depth, dtype=np.uint16)[:, None, None] + 100 * index
        with h5py.File(tmp_path / "run/results" / name / "aligned.h5", "w") as handle:
            handle["volume"] = np.broadcast_to(volume, (depth, 4, 5)).copy()
    z_window.prepare(tmp_path / "run", tmp_path / "front", shift=-1, n_z=3)

    for index, name in enumerate(names):
        shifted = tifffile.imread(tmp_path / "front/data" / f"{name}.tif")
        assert shifted.shape == (depth, 4, 5)
        assert list(shifted[:, 0, 0] - 100 * index) == [1, 0, 1, 2, 3, 4]
    sheet = pd.read_csv(tmp_path / "front/datasets.tsv", sep="\t")
    assert list(sheet["name"]) == names
    assert set(sheet["aligned"]) == {True}
    made = (tmp_path / "run/results/demo" / names[0]).resolve()
    assert sheet.loc[0, "truth"] == str(made / "truth.tif")
    assert sheet.loc[0, "labels"] == str(made / "labels.tif")
    overlay = yaml.safe_load((tmp_path / "front/window.yaml").read_text())
    assert overlay["grid"]["n_z"] == [3]
    assert overlay["forest"] == {"enabled": False}
    assert overlay["datasets"] == "datasets.tsv"


def test_errors_by_boundary_distance_hand_computed():
    # truth (one slice):   segmentation:
    # 0 0 1 1 1 1          0 1 1 1 1 1     one pore voxel next to the boundary read as solid
    # 0 0 1 1 1 1          0 0 1 1 1 0     one solid voxel 4 px from the boundary read as pore
    truth = np.array([[[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]])
    segmentation = np.array([[[0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0]]])
    # distances to the other class: 2 1 | 1 2 3 4 in both rows
    np.testing.assert_allclose(
        unet_errors.boundary_distance(truth)[0], [[2, 1, 1, 2, 3, 4], [2, 1, 1, 2, 3, 4]]
    )
    near, middle, far = unet_errors.errors_by_boundary_distance(truth, segmentation, (0, 1.5, 3))
    assert (near["from_px"], near["to_px"], far["to_px"]) == (0, 1.5, np.inf)
    # near: 4 of 12 voxels, 1 wrong; middle (1.5, 3]: 6 voxels, none wrong; far: 2, 1 wrong
    assert near["voxel_share"] == pytest.approx(4 / 12) and near["error_rate"] == 0.25
    assert middle["voxel_share"] == pytest.approx(6 / 12) and middle["error_rate"] == 0
    assert far["voxel_share"] == pytest.approx(2 / 12) and far["error_rate"] == 0.5
    assert near["error_share"] == far["error_share"] == 0.5
    assert near["pore_as_solid_share"] == 0.5 and far["pore_as_solid_share"] == 0


def test_unet_errors_flip_mean_is_flip_equivariant_and_keeps_the_plain_view():
    """studies/unet_errors.py: the mean over the four flips of a flipped volume is the
    flipped mean (so every view was flipped back), and its first view is the engine's own
    scores of each slice."""
    from fibseg.inference.unet_engine import UnetEngine
    from fibseg.networks.unet import build_unet

    engine = UnetEngine(build_unet(3, seed=3), tile=32)
    volume = np.random.default_rng(0).random((4, 40, 48)).astype(np.float32)
    plain, mean = unet_errors.flipped_scores(engine, volume)
    for axis in (1, 2):
        _, mean_flipped = unet_errors.flipped_scores(engine, np.flip(volume, axis).copy())
        np.testing.assert_allclose(mean_flipped, np.flip(mean, axis), atol=1e-5)
    np.testing.assert_array_equal(plain[0], engine.scores(volume[[1, 0, 1]]))
    assert np.abs(mean - plain).max() > 1e-4  # the flips see the slice differently


def test_unet_errors_report_on_a_finished_run(tmp_path, capsys):
    """The report of a finished run: each method's mIoU, porosity error and its error bands,
    against the demo's truth, as computed by hand."""
    results = tmp_path / "results"
    truth = np.zeros((3, 8, 8), np.uint8)
    truth[:, :, 4:] = 1  # solid on the right half
    segmentation = truth.copy()
    segmentation[:, 0, 3] = 1  # per slice one pore voxel next to the wall read as solid
    (results / "demo/A").mkdir(parents=True)
    (results / "A").mkdir()
    tifffile.imwrite(results / "demo/A/truth.tif", truth, photometric="minisblack")
    with h5py.File(results / "A/segmentation.h5", "w") as handle:
        handle["segmentation"] = segmentation
    with h5py.File(results / "A/preprocessed.h5", "w") as handle:
        noise = np.random.default_rng(1).uniform(0, 0.1, truth.shape)
        handle["volume"] = (truth * 0.5 + 0.2 + noise).astype(np.float32)  # Otsu splits it
    (results / "postprocess.json").write_text(
        json.dumps({"sigma": 0.0, "threshold": 0.5, "min_object_voxels": 1})
    )
    unet_errors.main([str(tmp_path)])
    report = capsys.readouterr().out
    # pore IoU 93/96, solid IoU 96/99; porosity 93/192 against 96/192
    cnn = next(line for line in report.splitlines() if line.strip().startswith("cnn"))
    assert f"mIoU {(93 / 96 + 96 / 99) / 2:.3f}" in cnn and "porosity -1.6 points" in cnn
    # the band next to the wall: columns 3 and 4, 48 of 192 voxels, 3 of them wrong
    assert "(0,1.5] 25% of voxels: 6.2% wrong, 100% of errors (100 pore as solid)" in report
    otsu = next(line for line in report.splitlines() if line.strip().startswith("otsu"))
    assert "mIoU 1.000, porosity +0.0 points" in otsu
