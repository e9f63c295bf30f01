# The random-forest baseline (scale-space features + random forest, as ilastik): trained on
# the CNN's train samples, scored on the same regions and volumes with the CNN's own rules.

# Off with forest.enabled: false, and with `pretrained` (nothing is trained).
if PLAN.forest.enabled:

    rule train_forest:
        input:
            regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
            train="results/samples/train.csv",
        output:
            "results/forest/forest.joblib",
        params:
            forest=config["forest"],
            n_z=PLAN.forest.n_z,
        threads: PLAN.resources.threads
        log:
            "logs/train_forest.log",
        benchmark:
            "results/benchmarks/train_forest.tsv"
        conda:
            "../../envs/fibseg.yaml"
        script:
            "../../scripts/train_forest.py"

    use rule predict_regions as predict_forest_regions with:
        input:
            models=["results/forest/forest.joblib"],
            regions="results/{ds}/regions.h5",
            split="results/split.csv",
        output:
            "results/forest/{ds}/region_scores.h5",
        log:
            "logs/predict_forest_regions/{ds}.log",
        benchmark:
            "results/benchmarks/predict_forest_regions/{ds}.tsv"
        conda:
            "../../envs/fibseg.yaml"

    localrules:
        optimize_forest_postprocess,

    use rule optimize_postprocess as optimize_forest_postprocess with:
        input:
            scores=expand("results/forest/{ds}/region_scores.h5", ds=PLAN.region_datasets),
            regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
            split="results/split.csv",
        output:
            params="results/forest/postprocess.json",
            trials="results/forest/postprocess_trials.csv",
        log:
            "logs/optimize_forest_postprocess.log",

    use rule predict_slices as predict_forest_slices with:
        input:
            models=["results/forest/forest.joblib"],
            volume="results/{ds}/preprocessed.h5",
        output:
            score_chunk("results/forest/{ds}/scores/{chunk}.h5"),
        resources:
            mem_mb=memory(PLAN.forest_mem_mb),
        log:
            "logs/predict_forest_slices/{ds}_{chunk}.log",
        benchmark:
            "results/benchmarks/predict_forest_slices/{ds}_{chunk}.tsv"
        conda:
            "../../envs/fibseg.yaml"

    use rule stitch as stitch_forest with:
        input:
            forest_score_chunks,
        output:
            "results/forest/{ds}/scores.h5",
        params:
            dtype=config["inference"]["score_dtype"],
            voxel_size_nm=voxel_size_param,
            slices=lambda wildcards: PLAN.stitched_slices(wildcards.ds, forest=True),
        log:
            "logs/stitch_forest/{ds}.log",
        benchmark:
            "results/benchmarks/stitch_forest/{ds}.tsv"

    use rule postprocess as postprocess_forest with:
        input:
            scores="results/forest/{ds}/scores.h5",
            postprocess="results/forest/postprocess.json",
        output:
            h5="results/forest/{ds}/segmentation.h5",
            tif="results/forest/{ds}/segmentation.tif",
        log:
            "logs/postprocess_forest/{ds}.log",
        benchmark:
            "results/benchmarks/postprocess_forest/{ds}.tsv"
