"""A project as the `fibseg` command sees it: the workflow beside the package, the config a run
would get (the working directory's config/config.yaml, else the packaged one, with overlays on
top and the schema's defaults), and every input check of the workflow run in-process, without
a job (`fibseg check`)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import yaml

from ..inference.pretrained import Pretrained, check_annotations_needed, check_pretrained
from ..io.errors import Faults, InputError, collect
from ..io.formats import split_spec
from ..io.volume import report_voxel_size, voxel_size_with_source
from ..runtime.settings import InferenceSettings
from .checks import check_config, check_dataset
from .sheet import is_annotated, schema_problem
from .sheet import load_sheet as load_sheet_file

ROOT = Path(__file__).resolve().parents[2]  # the repository: Snakefile, config/, workflow/
BASE_CONFIG = Path("config/config.yaml")  # the Snakefile's configfile, relative to the workdir
GENERATED = "results/"  # volumes that rules make (the demo): checked when they are made


def workflow_root() -> Path:
    """The folder of the Snakefile that ships with the package (an install from a clone)."""
    if not (ROOT / "Snakefile").is_file():
        raise InputError(
            "fibseg's workflow (Snakefile, config/, workflow/) is not beside the package.",
            file=str(ROOT / "Snakefile"),
            fix="install fibseg from a clone of its repository: pip install -e /path/to/fibseg",
        )
    return ROOT


def base_config_file() -> Path:
    """The config/config.yaml of the working directory, as the Snakefile reads it, else the
    packaged defaults for real data."""
    return BASE_CONFIG if BASE_CONFIG.is_file() else workflow_root() / BASE_CONFIG


def snakemake_command(args: list[str]) -> list[str]:
    """The snakemake command line of `fibseg run ARGS`: the packaged Snakefile (whose
    profiles/default applies by itself), a packaged profile given by name (`--profile slurm`)
    as its path, and the packaged config/config.yaml under the run's `--configfile` where the
    working directory has none."""
    root = workflow_root()
    args = list(args)
    for index, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name != "--profile":
            continue
        target = value if equals else args[index + 1] if index + 1 < len(args) else ""
        if target and not Path(target).exists() and (root / "profiles" / target).is_dir():
            packaged = str(root / "profiles" / target)
            if equals:
                args[index] = f"--profile={packaged}"
            else:
                args[index + 1] = packaged
    if not BASE_CONFIG.is_file():
        given = [
            i for i, a in enumerate(args) if a.split("=")[0] in ("--configfile", "--configfiles")
        ]
        if not given:
            raise InputError(
                "the working directory has no config/config.yaml, and no --configfile is given.",
                file=str(Path.cwd() / BASE_CONFIG),
                fix="give your run's config: fibseg run --configfile my_run.yaml (it names the "
                "sheet; the packaged config/config.yaml lies under it), or run in the fibseg "
                "repository for the demo.",
            )
        index = given[0]
        flag, equals, value = args[index].partition("=")
        packaged = str(root / BASE_CONFIG)
        args[index : index + 1] = [flag, packaged, value] if equals else [flag, packaged]
    return [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"), *args]


def read_yaml(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise InputError(
            "the config file does not exist.",
            file=str(path),
            fix="give the path of a YAML config file (relative to the working directory).",
        )
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(
            f"is not valid YAML ({error}).", file=str(path), fix="correct the file."
        ) from None
    if not isinstance(loaded, dict):
        raise InputError(
            "holds no mapping of config keys.", file=str(path), fix="write key: value lines."
        )
    return loaded


def load_config(overlays: list[str] | None = None, extra: dict | None = None) -> dict:
    """The config a run would see: the base file (`base_config_file`), each overlay merged on
    top key by key, then `extra`; validated against the schema, which fills the defaults, and
    checked across keys (`check_config`)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import update_config, validate

    config = read_yaml(base_config_file())
    for overlay in overlays or []:
        update_config(config, read_yaml(overlay))
    update_config(config, extra or {})
    try:
        validate(config, str(workflow_root() / "workflow/schemas/config.schema.yaml"))
    except WorkflowError as error:
        raise InputError(
            f"the config does not match the schema: {schema_problem(error)}",
            file=", ".join(map(str, [base_config_file(), *(overlays or [])])),
            fix="see workflow/schemas/config.schema.yaml for every key and its values.",
        ) from None
    check_config(config)
    return config


