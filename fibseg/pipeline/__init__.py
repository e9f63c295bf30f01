"""Workflow glue for the Snakemake rules: the data set sheet (sheet), input and config
checks (checks), and the DAG's chunks and memory requests (dag)."""
