"""Evaluation: metrics, scores of the test regions and volumes (evaluate), the
post-processing of scores into a segmentation (postprocess), and figures."""
