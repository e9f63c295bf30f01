"""Voxel size from the instrument: the FEI/Thermo Fisher (Helios) and Zeiss SEM tags that a
FIB-SEM writes into its TIFFs (y, x; z stays from the sheet or the config), the source of each
axis, and the WARNING when an axis comes from the config alone (fibseg check, rule
check_dataset)."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import run_script

from fibseg.io.volume import (
    describe_voxel_size,
    metadata_voxel_size,
    metadata_voxel_size_nm,
    report_voxel_size,
    voxel_size_nm,
    voxel_size_with_source,
)
from fibseg.pipeline.project import check_project, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_VOXEL = (40.0, 7.0, 7.0)
DATA = np.random.default_rng(5).integers(0, 255, (6, 10, 12)).astype(np.uint8)
# what a Helios writes into tag 34682 (FEI_HELIOS), abridged: INI sections, lengths in metres
FEI_TEXT = (
    "[User]\r\nDate=03/14/2024\r\nTime=10:12:01 AM\r\n"
    "[System]\r\nSystemType=Helios G4 PFIB UXe\r\n"
    "[Scan]\r\nInternalScan=true\r\nDwelltime=3e-006\r\n"
    "PixelWidth=4.8828e-009\r\nPixelHeight=6.1035e-009\r\nHorFieldsize=5e-006\r\n"
    "[EBeam]\r\nHV=2000\r\n"
)
# what a Zeiss Crossbeam (SmartSEM, Atlas) writes into tag 34118 (CZ_SEM), abridged: a key
# line in capitals, then "Name = value unit"; µ as the Latin-1 byte 0xB5
ZEISS_TEXT = (
    "0\r\n0\r\n"
    "AP_PIXEL_SIZE\r\nPixel Size = 5.0 nm\r\n"
    "AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 0.003516 \xb5m\r\n"
    "DP_TILT_CORRECTION\r\nTilt Corrn. = Off\r\n"
    "AP_WD\r\nWD = 5.1 mm\r\n"
)


def fei_tag(text=FEI_TEXT):
    return [(34682, "s", 0, text, True)]


def zeiss_tag(text=ZEISS_TEXT):
    return [(34118, "B", 0, text.encode("latin-1"), True)]


def write(path, data=DATA, **kwargs):
    tifffile.imwrite(path, data, photometric="minisblack", **kwargs)
    return str(path)


def test_tifffile_parses_the_test_files_back(tmp_path):
    """The test files are what tifffile takes for an instrument's own."""
    with tifffile.TiffFile(write(tmp_path / "fei.tif", extratags=fei_tag())) as tif:
        assert tif.is_fei and tif.fei_metadata["Scan"]["PixelWidth"] == pytest.approx(4.8828e-9)
    with tifffile.TiffFile(write(tmp_path / "zeiss.tif", extratags=zeiss_tag())) as tif:
        assert tif.is_sem
        assert tif.sem_metadata["ap_image_pixel_size"] == ("Image Pixel Size", 0.003516, "µm")


def test_fei_tiff_gives_its_pixel_size(tmp_path):
    spec = write(tmp_path / "fei.tif", extratags=fei_tag())
    found = metadata_voxel_size(spec)
    assert found.kind == "FEI metadata" and found.voxel[0] is None
    assert found.voxel[1:] == pytest.approx((6.1035, 4.8828))
    voxel, sources = voxel_size_with_source(spec, CONFIG_VOXEL)  # no sheet entry
    assert voxel == pytest.approx((40.0, 6.1035, 4.8828))
    assert sources == ("config", "file (FEI metadata)", "file (FEI metadata)")
    assert voxel_size_nm(spec, CONFIG_VOXEL) == pytest.approx(voxel)  # the same values


def test_fei_without_scan_section_reads_the_beam_scan(tmp_path):
    text = "[EScan]\r\nPixelWidth=2.5e-009\r\n"  # only the width: square pixels
    spec = write(tmp_path / "fei.tif", extratags=fei_tag(text))
    assert metadata_voxel_size_nm(spec) == (None, pytest.approx(2.5), pytest.approx(2.5))


