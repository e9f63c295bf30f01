# fibseg: CNN segmentation of FIB-SEM volumes into pore and solid (Skärberg et al. 2021).
# The DAG reads from the rule files in workflow/rules/, one per stage.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# No config file names a sheet: the synthetic demo (its data sets are made by rule
# synthesize_demo). An overlay of your own names `datasets` and keeps the real-data defaults.
if "datasets" not in config:

    configfile: "config/demo.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/regions.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/prediction.smk"
include: "workflow/rules/forest.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/structure.smk"


# Light jobs run on the submitting node, also with a cluster executor.
localrules:
    all,
    synthesize_demo,
    check_dataset,
    check_model,
    split,
    sample,
    promote,
    select_model,
    describe_model,
    optimize_forest_postprocess,
    optimize_postprocess,
    evaluate,
    evaluate_volume,
    figures,
    figure_slices,
    structure_table,


rule all:
    input:
        all_targets(),
    default_target: True
