# Synthetic FIB-SEM data sets with shine-through (the demo and the tests).


rule synthesize_demo:
    output:
        volume="results/demo/{demo}/volume.tif",
        truth="results/demo/{demo}/truth.tif",
        regions="results/demo/{demo}/regions.csv",
        labels="results/demo/{demo}/labels.tif",
    params:
        spec=lambda wildcards: config["demo"][wildcards.demo],
        align=asdict(PLAN.align),  # the truth and labels as seen after rule align
    log:
        "logs/synthesize_demo/{demo}.log",
    wildcard_constraints:
        demo=constraint(list(PLAN.demo)),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/synthesize_demo.py"
