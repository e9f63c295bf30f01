# fibseg: CNN segmentation of FIB-SEM volumes into pore and solid (Skärberg et al. 2021).
# The DAG reads from the rule files in workflow/rules/, one per stage.
import os

from snakemake.utils import min_version

from fibseg.pipeline.project import merge_demo

min_version("9.0")


# The conda environments of envs/ install the package fibseg, editable, from the workflow's
# own folder: their pip section names -e ${FIBSEG_SOURCE}, which pip expands. Where the
# workflow is not a local folder, set FIBSEG_SOURCE beforehand (git+https://...#egg=fibseg).
WORKFLOW_DIR = str(workflow.current_basedir)
os.environ.setdefault(
    "FIBSEG_SOURCE",
    os.path.abspath(WORKFLOW_DIR) if os.path.isdir(WORKFLOW_DIR) else WORKFLOW_DIR,
)


# A file of config/: the working directory's where it is there (a deployed copy of config/),
# else the workflow's own (the repository run from elsewhere, or used as a module).
local_or_workflow = lambda path: path if os.path.exists(path) else workflow.source_path(path)


# The real-data defaults. As a module, the config given with `config:` replaces them.
configfile: local_or_workflow("config/config.yaml")


# No config file names a sheet: the synthetic demo (its data sets are made by rule
# synthesize_demo), merged as a config file is: over the defaults, under the command line's
# --configfile and --config. An overlay of your own names `datasets` and keeps the
# real-data defaults.
merge_demo(config, workflow.config_settings.overwrite_config or {}, local_or_workflow)


report: "workflow/report/workflow.rst"


# the config's schema, the plan of the run (PLAN) and the input functions of the rules
include: "workflow/rules/common.smk"


# With --sdm apptainer every rule runs in this image (containers/, README "Containers").
container: config["container"]


include: "workflow/rules/demo.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/regions.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/prediction.smk"
include: "workflow/rules/forest.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/structure.smk"


# Light jobs run on the submitting node, also with a cluster executor (the rules that exist
# only in some runs name theirs in their own files: training.smk, forest.smk).
localrules:
    all,
    synthesize_demo,
    check_dataset,
    check_model,
    split,
    sample,
    optimize_postprocess,
    evaluate,
    evaluate_volume,
    figures,
    figure_slices,
    figure_alignment,
    structure_table,


rule all:
    default_target: True
    input:
        PLAN.all_targets(),
