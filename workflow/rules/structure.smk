# Pore-structure analysis of every segmentation, and of its ground truth where there is one
# (fibseg/structure/; docs/methods.md, "Pore structure").


rule analyze_structure:
    input:
        segmentation="results/{ds}/segmentation.h5",
        truth=structure_truth,
    output:
        json="results/{ds}/structure.json",
        maps="results/{ds}/structure_maps.h5",
    params:
        truth=lookup(dpath="{ds}/truth", within=PLAN.rows),
        voxel_size_nm=voxel_size_param,
        structure=config["structure"],
    resources:
        mem_mb=memory(PLAN.structure_mem_mb),
    log:
        "logs/analyze_structure/{ds}.log",
    benchmark:
        "results/benchmarks/analyze_structure/{ds}.tsv"
    wildcard_constraints:
        ds=constraint(PLAN.datasets),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/analyze_structure.py"


rule structure_table:
    input:
        analyses=expand("results/{ds}/structure.json", ds=PLAN.datasets),
        maps=expand("results/{ds}/structure_maps.h5", ds=PLAN.datasets),
    output:
        table=report(
            "results/tables/structure.csv", caption="../report/structure.rst", category="Structure"
        ),
        figure=report(
            "results/figures/structure.png",
            caption="../report/structure_figure.rst",
            category="Structure",
        ),
    params:
        datasets=PLAN.datasets,
    log:
        "logs/structure_table.log",
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/structure_table.py"