def test_zeiss_tiff_gives_its_pixel_size(tmp_path):
    spec = write(tmp_path / "zeiss.tif", extratags=zeiss_tag())
    found = metadata_voxel_size(spec)
    assert found.kind == "Zeiss SEM metadata"
    assert found.voxel == (None, pytest.approx(3.516), pytest.approx(3.516))  # in µm: 3.516 nm
    only_pixel_size = ZEISS_TEXT.replace("AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size", "X\r\nX")
    spec = write(tmp_path / "zeiss5.tif", extratags=zeiss_tag(only_pixel_size))
    assert metadata_voxel_size_nm(spec) == (None, pytest.approx(5.0), pytest.approx(5.0))


def test_a_folder_of_fei_slices_reads_the_first(tmp_path):
    """Slice and View writes one TIFF per slice, each with its tags."""
    folder = tmp_path / "run1"
    folder.mkdir()
    for z, image in enumerate(DATA):
        write(folder / f"slice_{z:04d}.tif", image, extratags=fei_tag())
    voxel, sources = voxel_size_with_source(str(folder), CONFIG_VOXEL, None, "RUN1")
    assert voxel == pytest.approx((40.0, 6.1035, 4.8828))
    assert sources == ("config", "file (FEI metadata)", "file (FEI metadata)")


def test_imagej_calibration_comes_before_the_instrument_tags(tmp_path):
    """A stack that Fiji calibrated: its ImageJ calibration is the one read, all three axes."""
    spec = write(
        tmp_path / "fiji.tif",
        imagej=True,
        resolution=(1 / 0.005, 1 / 0.005),
        metadata={"unit": "micron", "spacing": 0.02, "axes": "ZYX"},
        extratags=fei_tag(),
    )
    voxel, sources = voxel_size_with_source(spec, CONFIG_VOXEL)
    assert voxel == pytest.approx((20.0, 5.0, 5.0)) and sources == ("file (ImageJ)",) * 3


def test_sources_sheet_file_and_config(tmp_path):
    fei = write(tmp_path / "fei.tif", extratags=fei_tag())
    bare = write(tmp_path / "bare.tif")
    assert voxel_size_with_source(fei, CONFIG_VOXEL, "30,5,5") == ((30, 5, 5), ("sheet",) * 3)
    assert voxel_size_with_source(bare, CONFIG_VOXEL) == (CONFIG_VOXEL, ("config",) * 3)
    assert voxel_size_with_source(None, CONFIG_VOXEL) == (CONFIG_VOXEL, ("config",) * 3)
    text = describe_voxel_size(*voxel_size_with_source(fei, (50.0, 10.0, 10.0)))
    assert (
        text == "voxel size 50 x 6.1035 x 4.8828 nm (z from config, y/x from file (FEI metadata))"
    )
    assert describe_voxel_size((30, 5, 5), ("sheet",) * 3) == (
        "voxel size 30 x 5 x 5 nm (z/y/x from sheet)"
    )


def test_a_size_from_the_config_alone_is_a_warning(tmp_path, caplog):
    log = logging.getLogger("test_instrument_metadata")
    fei = write(tmp_path / "fei.tif", extratags=fei_tag())
    with caplog.at_level(logging.INFO, logger=log.name):
        report_voxel_size(log, "FILM1", *voxel_size_with_source(fei, (50.0, 10.0, 10.0)))
    info, warning = caplog.records
    assert info.levelno == logging.INFO and "y/x from file (FEI metadata)" in info.getMessage()
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert "data set 'FILM1'" in message and "voxel size of z was not found in the data" in message
    assert "sheet's voxel_size_nm column" in message and "e.g. 50,6.1035,4.8828" in message
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=log.name):
        report_voxel_size(log, "A", *voxel_size_with_source(fei, CONFIG_VOXEL, "30,5,5"))
        report_voxel_size(log, "DEMO", CONFIG_VOXEL, ("config",) * 3, searched=False)
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]


def test_fibseg_check_logs_the_voxel_size_and_its_source(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "fei.tif", extratags=fei_tag())
    write(tmp_path / "given.tif", extratags=fei_tag())
    painted = np.zeros(DATA.shape, np.uint8)
    painted[2, 1:4, 1:4], painted[3, 5:8, 5:8] = 1, 2
    write(tmp_path / "painted.tif", painted)
    (tmp_path / "datasets.tsv").write_text(
        "name\tvolume\tannotation\tvoxel_size_nm\n"
        "FEI\tfei.tif\t\t\nGIVEN\tgiven.tif\tpainted.tif\t30,5,5\n"
    )
    config = load_config(extra={"datasets": "datasets.tsv"})
    log = logging.getLogger("test_instrument_metadata.check")
    with caplog.at_level(logging.INFO, logger=log.name):
        summaries = check_project(config, log)
    z = config["voxel_size_nm"][0]
    assert summaries[0]["voxel_size_nm"] == pytest.approx([z, 6.1035, 4.8828])
    assert summaries[0]["voxel_size_source"] == ["config", *["file (FEI metadata)"] * 2]
    assert summaries[1]["voxel_size_source"] == ["sheet"] * 3
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        logging.INFO,
        f"FEI: voxel size {z:g} x 6.1035 x 4.8828 nm (z from config, y/x from file (FEI metadata))",
    ) in lines
    warnings = [text for level, text in lines if level == logging.WARNING]
    assert len(warnings) == 1 and "data set 'FEI'" in warnings[0]


