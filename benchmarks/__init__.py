"""Measurements of the product: throughput (inference, train_throughput, postprocess,
structure), cost (grid_cost, halving_evidence), alignment error (alignment_error) and the
simulator's calibration (calibrate_demo). Each runs as `python benchmarks/<name>.py`; the
tests import them as a package. Studies of the method live in studies/."""
