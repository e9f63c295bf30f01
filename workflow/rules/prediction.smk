# Segmentation of the volumes (§3.8): score the regions and the slices, stitch, post-process.


rule predict_regions:
    input:
        models=PLAN.cnn_models,
        checked=PLAN.model_checked,
        regions="results/{ds}/regions.h5",
        split="results/split.csv",
    output:
        "results/{ds}/region_scores.h5",
    params:
        inference=asdict(PLAN.inference),
        margin=PLAN.margins["smooth"],
    threads: PLAN.resources.threads
    log:
        "logs/predict_regions/{ds}.log",
    benchmark:
        "results/benchmarks/predict_regions/{ds}.tsv"
    conda:
        "../../envs/fibseg-gpu.yaml"
    script:
        "../../scripts/predict_regions.py"


# With pretrained.postprocess the chosen sigma and T come from an earlier run instead.
if PLAN.optimizes_postprocess:

    rule optimize_postprocess:
        input:
            scores=expand("results/{ds}/region_scores.h5", ds=PLAN.region_datasets),
            regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
            split="results/split.csv",
        output:
            params="results/postprocess.json",
            trials="results/postprocess_trials.csv",
        params:
            postprocess=config["postprocess"],
        log:
            "logs/optimize_postprocess.log",
        conda:
            "../../envs/fibseg.yaml"
        script:
            "../../scripts/optimize_postprocess.py"


rule predict_slices:
    input:
        models=PLAN.cnn_models,
        checked=PLAN.model_checked,
        volume="results/{ds}/preprocessed.h5",
    output:
        score_chunk("results/{ds}/scores/{chunk}.h5"),
    params:
        inference=asdict(PLAN.inference),
        slices=slices_of_chunk,
    threads: PLAN.resources.threads
    resources:
        mem_mb=memory(PLAN.predict_mem_mb),
    log:
        "logs/predict_slices/{ds}_{chunk}.log",
    benchmark:
        "results/benchmarks/predict_slices/{ds}_{chunk}.tsv"
    wildcard_constraints:
        ds=constraint(PLAN.datasets),
        chunk=r"\d{4}",
    conda:
        "../../envs/fibseg-gpu.yaml"
    script:
        "../../scripts/predict_slices.py"


rule stitch:
    input:
        score_chunks,
    output:
        "results/{ds}/scores.h5",
    params:
        dtype=config["inference"]["score_dtype"],
        voxel_size_nm=voxel_size_param,
        slices=lambda wildcards: PLAN.stitched_slices(wildcards.ds),
    log:
        "logs/stitch/{ds}.log",
    benchmark:
        "results/benchmarks/stitch/{ds}.tsv"
    wildcard_constraints:
        ds=constraint(PLAN.datasets),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/stitch.py"


rule postprocess:
    input:
        scores="results/{ds}/scores.h5",
        postprocess=PLAN.postprocess_json,
    output:
        h5="results/{ds}/segmentation.h5",
        tif="results/{ds}/segmentation.tif",
    params:
        voxel_size_nm=voxel_size_param,
        slab_depth=PLAN.slab_depth,
    resources:
        mem_mb=memory(PLAN.postprocess_mem_mb),
    log:
        "logs/postprocess/{ds}.log",
    benchmark:
        "results/benchmarks/postprocess/{ds}.tsv"
    wildcard_constraints:
        ds=constraint(PLAN.datasets),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/postprocess.py"


rule export_ome_zarr:
    input:
        preprocessed="results/{ds}/preprocessed.h5",
        scores="results/{ds}/scores.h5",
        segmentation="results/{ds}/segmentation.h5",
    output:
        directory("results/{ds}/{ds}.ome.zarr"),
    params:
        voxel_size_nm=voxel_size_param,
    threads: PLAN.resources.export_threads
    resources:
        mem_mb=memory(PLAN.export_mem_mb),
    log:
        "logs/export_ome_zarr/{ds}.log",
    benchmark:
        "results/benchmarks/export_ome_zarr/{ds}.tsv"
    wildcard_constraints:
        ds=constraint(PLAN.datasets),
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/export_ome_zarr.py"


rule check_model:
    input:
        PLAN.cnn_models,
    output:
        "results/pretrained/checked.json",
    params:
        inference=asdict(PLAN.inference),
    log:
        "logs/check_model.log",
    conda:
        "../../envs/fibseg-gpu.yaml"
    script:
        "../../scripts/check_model.py"
