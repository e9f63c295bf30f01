"""The networks by name (fibseg.networks.registry): each architecture is one object that the
config checks, the DAG's estimates, training, scoring and the bundles ask. A stand-in
architecture, registered here and nowhere in the package, is planned, trained and scored like
fibseg's own: a third network is one module and its registration."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, demo_config
from snakemake.utils import validate

from fibseg.annotation.regions import RegionSet
from fibseg.annotation.sampling import split_regions
from fibseg.inference.ensemble import ensemble_slices, load_member
from fibseg.inference.infer import check_scorable, load_model, make_scorer
from fibseg.io.errors import InputError
from fibseg.networks.architecture import Architecture, Geometry, ModelConfigError, check_slices
from fibseg.networks.registry import (
    architecture,
    architecture_of,
    default_architecture,
    names,
    register,
    unregister,
)
from fibseg.networks.windows import neighbour_slices
from fibseg.pipeline.checks import check_config
from fibseg.pipeline.dag import (
    BASE_MB,
    MB,
    context_margins,
    keras_input_geometry,
    predict_memory_mb,
)
from fibseg.runtime.settings import InferenceSettings, TrainingSettings
from fibseg.training.train import RunFiles, TrainingRun, train_run

CONFIG_SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
NAME = "stand_in"
WORK_BYTES = 7 * MB  # the stand-in's engine's working memory, whatever the slice


class StandInEngine:
    """The stand-in's own engine: the whole slice through the network at once; counts its
    calls."""

    calls = 0

    def __init__(self, model) -> None:
        self.model = model

    def scores(self, stack: np.ndarray, roi=None) -> np.ndarray:
        StandInEngine.calls += 1
        y0, y1, x0, x1 = roi if roi is not None else (0, stack.shape[1], 0, stack.shape[2])
        window = np.moveaxis(stack[:, y0:y1, x0:x1].astype(np.float32), 0, -1)[None]
        return np.asarray(self.model.predict_on_batch(window))[0, ..., 0]


class StandIn(Architecture):
    """A 1 x 1 convolution over n_z slices: n_xy a multiple of 5, any padding; its context is
    three times n_xy; trained on the U-Net's tiles; scored by its own engine."""

    name = NAME

    def build(self, n_xy, n_z, padding, hyper, seed):
        import keras

        inputs = keras.Input((None, None, n_z), name="slices")
        init = keras.initializers.Constant(0.5)
        score = keras.layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer=init)
        return keras.Model(inputs, score(inputs), name=f"{NAME}_nz{n_z}")

    def check_grid(self, n_xys, n_zs, padding) -> None:
        if any(n % 5 for n in n_xys):
            raise ModelConfigError(
                f"holds {list(n_xys)}; the stand-in takes multiples of 5.", "use 10.", "grid.n_xy"
            )
        for n_z in n_zs:
            check_slices(n_z)

    def grid_geometry(self, n_xy, n_z, padding) -> Geometry:
        return Geometry(self, n_xy, n_z, "none")

    def context_xy(self, n_xy: int) -> int:
        return 3 * n_xy

    def owns(self, model) -> bool:
        return model.name.startswith(NAME)

    def owns_description(self, description) -> bool:
        return str(description["name"]).startswith(NAME)

    def geometry(self, model) -> Geometry:
        return Geometry(self, 0, int(model.input_shape[-1]), "none")

    def file_geometry(self, description) -> Geometry:
        n_z = int(description["layers"][0]["config"]["batch_shape"][-1])
        return Geometry(self, 0, n_z, "none")

    def check_training(self, mode, unlabelled_method, padding) -> None:
        pass

    def epochs(self, loops, mode):
        return loops.unet_tiles()

    def check_engine(self, engine, allow_approximate_dense, padding) -> None:
        pass

    def check_scorable(self, model, path, inference) -> Geometry:
        return self.geometry(model)

    def scorer(self, model, geometry, engine, inference, tile, engines):
        return StandInEngine(model).scores

    def exact_scorer(self, model, geometry, inference, engines):
        return None

    def predict_work_bytes(self, geometry, height, width, inference) -> int:
        return WORK_BYTES


@pytest.fixture
def stand_in():
    """The stand-in, registered for one test."""
    registered = register(StandIn())
    yield registered
    unregister(NAME)


def planned(**model) -> dict:
    """The demo's config with the stand-in's grid and `model`, as the workflow validates it."""
    config = demo_config()
    config["model"] = model
    config["grid"] = {**config["grid"], "n_xy": [10], "n_z": [3]}
    validate(config, CONFIG_SCHEMA)
    return config


def test_fibsegs_own_architectures_are_registered_by_name():
    assert names()[:2] == ["patch", "unet"]
    assert default_architecture() is architecture("patch")
    with pytest.raises(ModelConfigError, match="use one of: patch, unet") as error:
        architecture("unet3d")
    assert error.value.key == "model.architecture"
    with pytest.raises(ValueError, match="registered already"):
        register(architecture("unet"))


def test_an_architecture_defines_every_method():
    class Half(Architecture):
        name = "half"

        def build(self, n_xy, n_z, padding, hyper, seed):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_an_unregistered_architecture_is_refused_by_the_config_check():
    config = planned(architecture=NAME)  # the schema takes any name: the registry decides
    with pytest.raises(InputError, match="model.architecture") as error:
        check_config(config)
    assert f"is '{NAME}', which is no architecture fibseg knows" in str(error.value)


