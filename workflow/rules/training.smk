# The training grid (§3.4-3.7): one job per (n_xy, n_z, seed), then model selection.


rule train:
    input:
        regions=expand("results/{ds}/regions.h5", ds=REGION_DATASETS),
        train="results/samples/train.csv",
        val="results/samples/val.csv",
        split="results/split.csv",
        volumes=UNLABELLED_VOLUMES,
    output:
        model="results/train/nxy{nxy}_nz{nz}/seed{seed}/model.keras",
        history="results/train/nxy{nxy}_nz{nz}/seed{seed}/history.csv",
        params="results/train/nxy{nxy}_nz{nz}/seed{seed}/params.json",
    params:
        training=TRAINING,
        padding=config["model"]["padding"],
    threads: THREADS
    log:
        "logs/train/nxy{nxy}_nz{nz}_seed{seed}.log",
    benchmark:
        "results/benchmarks/train/nxy{nxy}_nz{nz}_seed{seed}.tsv"
    wildcard_constraints:
        nxy=r"\d+",
        nz=r"\d+",
        seed=r"\d+",
    conda:
        "../../envs/fibseg-gpu.yaml"
    script:
        "../../scripts/train.py"


rule select_model:
    input:
        histories=expand(
            "results/train/nxy{cell[0]}_nz{cell[1]}/seed{seed}/history.csv",
            cell=GRID_CELLS,
            seed=SEEDS,
        ),
        run_params=expand(
            "results/train/nxy{cell[0]}_nz{cell[1]}/seed{seed}/params.json",
            cell=GRID_CELLS,
            seed=SEEDS,
        ),
    output:
        cells=report("results/selection/cells.csv", caption="../report/cells.rst", category="Model selection"),
        best="results/selection/best.json",
        model="results/model/best.keras",
        members=ENSEMBLE_MEMBERS,
        fig3=report("results/figures/fig3_val_loss.png", caption="../report/fig3.rst", category="Model selection"),
        fig4=report("results/figures/fig4_val_miou.png", caption="../report/fig4.rst", category="Model selection"),
        fig5=report("results/figures/fig5_train_time.png", caption="../report/fig5.rst", category="Model selection"),
        fig6=report("results/figures/fig6_learning_curves.png", caption="../report/fig6.rst", category="Model selection"),
    params:
        run_dirs=RUN_DIRS,
    log:
        "logs/select_model.log",
    conda:
        "../../envs/fibseg.yaml"
    script:
        "../../scripts/select_model.py"
