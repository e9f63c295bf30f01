"""Bad configuration and data set sheets are rejected when the workflow loads, in process.

`load_like_the_workflow` runs the checks of workflow/rules/common.smk in its order: the
config schema (which fills the defaults), check_config, read_sheet, the sheet schema and
check_external_inputs. One of these cases (even n_xy) also runs end to end through a real
`snakemake -n` in test_faults.py."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from helpers import REPO, demo_config, edit_config
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from fibseg.io.errors import InputError
from fibseg.pipeline.checks import check_config
from fibseg.pipeline.sheet import check_external_inputs, read_sheet
from fibseg.runtime.settings import InferenceSettings, TrainingSettings, UnlabelledSettings

CONFIG_SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
SHEET_SCHEMA = str(REPO / "workflow/schemas/datasets.schema.yaml")
SHEET = "config/datasets.tsv"
PUBLISHED = {"datasets": {"HPC22": {"regions": "r.tif", "masks": "m.mat"}}}


def load_like_the_workflow(project: Path, config: dict | None = None):
    """The load-time checks of common.smk, run in the project's working directory on
    `config` (default: the project's config/config.yaml)."""
    if config is None:
        config = yaml.safe_load((project / "config/config.yaml").read_text())
    validate(config, CONFIG_SCHEMA)
    check_config(config)
    sheet = read_sheet(config["datasets"])
    validate(sheet, SHEET_SCHEMA)
    check_external_inputs(sheet, config["datasets"], generated_prefix="results/")
    return config, sheet


@pytest.fixture
def project(external, monkeypatch):
    """The valid external project of test_faults.py, as the working directory."""
    monkeypatch.chdir(external)
    return external


def append_row(project: Path, row: str) -> None:
    with (project / SHEET).open("a") as sheet:
        sheet.write(row + "\n")


# --- valid input loads ---------------------------------------------------------------------------


def test_the_external_project_loads_with_defaults_filled(project):
    config, sheet = load_like_the_workflow(project)
    assert config["model"]["padding"] == "same"  # defaults from the schema
    assert config["inference"]["engine"] == "sliding"
    assert config["published"]["datasets"] == {}
    assert sheet["name"].tolist() == ["EXT"]
    assert sheet["aligned"].tolist() == [False]  # default of the sheet schema


def test_the_shipped_demo_config_loads(monkeypatch):
    """config/config.yaml with config/demo.yaml and its sheet: the demo's files are made by
    the workflow itself."""
    monkeypatch.chdir(REPO)
    config, sheet = load_like_the_workflow(REPO, demo_config())
    assert sheet["name"].tolist() == list(config["demo"])
    assert config["outputs"]["ome_zarr"] is True  # the napari store, by default


@pytest.mark.parametrize(
    "overlays",
    [
        ["demo_patches.yaml"],
        ["demo_sliding.yaml"],
        ["demo_patches.yaml", "demo_ensemble.yaml"],
        ["paper.yaml", "fast.yaml"],
        ["paper.yaml", "halving.yaml"],
    ],
    ids=lambda overlays: "+".join(overlays),
)
def test_every_shipped_overlay_loads_over_the_demo(monkeypatch, overlays):
    """Each overlay in config/, merged into config/config.yaml as Snakemake merges
    --configfile, passes the schema and the cross-key checks; the demo comparisons train the
    paper's way (patches, SGD, no unlabelled voxels) on the grid of 1 x 2 cells x 2 seeds
    their rows in docs/results.md were measured with."""
    from snakemake.utils import update_config

    from fibseg.runtime.settings import SearchRanges, TrainingSettings

    monkeypatch.chdir(REPO)
    config = demo_config()
    for overlay in overlays:
        update_config(config, yaml.safe_load((REPO / "config" / overlay).read_text()))
    validate(config, CONFIG_SCHEMA)
    check_config(config)
    if overlays[0].startswith("demo"):
        training = TrainingSettings.from_config(config["training"])
        assert (training.mode, training.optimizer, training.epochs) == ("patches", "sgd", 6)
        assert training.unlabelled.method == "none" and training.search == SearchRanges()
        assert (config["grid"]["n_z"], config["grid"]["seeds"]) == ([1, 3], 2)


def test_the_demo_is_hard_films_and_the_easy_overlay_keeps_the_earlier_generator(monkeypatch):
    """config/demo.yaml makes its three data sets hard films, the preset rule
    synthesize_demo builds; config/demo_easy.yaml over it keeps the same data sets,
    porosities and seeds with the easy generator."""
    from snakemake.utils import update_config

    from fibseg.demo.films import hard_film_spec, styled_spec

    monkeypatch.chdir(REPO)
    config = demo_config()
    validate(config, CONFIG_SCHEMA)
    hard = {name: dict(spec) for name, spec in config["demo"].items()}
    assert list(hard) == ["HPC22", "HPC30", "HPC45"]
    for spec in hard.values():
        assert spec["style"] == "hard"
        size = {k: v for k, v in spec.items() if k not in ("porosity", "seed", "style")}
        assert styled_spec(**spec) == hard_film_spec(spec["porosity"], spec["seed"], **size)
    update_config(config, yaml.safe_load((REPO / "config/demo_easy.yaml").read_text()))
    validate(config, CONFIG_SCHEMA)
    check_config(config)
    assert list(config["demo"]) == list(hard)
    for name, spec in config["demo"].items():
        assert spec["style"] == "easy"
        assert (spec["porosity"], spec["seed"]) == (hard[name]["porosity"], hard[name]["seed"])
        assert styled_spec(**spec) != styled_spec(**hard[name])


def test_an_overlay_naming_only_a_sheet_gets_the_real_data_defaults(monkeypatch):
    """A user's overlay that names a sheet is merged onto config/config.yaml alone: none of
    the demo's settings (config/demo.yaml) reach it; the Snakefile adds those only when no
    file names a sheet (tests/test_workflow_dag.py runs both)."""
    from snakemake.utils import update_config

    monkeypatch.chdir(REPO)
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert "datasets" not in config and "demo" not in config
    update_config(config, {"datasets": "my_datasets.tsv"})
    validate(config, CONFIG_SCHEMA)
    check_config(config)
    assert config["demo"] == {}
    assert config["sampling"]["fraction"] == 0.01 != demo["sampling"]["fraction"]
    assert config["postprocess"]["min_object_voxels"] == 100
    assert demo["postprocess"]["min_object_voxels"] == 10
    assert config["structure"]["max_voxels"] == 2_000_000 != demo["structure"]["max_voxels"]
    assert config["grid"]["seeds"] == 3 and demo["grid"]["seeds"] == 1
    assert config["outputs"]["ome_zarr"] is True  # the napari store, by default
    # what the demo's results were measured with stays the same
    merged = demo_config()
    assert (merged["grid"]["n_xy"], merged["grid"]["n_z"], merged["grid"]["seeds"]) == (
        [96],
        [3],
        1,
    )
    assert merged["model"] == {"architecture": "unet"}
    assert merged["inference"] == {"slices_per_job": 16}
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())
    # the demo runs its 12 epochs in full; the base file trains to a patience, with a cap
    assert merged["training"] == base["training"] | {"epochs": 12, "patience": None}
    assert base["training"]["patience"] >= 1 and base["training"]["epochs"] > 12
    real = config["training"]
    assert (real["epochs"], real["patience"]) == (
        base["training"]["epochs"],
        base["training"]["patience"],
    )


