"""Segmenting without training: predict-only sheet rows, a pretrained model (safe loading,
its geometry, the dense engine's padding) and the progress lines of predict_slices."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, imwrite
from snakemake.utils import validate

from fibseg.inference.ensemble import ensemble_slices, load_member
from fibseg.inference.infer import check_scorable, load_model
from fibseg.inference.pretrained import Pretrained, check_annotations_needed, check_pretrained
from fibseg.io.errors import InputError
from fibseg.networks.model import build_model
from fibseg.pipeline.checks import check_config, check_dataset
from fibseg.pipeline.dag import keras_input_geometry
from fibseg.pipeline.sheet import check_external_inputs, is_annotated, missing_as_none, read_sheet
from fibseg.runtime.progress import Progress, format_duration, report_tile
from fibseg.runtime.settings import InferenceSettings

CONFIG_SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
SHEET_SCHEMA = str(REPO / "workflow/schemas/datasets.schema.yaml")


def inference(**changes) -> InferenceSettings:
    config = {"inference": changes}
    validate(config, CONFIG_SCHEMA)
    return InferenceSettings.from_config(config["inference"])


# --- predict-only rows of the sheet --------------------------------------------------------------


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A volume, regions and labels in the working directory."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    Path("data").mkdir()
    imwrite(Path("data/vol.tif"), rng.integers(0, 60000, (4, 32, 32)).astype(np.uint16))
    Path("data/regions.csv").write_text("z,y,x,height,width\n0,0,0,8,8\n3,16,16,8,8\n")
    imwrite(Path("data/labels.tif"), np.ones((2, 8, 8), np.uint8))
    return tmp_path


def load_sheet(text: str):
    """The sheet as common.smk loads it: read, schema (defaults), None for empty cells."""
    Path("sheet.tsv").write_text(text)
    sheet = read_sheet("sheet.tsv")
    validate(sheet, SHEET_SCHEMA)
    sheet = missing_as_none(sheet)
    check_external_inputs(sheet, "sheet.tsv", generated_prefix="results/")
    return sheet


def test_predict_only_rows_load_beside_annotated_ones(data):
    sheet = load_sheet(
        "name\tvolume\tregions\tlabels\ttruth\n"
        "A\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif\t\n"
        "P\tdata/vol.tif\t\t\t\n"
    )
    rows = sheet.set_index("name", drop=False).to_dict("index")
    assert [is_annotated(rows[name]) for name in ("A", "P")] == [True, False]
    assert rows["P"]["regions"] is None and rows["P"]["truth"] is None  # not NaN (truthy)


def test_a_sheet_without_annotation_columns_is_predict_only(data):
    sheet = load_sheet("name\tvolume\nP\tdata/vol.tif\n")
    assert not is_annotated(sheet.iloc[0])


@pytest.mark.parametrize(
    "cells, given, missing",
    [("data/regions.csv\t", "regions", "labels"), ("\tdata/labels.tif", "labels", "regions")],
)
def test_half_annotated_row_is_an_error(data, cells, given, missing):
    Path("sheet.tsv").write_text(f"name\tvolume\tregions\tlabels\nH\tdata/vol.tif\t{cells}\n")
    with pytest.raises(InputError) as error:
        read_sheet("sheet.tsv")
    message = str(error.value)
    assert "data set 'H'" in message and "sheet.tsv" in message
    assert f"gives '{given}' but no '{missing}'" in message
    assert f"Fix: fill in the '{missing}' column" in message


def test_check_dataset_checks_the_volume_of_a_predict_only_row(data):
    summary = check_dataset("P", "data/vol.tif")
    assert summary == {"dataset": "P", "shape": [4, 32, 32], "dtype": "uint16", "regions": 0}
    assert check_dataset("A", "data/vol.tif", "data/regions.csv", "data/labels.tif")["regions"] == 2
    with pytest.raises(InputError, match=r"data set 'H'.*not both"):
        check_dataset("H", "data/vol.tif", "data/regions.csv", None)


# --- the config key `pretrained` -----------------------------------------------------------------


def pretrained_config(**pretrained) -> dict:
    config = {"pretrained": pretrained}
    validate(config, CONFIG_SCHEMA)
    return config


def test_pretrained_defaults_to_training():
    config = {}
    validate(config, CONFIG_SCHEMA)
    assert config["pretrained"] == {} and Pretrained.from_config(config) is None


def test_pretrained_settings(tmp_path):
    one = Pretrained.from_config(pretrained_config(model="m.keras", postprocess="p.json"))
    assert one == Pretrained(("m.keras",), "p.json")
    two = Pretrained.from_config(pretrained_config(model=["best.keras", "member1.keras"]))
    assert two == Pretrained(("best.keras", "member1.keras"), None)
    with pytest.raises(InputError, match=r"pretrained.*'postprocess' but no 'model'"):
        Pretrained.from_config(pretrained_config(postprocess="p.json"))


def test_missing_pretrained_files_are_named(tmp_path):
    model, postprocess = tmp_path / "best.keras", tmp_path / "postprocess.json"
    with pytest.raises(InputError) as error:
        check_pretrained(Pretrained((str(model),), str(postprocess)))
    message = str(error.value)
    assert f"file '{model}'" in message and "pretrained.model" in message and "Fix:" in message
    model.write_bytes(b"")
    with pytest.raises(InputError, match=r"postprocess.json.*does not exist.*pretrained.post"):
        check_pretrained(Pretrained((str(model),), str(postprocess)))
    postprocess.write_text(json.dumps({"sigma": 1.0}))
    with pytest.raises(InputError, match=r"lacks threshold, min_object_voxels"):
        check_pretrained(Pretrained((str(model),), str(postprocess)))
    postprocess.write_text(json.dumps({"sigma": 1.0, "threshold": 0.5, "min_object_voxels": 9}))
    check_pretrained(Pretrained((str(model),), str(postprocess)))


def test_annotations_are_needed_unless_a_model_and_its_postprocess_are_given():
    with pytest.raises(InputError, match=r"sheet.tsv.*nothing to train on.*pretrained.model"):
        check_annotations_needed([], None, "sheet.tsv")
    with pytest.raises(InputError, match=r"pretrained.postprocess is not set"):
        check_annotations_needed([], Pretrained(("m.keras",)), "sheet.tsv")
    check_annotations_needed([], Pretrained(("m.keras",), "p.json"), "sheet.tsv")
    check_annotations_needed(["A"], Pretrained(("m.keras",)), "sheet.tsv")


def test_pretrained_model_skips_the_config_padding_check_of_the_dense_engine():
    """The model file's own padding counts (rule check_model), not model.padding."""
    config = {"inference": {"engine": "dense"}, "pretrained": {"model": "m.keras"}}
    validate(config, CONFIG_SCHEMA)
    check_config(config)
    del config["pretrained"]["model"]
    with pytest.raises(InputError, match="inference.engine"):
        check_config(config)


