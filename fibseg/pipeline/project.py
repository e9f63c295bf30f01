"""A project as the `fibseg` command sees it: the workflow beside the package, the config a run
would get (the working directory's config/config.yaml, else the packaged one, with overlays on
top and the schema's defaults), the plan of the run (fibseg.pipeline.plan, as the Snakefile
builds it), and every input check of the workflow run in-process, without a job
(`fibseg check`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from ..inference.pretrained import Pretrained, check_pretrained
from ..io.errors import InputError, collect
from ..io.formats import split_spec
from ..io.volume import report_voxel_size
from ..runtime.settings import InferenceSettings
from .checks import check_config, check_dataset
from .plan import RunPlan
from .sheet import schema_problem

ROOT = Path(__file__).resolve().parents[2]  # the repository: Snakefile, config/, workflow/
BASE_CONFIG = Path("config/config.yaml")  # the Snakefile's configfile, relative to the workdir
DEMO_CONFIG = "config/demo.yaml"  # added when no config file names a sheet


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


def merge_demo(config: dict, overrides: Mapping, find: Callable[[str], str]) -> None:
    """No config file names a sheet (`datasets`): the synthetic demo's config/demo.yaml is
    merged into `config` as a config file is, over the defaults and under `overrides` (the
    run's --configfile and --config); `find` locates a file of config/ (the working
    directory's, else the workflow's). The Snakefile and `load_config` both call this."""
    from snakemake.common.configfile import load_configfile
    from snakemake.utils import update_config

    if "datasets" in config:
        return
    demo = load_configfile(find(DEMO_CONFIG))
    demo["datasets"] = find(demo["datasets"])
    update_config(config, demo)
    update_config(config, dict(overrides))


def config_file(path: str) -> str:
    """A file of config/: the working directory's where it is there, else the packaged one
    (as the Snakefile finds it)."""
    return path if Path(path).exists() else str(workflow_root() / path)


def load_config(
    overlays: list[str] | None = None, extra: dict | None = None, demo: bool = False
) -> dict:
    """The config a run would see: the base file (`base_config_file`), each overlay merged on
    top key by key, then `extra`; with `demo`, config/demo.yaml where none of them names a
    sheet, as the Snakefile adds it (`merge_demo`); validated against the schema, which fills
    the defaults, and checked across keys (`check_config`)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import update_config, validate

    config, overrides = read_yaml(base_config_file()), {}
    for overlay in overlays or []:
        update_config(overrides, read_yaml(overlay))
    update_config(overrides, extra or {})
    update_config(config, overrides)
    if demo:
        merge_demo(config, overrides, config_file)
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


def sheet_schema() -> str:
    return str(workflow_root() / "workflow/schemas/datasets.schema.yaml")


def load_plan(overlays: list[str] | None = None, extra: dict | None = None) -> RunPlan:
    """The plan of the run that `fibseg run` with these --configfile overlays (and `extra` as
    --config) would make: the same as the Snakefile's PLAN (tests/test_plan.py)."""
    return RunPlan.from_config(load_config(overlays, extra, demo=True), sheet_schema())


def check_project(config: dict, log: logging.Logger) -> list[dict]:
    """Every check the workflow runs on its inputs, in its order, with no job: the plan's
    (`RunPlan.from_config`: the model (`pretrained`), the sheet and its files, that something
    can be trained, each data set's voxel size against a bundle's), rule check_dataset's
    checks of every volume, region table, label stack and annotation (reading every slice),
    and rule check_model's of a pretrained model. Returns their summaries; the faults of every
    data set are raised together (an InputErrors), a data set whose sheet row is faulty is
    not read."""
    summaries = []
    with collect() as faults:
        plan = RunPlan.from_config(config, sheet_schema(), faults)
        faulty = faults.datasets()
        for row in plan.table:
            if not row.name or not row.volume or row.name in faulty:
                continue  # its sheet row's faults are reported
            if not row.external and not Path(split_spec(row.volume)[0]).exists():
                log.info(
                    "%s: %s is made by the workflow; checked when it is made", row.name, row.volume
                )
                continue
            with faults.check():
                voxel, sources = plan.voxel_size_with_source(row.name)
                report_voxel_size(log, row.name, voxel, sources, searched=row.external)
                summary = check_dataset(
                    row.name,
                    row.volume,
                    row.regions,
                    row.labels,
                    row.annotation,
                    config.get("annotation_labels"),
                )
                summary["voxel_size_nm"] = list(voxel)
                summary["voxel_size_source"] = list(sources)
                log.info("%s: %s", row.name, summary)
                summaries.append(summary)
        if plan.pretrained and usable(plan.pretrained):
            with faults.check():
                summaries += check_models(plan.pretrained, plan.inference, log)
    return summaries


def usable(pretrained: Pretrained) -> bool:
    """Whether the pretrained files pass their checks (else those faults are reported)."""
    try:
        check_pretrained(pretrained)
    except InputError:
        return False
    return True


def check_models(
    pretrained: Pretrained, inference: InferenceSettings, log: logging.Logger
) -> list[dict]:
    """Rule check_model's checks: each model loads in safe mode and `inference` (a bundle's
    engine) can score it (imports TensorFlow)."""
    from ..inference.infer import check_scorable, load_model

    found = []
    for path in pretrained.models:
        geometry = check_scorable(load_model(path), path, inference)
        found.append({"model": path, **geometry.record()})
        log.info(
            "%s: n_xy %d, n_z %d, padding %s, engine %s",
            path,
            geometry.n_xy,
            geometry.n_z,
            geometry.padding,
            inference.engine,
        )
    return found
