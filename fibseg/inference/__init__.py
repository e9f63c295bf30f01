"""Inference: scores of slices and regions (infer) by the sliding window (sliding) or the
dense engine (dense_engine), the ensemble of the best runs (ensemble), pretrained models
(pretrained) and model bundles (bundle)."""