def load_sheet(path: str, faults: Faults | None = None):
    """The data set sheet as rule-writing code sees it (common.smk): read, validated against
    the sheet schema (defaults), empty cells None, external files present. Every fault is
    raised at once, or, given `faults`, added to it."""
    schema = str(workflow_root() / "workflow/schemas/datasets.schema.yaml")
    return load_sheet_file(path, schema, GENERATED, faults)


def check_project(config: dict, log: logging.Logger) -> list[dict]:
    """Every check the workflow runs on its inputs, in its order, with no job: the model
    (`pretrained`), the sheet and its files, that something can be trained, each data set's
    voxel size against a bundle's, rule check_dataset's checks of every volume, region table,
    label stack and annotation (reading every slice), and rule check_model's of a pretrained
    model. Returns their summaries; the faults of every data set are raised together (an
    InputErrors), a data set whose sheet row is faulty is not read."""
    pretrained = Pretrained.from_config(config)
    sheet_path = config["datasets"]
    summaries = []
    with collect() as faults:
        if pretrained:
            with faults.check():
                check_pretrained(pretrained)
        models_ok = not faults.errors
        sheet = load_sheet(sheet_path, faults)
        rows = sheet.to_dict("records")
        region_datasets = [row.get("name") for row in rows if is_annotated(row)]
        region_datasets += [n for n in config["published"]["datasets"] if n not in region_datasets]
        with faults.check():
            check_annotations_needed(region_datasets, pretrained, sheet_path)
        faulty = faults.datasets()
        for row in rows:
            name, volume = row.get("name"), row.get("volume")
            if not name or not volume or name in faulty:
                continue  # its sheet row's faults are reported
            if str(volume).startswith(GENERATED) and not Path(split_spec(volume)[0]).exists():
                log.info("%s: %s is made by the workflow; checked when it is made", name, volume)
                continue
            with faults.check():
                external = not str(volume).startswith(GENERATED)
                voxel, sources = voxel_size_with_source(
                    volume if external else None,
                    tuple(config["voxel_size_nm"]),
                    row.get("voxel_size_nm"),
                    name,
                    sheet_path,
                )
                report_voxel_size(log, name, voxel, sources, searched=external)
                if pretrained:
                    pretrained.check_voxel_size(voxel, name)
                summary = check_dataset(
                    name,
                    volume,
                    row.get("regions"),
                    row.get("labels"),
                    row.get("annotation"),
                    config.get("annotation_labels"),
                )
                summary["voxel_size_nm"] = list(voxel)
                summary["voxel_size_source"] = list(sources)
                log.info("%s: %s", name, summary)
                summaries.append(summary)
        if pretrained and models_ok:
            with faults.check():
                summaries += check_models(pretrained, config, log)
    return summaries


def check_models(pretrained: Pretrained, config: dict, log: logging.Logger) -> list[dict]:
    """Rule check_model's checks: each model loads in safe mode and the engine can score it
    (imports TensorFlow)."""
    from ..inference.infer import check_scorable, load_model

    inference = InferenceSettings.from_config(config["inference"])
    if pretrained.bundle is not None:
        inference = pretrained.bundle.inference(inference)
    found = []
    for path in pretrained.models:
        n_xy, n_z, padding = check_scorable(load_model(path), path, inference)
        found.append({"model": path, "n_xy": n_xy, "n_z": n_z, "padding": padding})
        log.info(
            "%s: n_xy %d, n_z %d, padding %s, engine %s", path, n_xy, n_z, padding, inference.engine
        )
    return found