def test_the_paper_overlay_restores_the_papers_training(monkeypatch):
    """`--configfile config/paper.yaml` is merged into config/config.yaml key by key (as
    Snakemake does): whatever the demo's defaults, the result trains as §3.5-3.7 say."""
    from snakemake.utils import update_config

    from fibseg.runtime.settings import SearchRanges

    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/paper.yaml").read_text()))
    validate(config, CONFIG_SCHEMA)
    training = TrainingSettings.from_config(config["training"])
    assert (training.mode, training.optimizer, training.momentum) == ("patches", "sgd", 0.99)
    assert (training.epochs, training.batch_size, training.steps_per_epoch) == (40, 128, None)
    assert training.unlabelled.method == UnlabelledSettings().method == "none"
    assert training.search == SearchRanges()
    # the paper's numbers (§3.7), not only the defaults
    assert training.search.log10_lr0 == (-2.5, -2.25, -2.0)
    assert training.search.k == tuple(range(4, 21, 2))
    assert training.search.a == training.search.b == (0.025, 0.10)
    assert config["grid"]["seeds"] == 100 and config["model"]["padding"] == "same"


@pytest.mark.parametrize(
    "changes",
    [
        {"grid.n_xy": [129], "grid.n_z": [7], "published": PUBLISHED},  # the release's limit
        {"inference.engine": "dense", "inference.allow_approximate_dense": True},
        {"inference.engine": "dense", "model.padding": "valid", "grid.n_xy": [81]},
        {"training.optimizer": "adam", "training.search": {"log10_lr0": [-3.0], "k": [20]}},
        {"outputs": {"ome_zarr": False}},
        {
            "training.mode": "dense",
            "model.padding": "valid",
            "grid.n_xy": [81],
            "training.unlabelled": {"method": "pseudo", "confidence": 0.9, "start_epoch": 2},
        },
    ],
    ids=[
        "published at its limit",
        "approximate dense opted in",
        "dense on a valid model",
        "Adam at its own learning rate",
        "no OME-Zarr output",
        "pseudo-labels from the forest",
    ],
)
def test_allowed_edge_cases_load(project, changes):
    edit_config(project, **changes)
    load_like_the_workflow(project)


