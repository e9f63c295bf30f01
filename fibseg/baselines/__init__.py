"""The baselines the CNN is compared with: the random forest on scale-space features
(forest)."""