# --- loading and checking a model file -----------------------------------------------------------


def sizes(geometry) -> tuple[int, int, str]:
    """(n_xy, n_z, padding) of a model's geometry."""
    return geometry.n_xy, geometry.n_z, geometry.padding


def save(model, path: Path) -> str:
    model.save(path)
    return str(path)


def small_model(inputs: tuple[int, ...], activation: str = "sigmoid", lambda_layer=False):
    import keras

    source = keras.Input(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0)(source) if lambda_layer else source
    x = keras.layers.Flatten()(x)
    return keras.Model(source, keras.layers.Dense(1, activation=activation)(x))


def test_a_model_with_a_lambda_layer_is_refused(tmp_path):
    path = save(small_model((17, 17, 1), lambda_layer=True), tmp_path / "lambda.keras")
    with pytest.raises(InputError) as error:
        load_model(path)
    message = str(error.value)
    assert f"file '{path}'" in message and "safe mode refuses" in message and "Fix:" in message
    assert "pretrained.model" in message  # the config key, as config/README.md promises


def test_a_file_that_is_no_model_is_named(tmp_path):
    path = tmp_path / "junk.keras"
    path.write_text("not a model")
    with pytest.raises(InputError, match=r"junk.keras.*is not a Keras model"):
        load_model(str(path))


@pytest.mark.parametrize(
    "inputs, activation, problem",
    [
        ((16, 16, 1), "sigmoid", r"takes input \(None, 16, 16, 1\).*odd"),
        ((17, 17, 2), "sigmoid", r"takes input \(None, 17, 17, 2\)"),
        ((17, 15, 1), "sigmoid", r"takes input"),
        ((17, 17, 1), "relu", r"one sigmoid output"),
    ],
)
def test_a_model_fibseg_cannot_score_is_refused(tmp_path, inputs, activation, problem):
    path = save(small_model(inputs, activation), tmp_path / "other.keras")
    with pytest.raises(InputError, match=problem) as error:
        check_scorable(load_model(path), path, inference())
    assert f"file '{path}'" in str(error.value) and "Fix:" in str(error.value)


