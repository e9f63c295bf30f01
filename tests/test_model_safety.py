"""Shared models never run code (issue 37): a model from outside the run (a bundle,
`pretrained.model`, `fibseg predict`) is read only as a `.keras` file in Keras safe mode, and
only from the bundle folder itself. Each test lays a trap, a pickle whose unpickling creates a
marker file, and names it wherever a model or post-processing file can be named: the refusal
is an InputError that names the file and why, and the marker never appears. Only the forest
the run trained itself (results/forest/forest.joblib) is read from a pickle."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import joblib
import numpy as np
import pytest
from helpers import REPO, imwrite

from fibseg.baselines.forest import forest_features, save_forest, train_forest
from fibseg.cli import main
from fibseg.inference import bundle as bundle_module
from fibseg.inference.bundle import METADATA, read_bundle
from fibseg.inference.ensemble import load_member
from fibseg.inference.pretrained import Pretrained, check_pretrained
from fibseg.io.errors import InputError
from fibseg.pipeline.predict import PredictOutputs, segment_volume
from fibseg.runtime.settings import InferenceSettings

POSTPROCESS = {"sigma": 1.0, "threshold": 0.5, "min_object_voxels": 10}
PICKLED = "can run any code when it is read"  # the reason every format refusal gives


class Trap:
    """Unpickled, it creates the file `marker` (as any code a pickle holds would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle was read: its code ran"


def lay_trap(path: Path, marker: Path) -> Path:
    """A pickle at `path` (joblib, as a forest is saved) that creates `marker` when read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"forest": Trap(marker), "metadata": {"n_z": 1, "sigma_max": 2.0}}, path)
    return path


def write_bundle(folder: Path, models: list, postprocess: object = "postprocess.json") -> Path:
    """A bundle folder whose description lists `models` and `postprocess` (stand-in files
    best.keras and postprocess.json are in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best.keras").write_bytes(b"not a model")
    (folder / "postprocess.json").write_text(json.dumps(POSTPROCESS))
    description = {
        "format": "fibseg-model",
        "format_version": 1,
        "models": models,
        "postprocess": postprocess,
        "inference": {"engine": "sliding"},
        "training_data": [{"name": "A", "voxel_size_nm": [50.0, 10.0, 10.0]}],
    }
    (folder / METADATA).write_text(json.dumps(description))
    return folder


def refused(call, *names: str) -> str:
    """The InputError `call()` raises; its message names each of `names` and gives a fix."""
    with pytest.raises(InputError) as error:
        call()
    message = str(error.value)
    for name in names:
        assert name in message, (name, message)
    assert "Fix:" in message
    return message


def test_the_trap_springs_when_read(tmp_path):
    """The traps below are real: joblib.load runs the pickle's code."""
    marker = tmp_path / "sprung"
    joblib.load(lay_trap(tmp_path / "evil.joblib", marker))
    assert marker.exists()


# --- bundles -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listed, why",
    [
        ("evil.joblib", "is not a .keras file"),
        ("evil.pkl", "is not a .keras file"),
        ("evil.h5", "is not a .keras file"),
        ("../evil.joblib", "is a path"),
        ("../evil.keras", "is a path"),
        ("sub/evil.keras", "is a path"),
        ("sub\\evil.keras", "is a path"),
        ("..evil.keras", "holds '..'"),
        (".evil.keras", "not a plain file name"),
        ("", "not a plain file name"),
        ("evil.keras\n", "not a plain file name"),
    ],
)
def test_a_bundle_lists_only_keras_files_in_its_folder(tmp_path, marker, listed, why):
    folder = write_bundle(tmp_path / "bundle", ["best.keras", listed])
    for name in ("evil.joblib", "evil.pkl", "evil.h5", "evil.keras", ".evil.keras"):
        lay_trap(tmp_path / name, marker)  # beside the bundle, where '../' leads
        lay_trap(folder / name, marker)
    lay_trap(folder / "sub" / "evil.keras", marker)
    message = refused(lambda: read_bundle(folder), str(folder), repr(listed), why)
    assert "model file" in message and "fibseg export-model" in message
    if "keras file" in why:
        assert PICKLED in message and "safe mode" in message


def test_an_absolute_or_non_string_model_is_refused(tmp_path, marker):
    evil = lay_trap(tmp_path / "evil.keras", marker)
    folder = write_bundle(tmp_path / "bundle", [str(evil)])
    refused(lambda: read_bundle(folder), str(folder), str(evil), "is a path")
    write_bundle(folder, [["best.keras"]])
    refused(lambda: read_bundle(folder), str(folder), "is not a file name but a list")
    write_bundle(folder, "best.keras")  # a string, not a list of names
    refused(lambda: read_bundle(folder), METADATA, "lists no model files")


def test_a_link_out_of_the_bundle_is_refused(tmp_path, marker):
    outside = lay_trap(tmp_path / "elsewhere" / "evil.keras", marker)
    folder = write_bundle(tmp_path / "bundle", ["best.keras", "linked.keras"])
    (folder / "linked.keras").symlink_to(outside)
    message = refused(lambda: read_bundle(folder), str(folder), "'linked.keras'", "is a link to")
    assert str(outside) in message and "outside the bundle folder" in message
    # a link to a file inside the folder is no escape
    (folder / "linked.keras").unlink()
    (folder / "linked.keras").symlink_to(folder / "best.keras")
    assert read_bundle(folder).models[1] == str(folder / "linked.keras")


@pytest.mark.parametrize(
    "postprocess, why",
    [
        ("../x.json", "is a path"),
        ("postprocess.joblib", "is not a .json file"),
        ("postprocess.pkl", "is not a .json file"),
        ("/etc/x.json", "is a path"),
        (None, "is not a file name but a NoneType"),
    ],
)
def test_a_bundle_postprocess_is_a_json_file_in_its_folder(tmp_path, marker, postprocess, why):
    folder = write_bundle(tmp_path / "bundle", ["best.keras"], postprocess)
    lay_trap(tmp_path / "x.json", marker)
    for name in ("postprocess.joblib", "postprocess.pkl"):
        lay_trap(folder / name, marker)
    message = refused(lambda: read_bundle(folder), str(folder), repr(postprocess), why)
    assert "post-processing file" in message


def test_a_bundle_is_refused_before_any_of_its_files_is_read(tmp_path, marker, monkeypatch):
    """The SHA-256 check reads the files: the names are judged first, every one of them."""
    folder = write_bundle(tmp_path / "bundle", ["best.keras", "evil.joblib"])
    lay_trap(folder / "evil.joblib", marker)
    description = json.loads((folder / METADATA).read_text())
    description["sha256"] = {"best.keras": "0" * 64, "evil.joblib": "0" * 64}
    (folder / METADATA).write_text(json.dumps(description))
    digested = []
    monkeypatch.setattr(bundle_module, "file_digest", lambda path: digested.append(path) or "")
    refused(lambda: read_bundle(folder), "evil.joblib")
    assert digested == []


def test_a_bundle_that_lists_a_pickle_is_refused_by_the_config_and_by_fibseg_predict(
    tmp_path, marker, capsys, monkeypatch
):
    folder = write_bundle(tmp_path / "bundle", ["evil.joblib"])
    lay_trap(folder / "evil.joblib", marker)
    config = {"pretrained": {"bundle": str(folder)}}
    refused(lambda: Pretrained.from_config(config), str(folder), "'evil.joblib'", PICKLED)

    monkeypatch.chdir(tmp_path)
    imwrite(tmp_path / "vol.tif", np.zeros((3, 20, 20), np.uint16))
    code = main(["predict", str(folder), "vol.tif", "out.tif", "--voxel-size", "50,10,10"])
    output = capsys.readouterr().err
    assert code == 2 and str(folder) in output and "'evil.joblib'" in output
    assert PICKLED in output and "Traceback" not in output
    assert not (tmp_path / "out.tif").exists()


def test_a_keras_named_pickle_is_not_unpickled(tmp_path, marker):
    """A pickle renamed to .keras reaches Keras's loader, which reads .keras files as zip
    archives only: it is refused as no Keras model."""
    folder = write_bundle(tmp_path / "bundle", ["best.keras"])
    lay_trap(folder / "best.keras", marker)
    path = read_bundle(folder).models[0]
    refused(lambda: load_member(path, InferenceSettings()), path, "is not a Keras model")


# --- pretrained.model, fibseg predict's library function, load_member ----------------------------


@pytest.mark.parametrize("name", ["evil.joblib", "evil.pkl", "evil.h5", "evil"])
def test_pretrained_model_must_be_a_keras_file(tmp_path, marker, name):
    evil = str(lay_trap(tmp_path / name, marker))
    post = tmp_path / "postprocess.json"
    post.write_text(json.dumps(POSTPROCESS))
    config = {"pretrained": {"model": evil, "postprocess": str(post)}}
    message = refused(lambda: Pretrained.from_config(config), f"file '{evil}'", PICKLED)
    assert "is not a .keras file" in message and "pretrained.model" in message
    listed = {"pretrained": {"model": [str(tmp_path / "best.keras"), evil]}}
    refused(lambda: Pretrained.from_config(listed), f"file '{evil}'", PICKLED)
    refused(lambda: check_pretrained(Pretrained((evil,), str(post))), f"file '{evil}'", PICKLED)


def test_pretrained_postprocess_must_be_a_json_file(tmp_path, marker):
    model = tmp_path / "best.keras"
    model.write_bytes(b"")
    evil = str(lay_trap(tmp_path / "postprocess.joblib", marker))
    config = {"pretrained": {"model": str(model), "postprocess": evil}}
    message = refused(lambda: Pretrained.from_config(config), f"file '{evil}'", ".json file")
    assert "pretrained.postprocess" in message
    refused(lambda: check_pretrained(Pretrained((str(model),), evil)), f"file '{evil}'")


def test_segment_volume_refuses_a_pickled_model(tmp_path, marker):
    """fibseg predict's library function checks the model's format before anything is read."""
    evil = str(lay_trap(tmp_path / "evil.joblib", marker))
    post = tmp_path / "postprocess.json"
    post.write_text(json.dumps(POSTPROCESS))
    imwrite(tmp_path / "vol.tif", np.zeros((3, 20, 20), np.uint16))
    config = {"inference": {}, "align": {}, "postprocess": {}, "resources": {"threads": 1}}
    outputs = PredictOutputs(tmp_path / "out.tif")
    pretrained = Pretrained((evil,), str(post))
    volume = str(tmp_path / "vol.tif")
    refused(lambda: segment_volume(pretrained, volume, outputs, config), f"file '{evil}'", PICKLED)
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("name", ["evil.joblib", "evil.pkl", "evil.h5", "evil.keras.joblib"])
def test_load_member_reads_no_pickle_without_the_trust_flag(tmp_path, marker, name):
    evil = str(lay_trap(tmp_path / name, marker))
    message = refused(lambda: load_member(evil, InferenceSettings()), f"file '{evil}'", PICKLED)
    assert "is not a .keras file" in message
    if name.endswith(".joblib"):
        return
    # the flag trusts the run's own forest (.joblib) alone, never another format
    refused(lambda: load_member(evil, InferenceSettings(), trusted_forest=True), PICKLED)


def test_the_runs_own_forest_loads_with_the_trust_flag(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.random((1, 24, 24)).astype(np.float32)
    labels = (stack[0] > 0.5).astype(np.int64)
    features = forest_features(stack, 2.0).reshape(24 * 24, -1)
    forest = train_forest(features, labels.ravel(), trees=3)
    path = tmp_path / "results/forest/forest.joblib"
    save_forest(forest, path, {"n_z": 1, "sigma_max": 2.0})

    member = load_member(str(path), InferenceSettings(), threads=1, trusted_forest=True)
    assert member.n_z == 1 and member.model is None
    scores = member.scorer(stack)
    assert scores.shape == (24, 24) and 0 <= scores.min() <= scores.max() <= 1
    refused(lambda: load_member(str(path), InferenceSettings()), str(path), PICKLED)


def test_only_the_forest_rules_trust_the_pickle():
    """Only the forest's rules, whose model is the run's own forest.joblib, may read a pickle;
    the CNN rules (which read the pretrained models) may not, and the scripts trust by the
    rule's name alone (no param: a finished forest job is not rerun by an upgrade)."""
    from fibseg.inference.ensemble import TRUSTED_FOREST_RULES

    forest = (REPO / "workflow/rules/forest.smk").read_text()
    for rule in TRUSTED_FOREST_RULES:
        block = forest.split(f"as {rule} with:")[1].split("use rule")[0]
        assert 'models=["results/forest/forest.joblib"]' in block
    prediction = (REPO / "workflow/rules/prediction.smk").read_text()
    assert not any(f"rule {rule}:" in prediction for rule in TRUSTED_FOREST_RULES)
    for script in ("predict_regions.py", "predict_slices.py"):
        text = (REPO / "scripts" / script).read_text()
        assert "trusted = snakemake.rule in TRUSTED_FOREST_RULES" in text
