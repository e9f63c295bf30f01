"""Workflow glue for the Snakemake rules: the data set sheet (sheet), input and config
checks (checks), and the DAG's chunks and memory requests (dag); for the `fibseg` command, a
project's config and checks (project) and one volume segmented with a bundle (predict)."""