def test_the_sliding_engine_scores_any_model_of_that_geometry(tmp_path):
    path = save(small_model((17, 17, 3)), tmp_path / "other.keras")
    assert sizes(check_scorable(load_model(path), path, inference())) == (17, 3, "unknown")
    with pytest.raises(InputError, match=r"dense engine rebuilds.*lacks block1_conv1") as error:
        check_scorable(load_model(path), path, inference(engine="dense"))
    assert "inference.engine: sliding" in str(error.value)


def test_the_dense_engine_needs_a_valid_model_or_the_opt_in(tmp_path):
    path = save(build_model(17, 1, "same"), tmp_path / "same.keras")
    model = load_model(path)
    assert sizes(check_scorable(model, path, inference())) == (17, 1, "same")
    with pytest.raises(InputError) as error:
        check_scorable(model, path, inference(engine="dense"))
    message = str(error.value)
    assert f"file '{path}'" in message and "padding 'same'" in message
    assert "allow_approximate_dense" in message
    dense = inference(engine="dense", allow_approximate_dense=True)
    assert sizes(check_scorable(model, path, dense)) == (17, 1, "same")
    with pytest.raises(InputError, match="padding 'same'"):
        load_member(path, inference(engine="dense"))  # every load is checked


# --- progress of predict_slices ------------------------------------------------------------------


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 185, 3725)] == ["4 s", "3 min 05 s", "1 h 02 min"]


def test_progress_counts_rate_and_eta():
    lines, now = [], [0.0]
    log = logging.getLogger("test_progress")
    log.info = lambda text, *args: lines.append(text % args)
    progress = Progress(log, total=4, voxels=1000, tile_every_s=0, clock=lambda: now[0])
    now[0] = 30.0
    progress.slice_done("z=0")
    assert lines[-1] == (
        "slice 1/4 (z=0) done: 33 voxels/s, 2.00 slices/min, elapsed 30 s, ETA 1 min 30 s"
    )
    with progress.tiles("z=1"):
        now[0] = 45.0
        report_tile(1, 2)
    report_tile(2, 2)  # outside tiles(): nobody listens
    assert lines[-1] == (
        "slice 2/4 (z=1), tile 1/2: 33 voxels/s, 2.00 slices/min, elapsed 45 s, ETA 1 min 15 s"
    )
    assert len(lines) == 2


def test_predict_slices_logs_every_slice_and_tile_with_rate_and_eta(tmp_path, caplog):
    """A real model and the sliding engine on 3 slices of 24 x 24, in batches of 200
    neighbourhoods: each slice's 3 batches are its tiles."""
    path = save(build_model(17, 1, "same", seed=0), tmp_path / "m.keras")
    member = load_member(path, inference(extract_batch=200, predict_batch=100))
    volume = np.random.default_rng(0).random((3, 24, 24)).astype(np.float32)
    log = logging.getLogger("fibseg.test")
    with caplog.at_level(logging.INFO, logger="fibseg.test"):
        scores, _, _ = ensemble_slices(
            lambda z: volume[z], 3, range(3), [member], log, tile_every_s=0
        )
    assert scores.shape == (3, 24, 24)
    lines = [record.getMessage() for record in caplog.records]
    slices = [line for line in lines if " done: " in line]
    tiles = [line for line in lines if ", tile " in line]
    assert [line.split(" done")[0] for line in slices] == [
        "slice 1/3 (z=0)",
        "slice 2/3 (z=1)",
        "slice 3/3 (z=2)",
    ]
    assert len(tiles) == 3 * 3 and tiles[0].startswith("slice 1/3 (z=0), tile 1/3: ")
    for line in slices + tiles:
        assert "voxels/s" in line and "slices/min" in line and "ETA " in line
    assert slices[-1].endswith("ETA 0 s")


def test_the_config_schema_documents_pretrained():
    schema = yaml.safe_load(Path(CONFIG_SCHEMA).read_text())
    section = schema["properties"]["pretrained"]
    assert section["default"] == {} and "safe mode" in section["description"]


def test_the_memory_estimate_reads_a_model_file_without_loading_it(tmp_path):
    path = save(build_model(77, 3, "valid"), tmp_path / "valid.keras")
    geometry = keras_input_geometry(path)
    assert geometry.architecture.name == "patch" and sizes(geometry) == (77, 3, "valid")
    (tmp_path / "junk.keras").write_text("junk")
    assert keras_input_geometry(str(tmp_path / "junk.keras")) is None
