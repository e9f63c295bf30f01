# The training grid (§3.4-3.7): one job per (n_xy, n_z, seed), then model selection. With
# successive halving (grid.search), `train` is rung 0 and each later rung resumes the runs
# that `promote` kept (fibseg/training/halving.py).

# With `pretrained` nothing is trained or selected: no rule here is defined, so that no
# file of an earlier run that the config names can be rebuilt.
if PLAN.trains:

    localrules:
        promote,
        select_model,
        describe_model,

    rule train:
        input:
            regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
            train="results/samples/train.csv",
            val="results/samples/val.csv",
            split="results/split.csv",
            volumes=PLAN.unlabelled_volumes,
            teachers=PLAN.unlabelled_teachers,
            init=PLAN.init_models,
        output:
            **PLAN.run_outputs("results/train/nxy{nxy}_nz{nz}/seed{seed}", PLAN.grid.rungs.halving),
        params:
            training=asdict(PLAN.rung_training[0]),
            padding=PLAN.padding,
            architecture=PLAN.architecture.name,
        threads: PLAN.resources.threads
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

    rule promote:
        input:
            previous_rung_files,
        output:
            "results/train/nxy{nxy}_nz{nz}/rung{rung}/promoted.json",
        params:
            runs=previous_rung_runs,
            slots=lambda wildcards: PLAN.grid.rungs.slots[int(wildcards.rung)],
        log:
            "logs/promote/nxy{nxy}_nz{nz}_rung{rung}.log",
        wildcard_constraints:
            nxy=r"\d+",
            nz=r"\d+",
            rung=r"[1-9]\d*",
        conda:
            "../../envs/fibseg.yaml"
        script:
            "../../scripts/promote.py"

    rule train_rung:
        input:
            promoted="results/train/nxy{nxy}_nz{nz}/rung{rung}/promoted.json",
            previous=previous_rung_files,
            regions=expand("results/{ds}/regions.h5", ds=PLAN.region_datasets),
            train="results/samples/train.csv",
            val="results/samples/val.csv",
            split="results/split.csv",
            volumes=PLAN.unlabelled_volumes,
            teachers=PLAN.unlabelled_teachers,
            init=PLAN.init_models,
        output:
            **PLAN.run_outputs("results/train/nxy{nxy}_nz{nz}/rung{rung}/slot{slot}", True),
        params:
            training=lambda wildcards: asdict(PLAN.rung_training[int(wildcards.rung)]),
            padding=PLAN.padding,
            architecture=PLAN.architecture.name,
        threads: PLAN.resources.threads
        log:
            "logs/train/nxy{nxy}_nz{nz}_rung{rung}_slot{slot}.log",
        benchmark:
            "results/benchmarks/train/nxy{nxy}_nz{nz}_rung{rung}_slot{slot}.tsv"
        wildcard_constraints:
            nxy=r"\d+",
            nz=r"\d+",
            rung=r"[1-9]\d*",
            slot=r"\d+",
        conda:
            "../../envs/fibseg-gpu.yaml"
        script:
            "../../scripts/train.py"

    rule select_model:
        input:
            histories=expand("{run}/history.csv", run=PLAN.grid.run_dirs),
            run_params=expand("{run}/params.json", run=PLAN.grid.run_dirs),
        output:
            cells=report(
                "results/selection/cells.csv",
                caption="../report/cells.rst",
                category="Model selection",
            ),
            best="results/selection/best.json",
            model="results/model/best.keras",
            members=PLAN.ensemble_members,
            fig3=report(
                "results/figures/fig3_val_loss.png",
                caption="../report/fig3.rst",
                category="Model selection",
            ),
            fig4=report(
                "results/figures/fig4_val_miou.png",
                caption="../report/fig4.rst",
                category="Model selection",
            ),
            fig5=report(
                "results/figures/fig5_train_time.png",
                caption="../report/fig5.rst",
                category="Model selection",
            ),
            fig6=report(
                "results/figures/fig6_learning_curves.png",
                caption="../report/fig6.rst",
                category="Model selection",
            ),
        params:
            run_dirs=PLAN.grid.run_dirs,
            rung_epochs=PLAN.grid.rungs.rung_epochs,
        log:
            "logs/select_model.log",
        conda:
            "../../envs/fibseg.yaml"
        script:
            "../../scripts/select_model.py"

    # What `fibseg export-model` puts into a bundle beside the model files.
    rule describe_model:
        input:
            models=PLAN.cnn_models,
            best="results/selection/best.json",
            postprocess="results/postprocess.json",
            volumes=[path for files in PLAN.training_volumes.values() for path in files],
        output:
            "results/model/fibseg-model.json",
        params:
            voxel_sizes=training_voxel_sizes,
            volumes=PLAN.training_volumes,
            inference=asdict(PLAN.inference),
            align=asdict(PLAN.align),
        log:
            "logs/describe_model.log",
        conda:
            "../../envs/fibseg.yaml"
        script:
            "../../scripts/describe_model.py"
