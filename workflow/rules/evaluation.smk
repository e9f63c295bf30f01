# Tables 2-3, t-tests, the Otsu baseline, the full-volume check and Figures 8-9.


rule evaluate:
    input:
        scores=expand("results/{ds}/region_scores.h5", ds=PLAN.region_datasets),
        regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
        split="results/split.csv",
        postprocess="results/postprocess.json",
        forest_scores=forest_files("results/forest/{ds}/region_scores.h5", ds=PLAN.region_datasets),
        forest_postprocess=forest_files("results/forest/postprocess.json"),
    output:
        table2=report(
            "results/tables/table2.csv", caption="../report/table2.rst", category="Evaluation"
        ),
        table3=report(
            "results/tables/table3.csv", caption="../report/table3.rst", category="Evaluation"
        ),
        ttest=report(
            "results/tables/porosity_ttest.csv",
            caption="../report/ttest.rst",
            category="Evaluation",
        ),
    log:
        "logs/evaluate.log",
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/evaluate.py"


rule evaluate_volume:
    input:
        segmentations=expand("results/{ds}/segmentation.h5", ds=PLAN.truth_datasets),
        forest_segmentations=forest_files(
            "results/forest/{ds}/segmentation.h5", ds=PLAN.truth_datasets
        ),
        volumes=expand("results/{ds}/preprocessed.h5", ds=PLAN.truth_datasets),
        truths=truth_files,
    output:
        report(
            "results/tables/full_volume.csv",
            caption="../report/full_volume.rst",
            category="Evaluation",
        ),
    params:
        datasets=PLAN.truth_datasets,
        truths=[PLAN.dataset(ds).truth for ds in PLAN.truth_datasets],
    log:
        "logs/evaluate_volume.log",
    benchmark:
        "results/benchmarks/evaluate_volume.tsv"
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/evaluate_volume.py"


rule figures:
    input:
        scores=expand("results/{ds}/region_scores.h5", ds=PLAN.region_datasets),
        regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
        split="results/split.csv",
        postprocess="results/postprocess.json",
        forest_scores=forest_files("results/forest/{ds}/region_scores.h5", ds=PLAN.region_datasets),
        forest_postprocess=forest_files("results/forest/postprocess.json"),
    output:
        fig8=report(
            "results/figures/fig8_regions.png",
            caption="../report/fig8.rst",
            category="Segmentation",
        ),
    log:
        "logs/figures.log",
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/figures.py"


rule figure_slices:
    input:
        volumes=expand("results/{ds}/preprocessed.h5", ds=PLAN.datasets),
        segmentations=expand("results/{ds}/segmentation.h5", ds=PLAN.datasets),
        volume_scores=expand("results/{ds}/scores.h5", ds=PLAN.datasets),
    output:
        fig9=report(
            "results/figures/fig9_slices.png",
            caption="../report/fig9.rst",
            category="Segmentation",
        ),
    params:
        datasets=PLAN.datasets,
    log:
        "logs/figure_slices.log",
    benchmark:
        "results/benchmarks/figure_slices.tsv"
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/figure_slices.py"