def test_rule_check_dataset_logs_the_voxel_size(tmp_path):
    """scripts/check_dataset.py with a stand-in `snakemake` object, in a child process (the
    script sends its log lines to the rule's log)."""
    fei = write(tmp_path / "fei.tif", extratags=fei_tag())
    voxel, sources = voxel_size_with_source(fei, (50.0, 10.0, 10.0))  # as the plan gives it
    job = {
        "wildcards": {"ds": "FEI"},
        "input": {"volume": str(tmp_path / "fei.tif")},
        "output": [str(tmp_path / "checked.json")],
        "params": {
            "volume": str(tmp_path / "fei.tif"),
            "labels": None,
            "annotation": None,
            "annotation_labels": {"pore": [1], "solid": [2], "unlabelled": []},
            "voxel_size": {"nm": list(voxel), "source": list(sources)},
        },
        "log": [str(tmp_path / "check_dataset.log")],
    }
    run_script("check_dataset.py", job)
    log = (tmp_path / "check_dataset.log").read_text()
    assert "FEI: voxel size 50 x 6.1035 x 4.8828 nm (z from config, y/x from file (FEI" in log
    assert "WARNING data set 'FEI': the voxel size of z was not found in the data" in log
    summary = json.loads((tmp_path / "checked.json").read_text())
    assert summary["voxel_size_source"] == ["config", "file (FEI metadata)", "file (FEI metadata)"]


def test_fibseg_check_prints_the_voxel_size_its_source_and_the_warning(
    tmp_path, monkeypatch, capsys
):
    """`fibseg check` on a predict-only FEI slice stack: the size read from the tags, its
    source, and a WARNING-marked line for the slice thickness taken from the config."""
    from fibseg.cli import main

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "fei.tif", extratags=fei_tag())
    (tmp_path / "sheet.tsv").write_text("name\tvolume\nFEI\tfei.tif\n")
    (tmp_path / "run.yaml").write_text(
        "pretrained: {model: m.keras, postprocess: p.json}\nvoxel_size_nm: [50, 10, 10]\n"
    )
    code = main(["check", "sheet.tsv", "--config", "run.yaml"])
    err = capsys.readouterr().err
    assert "FEI: voxel size 50 x 6.1035 x 4.8828 nm (z from config, y/x from file (FEI" in err
    assert "WARNING: data set 'FEI': the voxel size of z was not found in the data" in err
    assert code == 2  # the stand-in model files do not exist: reported after the data sets


def test_the_rule_gets_the_plans_voxel_size_and_source(tmp_path, monkeypatch):
    """Rule check_dataset's param is the plan's size and source of each data set, so that
    a new config voxel_size_nm reruns only the data sets whose size or source it changes."""
    from fibseg.pipeline.plan import RunPlan
    from fibseg.pipeline.sheet import Dataset

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "fei.tif", extratags=fei_tag())
    config = load_config(extra={"datasets": "datasets.tsv", "voxel_size_nm": [40, 7, 7]})
    rows = [Dataset("FEI", "fei.tif"), Dataset("GIVEN", "fei.tif", voxel_size_nm="30,5,5")]
    plan = RunPlan.of(config, rows)
    assert plan.voxel_size_with_source("FEI") == (
        pytest.approx((40, 6.1035, 4.8828)),
        ("config", "file (FEI metadata)", "file (FEI metadata)"),
    )
    assert plan.voxel_size_with_source("GIVEN") == ((30, 5, 5), ("sheet",) * 3)
    rule = (REPO / "workflow/rules/preprocess.smk").read_text().split("rule align:")[0]
    assert "voxel_size=voxel_size_with_source_param" in rule
    assert 'config["voxel_size_nm"]' not in rule