# --- the config schema ---------------------------------------------------------------------------

SCHEMA_ERRORS = {
    "misspelled key": (
        {"sampling.fractoin": 0.1},
        ["'fractoin' was unexpected", "On instance['sampling']"],
    ),
    "n_z below 1": (
        {"grid.n_z": [0]},
        ["0 is less than the minimum of 1", "On instance['grid']['n_z'][0]"],
    ),
    "threshold outside (0, 1)": (
        {"postprocess.threshold_grid": [1.2]},
        [
            "1.2 is greater than or equal to the maximum of 1",
            "On instance['postprocess']['threshold_grid'][0]",
        ],
    ),
    "unknown optimiser": (
        {"training.optimizer": "rmsprop"},
        ["'rmsprop' is not one of ['sgd', 'adam']", "On instance['training']['optimizer']"],
    ),
    "unknown engine": (
        {"inference.engine": "fast"},
        ["'fast' is not one of ['sliding', 'dense']", "On instance['inference']['engine']"],
    ),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_ERRORS))
def test_schema_names_the_key_and_the_allowed_values(project, case):
    changes, fragments = SCHEMA_ERRORS[case]
    edit_config(project, **changes)
    with pytest.raises(WorkflowError) as error:
        load_like_the_workflow(project)
    message = str(error.value)
    assert message.startswith("Error validating config file.")
    for fragment in fragments:
        assert fragment in message, message


# Options measured as no gain and removed (studies/label_budget.md keeps their numbers): a config
# that still names one is refused by the schema, which names the key and what is allowed.
REMOVED_UNLABELLED = {
    "blind-spot pretraining (method masked)": (
        {"method": "masked"},
        ["'masked' is not one of ['none', 'pseudo']", "On instance['training']['unlabelled']"],
    ),
    "the network as its own teacher": (
        {"method": "pseudo", "teacher": "network"},
        ["'teacher' was unexpected", "On instance['training']['unlabelled']"],
    ),
    "the teacher key, even naming the forest": (
        {"method": "pseudo", "teacher": "forest"},
        ["'teacher' was unexpected", "On instance['training']['unlabelled']"],
    ),
    **{
        f"the pretraining's {key}": (
            {"method": "none", key: value},
            [f"'{key}' was unexpected", "On instance['training']['unlabelled']"],
        )
        for key, value in {
            "pretrain_steps": 300,
            "pretrain_lr": 0.001,
            "mask_fraction": 0.02,
            "mask_radius": 2,
        }.items()
    },
}


@pytest.mark.parametrize("case", sorted(REMOVED_UNLABELLED))
def test_removed_unlabelled_options_are_refused_by_the_schema(project, case):
    unlabelled, fragments = REMOVED_UNLABELLED[case]
    edit_config(
        project,
        **{"training.mode": "dense", "model.padding": "valid", "grid.n_xy": [81]},
        **{"training.unlabelled": unlabelled},
    )
    with pytest.raises(WorkflowError) as error:
        load_like_the_workflow(project)
    message = str(error.value)
    assert message.startswith("Error validating config file.")
    for fragment in fragments:
        assert fragment in message, message


def test_no_schema_key_remains_for_a_removed_option():
    schema = yaml.safe_load(Path(CONFIG_SCHEMA).read_text())
    keys = schema["properties"]["training"]["properties"]["unlabelled"]["properties"]
    assert keys["method"]["enum"] == ["none", "pseudo"]
    removed = {"teacher", "pretrain_steps", "pretrain_lr", "mask_fraction", "mask_radius"}
    assert not removed & set(keys)
    # the schema's defaults are the settings' own
    assert {key: value["default"] for key, value in keys.items()} == asdict(UnlabelledSettings())


# --- check_config: rules across keys, each defined beside its code -------------------------------

