# Input checks, alignment (config key align: a robust joint solve by default, the paper's
# StackReg chain in config/paper.yaml) and x-gradient correction (§3.1).


rule check_dataset:
    input:
        unpack(annotation_files),
        volume=volume_file,
    output:
        "results/{ds}/checked.json",
    params:
        volume=lookup(dpath="{ds}/volume", within=PLAN.rows),
        labels=lookup(dpath="{ds}/labels", within=PLAN.rows),
        annotation=lookup(dpath="{ds}/annotation", within=PLAN.rows),
        # only where the data set has a painted annotation: a new mapping reruns only those
        annotation_labels=lambda wildcards: (
            config["annotation_labels"] if PLAN.dataset(wildcards.ds).annotation else None
        ),
        # the voxel size the run uses and where each axis came from (logged; a change reruns
        # only the data sets whose size or source changed)
        voxel_size=voxel_size_with_source_param,
    log:
        "logs/check_dataset/{ds}.log",
    benchmark:
        "results/benchmarks/check_dataset/{ds}.tsv"
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/check_dataset.py"


rule align:
    input:
        volume=volume_file,
        checked="results/{ds}/checked.json",
    output:
        volume="results/{ds}/aligned.h5",
        transforms="results/{ds}/alignment.csv",
        pairs="results/{ds}/alignment_pairs.csv",
        report="results/{ds}/alignment.json",
    params:
        volume=lookup(dpath="{ds}/volume", within=PLAN.rows),
        voxel_size_nm=voxel_size_param,
        align=asdict(PLAN.align),
    threads: PLAN.resources.threads
    log:
        "logs/align/{ds}.log",
    benchmark:
        "results/benchmarks/align/{ds}.tsv"
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/align.py"


rule correct_gradient:
    input:
        volume=unaligned_or_aligned,
        checked="results/{ds}/checked.json",
    output:
        "results/{ds}/preprocessed.h5",
    params:
        volume=unaligned_or_aligned_spec,
        voxel_size_nm=voxel_size_param,
    log:
        "logs/correct_gradient/{ds}.log",
    benchmark:
        "results/benchmarks/correct_gradient/{ds}.tsv"
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/correct_gradient.py"


rule figure_alignment:
    input:
        transforms="results/{ds}/alignment.csv",
        report="results/{ds}/alignment.json",
    output:
        report(
            "results/figures/alignment_{ds}.png",
            caption="../report/alignment.rst",
            category="Alignment",
            subcategory="{ds}",
        ),
    log:
        "logs/figure_alignment/{ds}.log",
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/figure_alignment.py"