def test_a_run_is_planned_with_a_registered_stand_in(stand_in):
    config = planned(architecture=NAME)
    check_config(config)  # its own grid rules, not the patch CNN's odd n_xy or the U-Net's 8
    with pytest.raises(InputError, match="multiples of 5"):
        check_config({**config, "grid": {**config["grid"], "n_xy": [12]}})

    assert context_margins([10], [3, 1], [1.0], stand_in) == {"xy": 30, "z": 1, "smooth": 4}
    assert context_margins([10], [3, 1], [1.0])["xy"] == 5  # the patch CNN's by default
    geometry = stand_in.grid_geometry(10, 3, config["model"]["padding"])
    inference = InferenceSettings.from_config(config["inference"])
    source = (3 + 1) * 64 * 64 * 4 * 3
    expected = BASE_MB + math.ceil(1.5 * (source + WORK_BYTES) / MB)
    assert predict_memory_mb(64, 64, geometry, inference) == expected


def test_a_stand_in_model_is_recognised_once_and_scored_by_its_own_engine(stand_in, tmp_path):
    path = str(tmp_path / "stand_in.keras")
    stand_in.build(10, 3, "none", {}, 0).save(path)
    found = keras_input_geometry(path)  # the DAG reads the file without loading it
    assert found.architecture is stand_in and (found.n_xy, found.n_z) == (0, 3)
    assert stand_in.describe(found) == {"network": NAME, "n_xy": 0, "n_z": 3, "padding": "none"}

    model = load_model(path)
    assert architecture_of(model) is stand_in
    assert check_scorable(model, path, InferenceSettings()).architecture is stand_in
    member = load_member(path, InferenceSettings(engine="dense"))
    assert member.geometry.architecture is stand_in and member.n_z == 3

    volume = np.random.default_rng(0).random((4, 12, 16)).astype(np.float32)
    calls = StandInEngine.calls
    scores, _, _ = ensemble_slices(lambda z: volume[z], 4, range(4), [member])
    assert StandInEngine.calls == calls + 4  # one call per slice, through its engine
    expected = [1 / (1 + np.exp(-0.5 * volume[neighbour_slices(z, 3, 4)].sum(0))) for z in range(4)]
    np.testing.assert_allclose(scores, np.stack(expected), rtol=1e-5)
    sliding = make_scorer(model, "sliding", InferenceSettings())  # whatever the engine says
    np.testing.assert_allclose(sliding(volume[:3]), expected[1], rtol=1e-5)


def test_a_stand_in_trains_with_the_loop_it_picks(stand_in, tmp_path):
    rng = np.random.default_rng(4)
    labels = (rng.random((10, 16, 16)) < 0.5).astype(np.uint8)
    crops = rng.random((10, 3, 48, 48)).astype(np.float32) * 0.5
    crops[:, 1, 16:32, 16:32] += labels
    table = pd.DataFrame({"z": range(10), "y": 0, "x": 0, "height": 16, "width": 16})
    RegionSet("S", crops, labels, table, 16, 1).write(tmp_path / "S.h5")
    split = split_regions({"S": table}, {"train": 0.6, "val": 0.2, "test": 0.2}, 1)
    split.to_csv(tmp_path / "split.csv", index=False)
    training = TrainingSettings.from_config(
        {"epochs": 1, "optimizer": "adam", "steps_per_epoch": 2, "tiles_per_batch": 2}
    )
    files = RunFiles([str(tmp_path / "S.h5")], split_csv=str(tmp_path / "split.csv"))
    history = train_run(TrainingRun(tmp_path / "run", stand_in, 32, 3, 0, training, files))
    assert len(history) == 1 and np.isfinite(history["val_loss"]).all()
    params = json.loads((tmp_path / "run/params.json").read_text())
    assert params["architecture"] == NAME and params["n_xy"] == 32
    assert architecture_of(load_model(str(tmp_path / "run/model.keras"))) is stand_in


def test_a_whole_run_is_planned_with_the_stand_in(stand_in):
    """The run's one plan (fibseg.pipeline.plan) with the stand-in: its grid runs and every
    target, its margins, and its memory per prediction job, all from the registered object."""
    from fibseg.pipeline.plan import RunPlan
    from fibseg.pipeline.sheet import Dataset

    config = planned(architecture=NAME)
    check_config(config)
    rows = [Dataset("FILM", "data/film.tif", "data/r.csv", "data/l.tif", voxel_size_nm="50,10,10")]
    plan = RunPlan.of(config, rows)
    assert plan.architecture is stand_in
    assert plan.margins["xy"] == 30  # three times n_xy: the stand-in's context
    assert plan.model_geometry() == stand_in.grid_geometry(10, 3, config["model"]["padding"])
    assert plan.trains
    targets = plan.all_targets()
    assert "results/model/fibseg-model.json" in targets
    assert "results/FILM/segmentation.tif" in targets
    plan.remember(("shape", "FILM"), lambda: (8, 64, 64))  # no file: the shape as if read
    inference = InferenceSettings.from_config(config["inference"])
    expected = predict_memory_mb(64, 64, plan.model_geometry(), inference)
    assert plan.predict_mem_mb("FILM") == expected