CONFIG_ERRORS = {
    "even n_xy": (
        {"grid.n_xy": [17, 32]},
        "file 'config: grid.n_xy': holds even sizes [32]; the voxel to classify must be the "
        "centre of its neighbourhood. Fix: use odd sizes such as 33, 49, 65, 81, 97, 113.",
    ),
    "even n_z": (
        {"grid.n_z": [1, 2]},
        "file 'config: grid.n_z': n_z=2 must be odd: the slice to classify is the centre of "
        "its n_z slices. Fix: use odd sizes such as 1, 3, 5, 7, 9, 11.",
    ),
    "n_xy too small for any model": (
        {"grid.n_xy": [15]},
        "file 'config: grid.n_xy': n_xy=15 is too small: four 2x2 poolings need n_xy >= 16. "
        "Fix: use 17 or more.",
    ),
    "valid with small n_xy": (
        {"model.padding": "valid"},
        "file 'config: grid.n_xy': n_xy=17 is too small for padding 'valid': four blocks "
        "need n_xy >= 76. Fix: use 81, 97 or 113, or set model.padding: same.",
    ),
    "fractions do not sum to 1": (
        {"split": {"train": 0.7, "val": 0.2, "test": 0.2, "seed": 1}},
        "file 'config: split': train + val + test = 1.1, not 1. Fix: make the fractions sum to 1.",
    ),
    "dense on a same model": (
        {"inference.engine": "dense"},
        "file 'config: inference.engine': the dense engine is exact only for models with "
        "padding 'valid'; 'same' models would get an approximation. Fix: set model.padding: "
        "valid (n_xy >= 76) and retrain, or inference.engine: sliding, or accept the "
        "approximation with inference.allow_approximate_dense: true.",
    ),
    "unlabelled voxels with patch training": (
        {"training.unlabelled": {"method": "pseudo"}},
        "file 'config: training.unlabelled.method': learning from unlabelled voxels ('pseudo') "
        "needs dense training, not 'patches'. Fix: set training.mode: dense (with "
        "model.padding: valid) or training.unlabelled.method: none.",
    ),
    "pseudo-labels without the forest": (
        {
            "training.mode": "dense",
            "model.padding": "valid",
            "grid.n_xy": [81],
            "training.unlabelled": {"method": "pseudo"},
            "forest.enabled": False,
        },
        "file 'config: training.unlabelled.method': pseudo-labels (training.unlabelled.method: "
        "pseudo) come from the random-forest baseline's score volumes, and forest.enabled is "
        "false. Fix: set forest.enabled: true, or training.unlabelled.method: none.",
    ),
    "a U-Net with a patch CNN's tile side": (
        {"model.architecture": "unet", "grid.n_xy": [81]},
        "file 'config: grid.n_xy': holds [81]; for model.architecture: unet, n_xy is the side "
        "of the training tiles, which must be a multiple of 8 (three poolings) and at least 32. "
        "Fix: use sizes such as 64, 96 or 128.",
    ),
    "pseudo-labels for the U-Net": (
        {
            "model.architecture": "unet",
            "grid.n_xy": [64],
            "training.unlabelled": {"method": "pseudo"},
        },
        "file 'config: training.unlabelled.method': is 'pseudo', which trains the patch CNN on "
        "unlabelled voxels; the U-Net (model.architecture: unet) learns from the labelled "
        "voxels only. Fix: set training.unlabelled.method: none, or model.architecture: patch.",
    ),
    "halving rungs that stop short of training.epochs": (
        {"grid.search": {"strategy": "halving", "rungs": [4, 12], "keep": 0.5}},
        "file 'config: grid.search.rungs': [4, 12] must rise strictly and end at "
        "training.epochs (40). Fix: list the end epoch of each rung, the last one 40.",
    ),
    "n_xy beyond the published crops": (
        {"grid.n_xy": [17, 131], "published": PUBLISHED},
        "file 'config: grid': the grid needs margins 65 (x-y) and 0 (z); the release's crops "
        "give 64 and 3. Fix: keep n_xy <= 129 and n_z <= 7 for the published data, or drop "
        "the published data sets.",
    ),
    "n_z beyond the published crops": (
        {"grid.n_z": [9], "published": PUBLISHED},
        "file 'config: grid': the grid needs margins 8 (x-y) and 4 (z); the release's crops "
        "give 64 and 3. Fix: keep n_xy <= 129 and n_z <= 7",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_check_config_names_the_key_the_problem_and_the_fix(project, case):
    changes, expected = CONFIG_ERRORS[case]
    edit_config(project, **changes)
    with pytest.raises(InputError) as error:
        load_like_the_workflow(project)
    assert str(error.value).startswith(expected), str(error.value)


def test_check_config_names_the_config_it_was_given():
    config = demo_config()
    config["grid"]["n_z"] = [4]
    validate(config, CONFIG_SCHEMA)
    with pytest.raises(InputError, match=r"^file 'paper.yaml: grid.n_z': n_z=4 must be odd"):
        check_config(config, "paper.yaml")


# --- the data set sheet --------------------------------------------------------------------------


def test_missing_sheet_is_named_with_the_key_to_set(project):
    edit_config(project, datasets="config/nothere.tsv")
    with pytest.raises(InputError) as error:
        load_like_the_workflow(project)
    assert str(error.value) == (
        "file 'config/nothere.tsv': the data set sheet does not exist. "
        "Fix: set the config key 'datasets' to a TSV sheet."
    )


@pytest.mark.parametrize(
    "row, expected",
    [
        (
            "EXT\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif",
            "file 'config/datasets.tsv': data set names occur more than once: EXT. "
            "Fix: give every row of the sheet its own name.",
        ),
        (
            "EXT 2\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif",
            "file 'config/datasets.tsv': the name 'EXT 2' cannot be used in file paths. "
            "Fix: use letters, digits, '_', '-' and '.' only.",
        ),
        (
            "B\t\tdata/regions.csv\tdata/labels.tif",
            "file 'config/datasets.tsv': line 3 has an empty 'volume'. "
            "Fix: fill in every required column.",
        ),
    ],
    ids=["duplicate data set names", "name unusable in paths", "empty volume"],
)
def test_bad_sheet_row_is_named(project, row, expected):
    append_row(project, row)
    with pytest.raises(InputError) as error:
        load_like_the_workflow(project)
    assert str(error.value) == expected


def test_sheet_schema_names_the_unknown_column(project):
    (project / SHEET).write_text(
        "name\tvolume\tregions\tlabels\tnote\n"
        "EXT\tdata/vol.tif\tdata/regions.csv\tdata/labels.tif\tfrom the microscope\n"
    )
    with pytest.raises(WorkflowError) as error:
        load_like_the_workflow(project)
    message = str(error.value)
    assert message.startswith("Error validating row 0 of data frame.")
    assert "'note' was unexpected" in message


# --- files that no rule makes must exist ---------------------------------------------------------


@pytest.mark.parametrize(
    "spoil, expected",
    [
        (
            lambda p: (p / "data/vol.tif").unlink(),
            "data set 'EXT', file 'data/vol.tif': the 'volume' file does not exist "
            "(sheet config/datasets.tsv).",
        ),
        (
            lambda p: append_row(p, "H5\tdata/vol.tif\tdata/regions.csv\tdata/masks.h5:/labels"),
            "data set 'H5', file 'data/masks.h5': the 'labels' file does not exist "
            "(sheet config/datasets.tsv).",
        ),
    ],
    ids=["missing volume", "missing HDF5 labels"],
)
def test_missing_external_file_is_named_with_its_data_set(project, spoil, expected):
    spoil(project)
    with pytest.raises(InputError) as error:
        load_like_the_workflow(project)
    message = str(error.value)
    assert message.startswith(expected), message
    assert message.endswith(
        "Fix: correct the path in the sheet (relative to the working directory) or copy the "
        "file there."
    )


def test_files_under_results_are_left_to_the_rules(project):
    append_row(project, "GEN\tresults/GEN/vol.tif\tresults/GEN/regions.csv\tdata/labels.tif")
    _, sheet = load_like_the_workflow(project)
    assert sheet["name"].tolist() == ["EXT", "GEN"]


def test_settings_travel_as_plain_dicts_and_come_back_equal():
    # rules pass dataclasses.asdict(...) so that Snakemake records them (rerun on change)
    training = TrainingSettings.from_config(
        {
            "epochs": 7,
            "optimizer": "adam",
            "mode": "dense",
            "steps_per_epoch": 25,
            "search": {"log10_lr0": [-3.0], "k": [20], "p_d": [0.1, 0.2]},
            "unlabelled": {"method": "pseudo", "confidence": 0.8},
        }
    )
    assert TrainingSettings.from_config(asdict(training)) == training
    inference = InferenceSettings.from_config({"engine": "dense", "tile": 512})
    assert InferenceSettings.from_config(asdict(inference)) == inference
