# Annotated regions (§3.2-3.3): context crops, the paper's published crops, split, sampling.


rule align_annotation:
    input:
        unpack(annotation_files),
        transforms="results/{ds}/alignment.csv",
    output:
        "results/{ds}/annotation.h5",
    params:
        annotation=lookup(dpath="{ds}/annotation", within=PLAN.rows),
        annotation_labels=config["annotation_labels"],
    log:
        "logs/align_annotation/{ds}.log",
    wildcard_constraints:
        ds=constraint(PLAN.datasets),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/align_annotation.py"


rule extract_regions:
    input:
        unpack(region_files),
        volume="results/{ds}/preprocessed.h5",
    output:
        "results/{ds}/regions.h5",
    params:
        labels=lookup(dpath="{ds}/labels", within=PLAN.rows),
        annotation=annotation_spec,
        # the painted values of `aligned` rows; align_annotation maps the others
        annotation_labels=lambda wildcards: (
            config["annotation_labels"]
            if PLAN.dataset(wildcards.ds).aligned and PLAN.dataset(wildcards.ds).painted
            else None
        ),
        margins=PLAN.margins,
    log:
        "logs/extract_regions/{ds}.log",
    wildcard_constraints:
        ds=constraint(PLAN.datasets),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/extract_regions.py"


rule import_published:
    input:
        regions=lambda wildcards: PLAN.published[wildcards.ds]["regions"],
        masks=lambda wildcards: PLAN.published[wildcards.ds]["masks"],
        split=config["published"]["split"] or [],
    output:
        "results/{ds}/regions.h5",
    params:
        margins=PLAN.margins,
    log:
        "logs/import_published/{ds}.log",
    wildcard_constraints:
        ds=constraint(list(PLAN.published)),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/import_published.py"


rule split:
    input:
        expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
    output:
        "results/split.csv",
    params:
        split=config["split"],
    log:
        "logs/split.log",
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/split.py"


rule sample:
    input:
        split="results/split.csv",
        regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
    output:
        **{split: f"results/samples/{split}.csv" for split in ("train", "val", "test")},
    params:
        sampling=config["sampling"],
    log:
        "logs/sample.log",
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/sample.py"
